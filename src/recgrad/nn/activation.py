"""Activation layers: each forward caches exactly what its derivative needs, backward is one line.

What is cached follows the cheapest exact derivative (the cs231n / PyTorch choice):
the output y for Sigmoid (y (1 - y)), Tanh (1 - y^2), Softmax and LogSoftmax (their
vector-Jacobian products need only y); the input x for ReLU, GELU and Swish/SiLU (their
derivatives are not functions of y alone). No layer has parameters. backward(grad_output)
returns dL/dx, of the input's shape; calling it before forward raises RuntimeError.
Formulas and derivations: recgrad.activations and docs/formulas.md. The arithmetic runs in the
fused, multi-threaded kernels of recgrad.kernels.activations (one pass forward, one backward),
which evaluate the same expressions as the NumPy reference functions; see docs/kernels.md.
"""

import operator

from recgrad._arrays import as_float_array, check_same_shape
from recgrad.activations import _check_approximate
from recgrad.kernels.activations import backward, forward
from recgrad.nn.module import Module


class _Activation(Module):
    """Shared plumbing: fetch the cached array and check grad_output against it."""

    def _cached_and_grad(self, grad_output):
        if self.cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward: nothing is cached")
        grad_output = as_float_array(grad_output, "grad_output")
        check_same_shape(grad_output, self.cache, "grad_output", "the forward array")
        return self.cache, grad_output


class Sigmoid(_Activation):
    """y = sigmoid(x); caches y; dL/dx = g * y * (1 - y). Shape: any. Reference: torch.nn.Sigmoid."""

    def forward(self, x):
        self.cache = forward("sigmoid", x)
        return self.cache

    def backward(self, grad_output):
        y, g = self._cached_and_grad(grad_output)
        return backward("sigmoid", g, y)


class Tanh(_Activation):
    """y = tanh(x); caches y; dL/dx = g * (1 - y^2). Shape: any. Reference: torch.nn.Tanh."""

    def forward(self, x):
        self.cache = forward("tanh", x)
        return self.cache

    def backward(self, grad_output):
        y, g = self._cached_and_grad(grad_output)
        return backward("tanh", g, y)


class ReLU(_Activation):
    """y = max(x, 0); caches x; dL/dx = g * [x > 0] (0 at x == 0, as PyTorch). Reference: torch.nn.ReLU."""

    def forward(self, x):
        self.cache = as_float_array(x)
        return forward("relu", self.cache)

    def backward(self, grad_output):
        x, g = self._cached_and_grad(grad_output)
        return backward("relu", g, x)


class GELU(_Activation):
    """y = gelu(x, approximate); caches x; dL/dx = g * gelu'(x).

    approximate="none" (default, exact x Phi(x) via erf) or "tanh" (the tanh approximation),
    as torch.nn.GELU; anything else raises ValueError at construction.
    """

    def __init__(self, approximate="none"):
        self.approximate = _check_approximate(approximate)

    def forward(self, x):
        self.cache = as_float_array(x)
        return forward("gelu", self.cache, approximate=self.approximate)

    def backward(self, grad_output):
        x, g = self._cached_and_grad(grad_output)
        return backward("gelu", g, x, approximate=self.approximate)


class Swish(_Activation):
    """y = x sigmoid(beta x); caches x; dL/dx = g * (s + beta x s (1 - s)), s = sigmoid(beta x).

    beta is stored as a Python float (float32 input stays float32). Swish(1.0) is SiLU.
    Reference: Ramachandran et al., 2017; torch.nn.SiLU for beta = 1.
    """

    def __init__(self, beta=1.0):
        self.beta = float(beta)

    def forward(self, x):
        self.cache = as_float_array(x)
        return forward("swish", self.cache, beta=self.beta)

    def backward(self, grad_output):
        x, g = self._cached_and_grad(grad_output)
        return backward("swish", g, x, beta=self.beta)


class SiLU(Swish):
    """y = x sigmoid(x), Swish with beta = 1. Reference: torch.nn.SiLU."""

    def __init__(self):
        super().__init__(beta=1.0)


class Softmax(_Activation):
    """y = softmax(x, axis); caches y; dL/dx = y * (g - sum(g * y, axis)), the vector-Jacobian product.

    The K x K Jacobian diag(y) - y y^T is never built. Shape: any; `axis` is an int
    (torch's `dim`). Reference: torch.nn.Softmax.
    """

    def __init__(self, axis=-1):
        self.axis = operator.index(axis)

    def forward(self, x):
        self.cache = forward("softmax", x, axis=self.axis)
        return self.cache

    def backward(self, grad_output):
        y, g = self._cached_and_grad(grad_output)
        return backward("softmax", g, y, axis=self.axis)


class LogSoftmax(_Activation):
    """y = log_softmax(x, axis); caches y; dL/dx = g - exp(y) * sum(g, axis).

    Shape: any; `axis` is an int (torch's `dim`). Reference: torch.nn.LogSoftmax.
    """

    def __init__(self, axis=-1):
        self.axis = operator.index(axis)

    def forward(self, x):
        self.cache = forward("log_softmax", x, axis=self.axis)
        return self.cache

    def backward(self, grad_output):
        y, g = self._cached_and_grad(grad_output)
        return backward("log_softmax", g, y, axis=self.axis)
