"""Activation layers: each forward caches exactly what its derivative needs, backward is one line.

What is cached follows the cheapest exact derivative (the cs231n / PyTorch choice):
the output y for Sigmoid (y (1 - y)), Tanh (1 - y^2), Softmax and LogSoftmax (their
vector-Jacobian products need only y); the input x for ReLU, GELU and Swish/SiLU (their
derivatives are not functions of y alone). No layer has parameters. backward(grad_output)
returns dL/dx, of the input's shape; calling it before forward raises RuntimeError.
Formulas and derivations: recgrad.activations and docs/formulas.md.

Two computations of the same layer, chosen by `engine` (keyword, default None; see recgrad.engine):
by default the compiled, multi-threaded kernels of recgrad.kernels.activations (one pass forward,
one backward), which evaluate the reference's expressions with vectorised transcendental functions
(agreement: docs/kernels.md); engine="numpy", or the process-wide switch
`recgrad.engine.set_default_engine("numpy")`, runs the NumPy reference written below in each
layer's `reference_forward` / `reference_backward` (recgrad.activations). The kernels cover every
input the layers accept, so engine="compiled" never falls back. The engine is read at each call.
"""

import operator

import numpy as np
from numpy.typing import ArrayLike

import recgrad.activations as reference
from recgrad._arrays import as_float_array, check_same_shape
from recgrad.activations import _check_approximate
from recgrad.engine import Engine, check_engine, use_compiled
from recgrad.kernels import activations as kernels
from recgrad.nn.module import Module


class _Activation(Module):
    """Shared plumbing: the engine choice, the cache, and the check of grad_output against it.

    A subclass names its kernel (`kernel`, a name of recgrad.kernels.activations), the kernel's
    parameters (`kernel_params`) and the NumPy reference pair (`reference_forward(x)` and
    `reference_backward(grad_output, cached)`, cached being what CACHED[kernel] says).
    """

    kernel = None

    def __init__(self, *, engine: Engine = None):
        self.engine = check_engine(engine)

    def kernel_params(self) -> dict:
        return {}

    def compiled(self) -> bool:
        """Whether the next forward/backward runs the compiled kernels (they cover every input)."""
        return use_compiled(self.engine, True, type(self).__name__)

    def forward(self, x: ArrayLike) -> np.ndarray:
        x = as_float_array(x)
        if self.compiled():
            y = kernels.forward(self.kernel, x, **self.kernel_params())
        else:
            y = self.reference_forward(x)
        self.cache = y if kernels.CACHED[self.kernel] == "output" else x
        return y

    def backward(self, grad_output: ArrayLike) -> np.ndarray:
        if self.cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward: nothing is cached")
        grad_output = as_float_array(grad_output, "grad_output")
        check_same_shape(grad_output, self.cache, "grad_output", "the forward array")
        if self.compiled():
            return kernels.backward(self.kernel, grad_output, self.cache, **self.kernel_params())
        return self.reference_backward(grad_output, self.cache)


class Sigmoid(_Activation):
    """y = sigmoid(x); caches y; dL/dx = g * y * (1 - y). Shape: any. Reference: torch.nn.Sigmoid."""

    kernel = "sigmoid"

    def reference_forward(self, x):
        return reference.sigmoid(x)

    def reference_backward(self, g, y):
        return g * y * (1.0 - y)


class Tanh(_Activation):
    """y = tanh(x); caches y; dL/dx = g * (1 - y^2). Shape: any. Reference: torch.nn.Tanh."""

    kernel = "tanh"

    def reference_forward(self, x):
        return reference.tanh(x)

    def reference_backward(self, g, y):
        return g * (1.0 - y * y)


class ReLU(_Activation):
    """y = max(x, 0); caches x; dL/dx = g * [x > 0] (0 at x == 0, as PyTorch). Reference: torch.nn.ReLU."""

    kernel = "relu"

    def reference_forward(self, x):
        return reference.relu(x)

    def reference_backward(self, g, x):
        return g * reference.relu_grad(x)


class GELU(_Activation):
    """y = gelu(x, approximate); caches x; dL/dx = g * gelu'(x).

    approximate="none" (default, exact x Phi(x) via erf) or "tanh" (the tanh approximation),
    as torch.nn.GELU; anything else raises ValueError at construction.
    """

    kernel = "gelu"

    def __init__(self, approximate: str = "none", *, engine: Engine = None):
        super().__init__(engine=engine)
        self.approximate = _check_approximate(approximate)

    def kernel_params(self):
        return {"approximate": self.approximate}

    def reference_forward(self, x):
        return reference.gelu(x, self.approximate)

    def reference_backward(self, g, x):
        return g * reference.gelu_grad(x, self.approximate)


class Swish(_Activation):
    """y = x sigmoid(beta x); caches x; dL/dx = g * (s + beta x s (1 - s)), s = sigmoid(beta x).

    beta is stored as a Python float (float32 input stays float32). Swish(1.0) is SiLU.
    Reference: Ramachandran et al., 2017; torch.nn.SiLU for beta = 1.
    """

    kernel = "swish"

    def __init__(self, beta: float = 1.0, *, engine: Engine = None):
        super().__init__(engine=engine)
        self.beta = float(beta)

    def kernel_params(self):
        return {"beta": self.beta}

    def reference_forward(self, x):
        return reference.swish(x, self.beta)

    def reference_backward(self, g, x):
        return g * reference.swish_grad(x, self.beta)


class SiLU(Swish):
    """y = x sigmoid(x), Swish with beta = 1. Reference: torch.nn.SiLU."""

    def __init__(self, *, engine: Engine = None):
        super().__init__(beta=1.0, engine=engine)


class _AlongAxis(_Activation):
    """An activation over the entries along `axis` (an int, torch's `dim`), not entry by entry."""

    def __init__(self, axis: int = -1, *, engine: Engine = None):
        super().__init__(engine=engine)
        self.axis = operator.index(axis)

    def kernel_params(self):
        return {"axis": self.axis}


class Softmax(_AlongAxis):
    """y = softmax(x, axis); caches y; dL/dx = y * (g - sum(g * y, axis)), the vector-Jacobian product.

    The K x K Jacobian diag(y) - y y^T is never built. Shape: any; `axis` is an int
    (torch's `dim`). Reference: torch.nn.Softmax.
    """

    kernel = "softmax"

    def reference_forward(self, x):
        return reference.softmax(x, axis=self.axis)

    def reference_backward(self, g, y):
        return reference.softmax_backward(g, y, axis=self.axis)


class LogSoftmax(_AlongAxis):
    """y = log_softmax(x, axis); caches y; dL/dx = g - exp(y) * sum(g, axis).

    Shape: any; `axis` is an int (torch's `dim`). Reference: torch.nn.LogSoftmax.
    """

    kernel = "log_softmax"

    def reference_forward(self, x):
        return reference.log_softmax(x, axis=self.axis)

    def reference_backward(self, g, y):
        return reference.log_softmax_backward(g, y, axis=self.axis)
