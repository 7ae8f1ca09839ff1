"""The affine layer y = x W^T + b, forward and backward side by side (torch.nn.Linear)."""

import math
import operator

import numpy as np
from numpy.typing import ArrayLike

from recgrad import init
from recgrad._arrays import as_float_array
from recgrad.nn.module import Module, Parameter


class Linear(Module):
    """y = x W^T + b, with W of shape (out_features, in_features) and b of shape (out_features,).

    Shapes: x (*, in_features) -> y (*, out_features), where * is any number of leading
    dimensions (none included).

    Gradients, for an upstream gradient G = dL/dy of shape (*, out_features). Since
    y[n, o] = sum_i x[n, i] W[o, i] + b[o], with n running over every leading index:

        dL/dx[n, i] = sum_o G[n, o] W[o, i]       ->  dx = G W           (*, in_features)
        dL/dW[o, i] = sum_n G[n, o] x[n, i]       ->  dW = G^T x         summed over all leading dims
        dL/db[o]    = sum_n G[n, o]               ->  db = sum_n G       summed over all leading dims

    `backward` returns dx and accumulates dW, db into `weight.grad`, `bias.grad`.

    Initialisation is PyTorch's `reset_parameters`: kaiming_uniform_(W, a=sqrt(5)), whose gain
    sqrt(2 / (1 + 5)) = 1/sqrt(3) gives the bound sqrt(1/3) * sqrt(3 / fan_in) = 1/sqrt(in_features),
    and b ~ U[-1/sqrt(in_features), 1/sqrt(in_features)]. The weight is drawn first, then the bias,
    from the same Generator.

    Args:
        in_features, out_features: positive ints.
        bias: whether to add the learnable bias (`self.bias` is None otherwise).
        rng: numpy.random.Generator, int seed or None (see recgrad.init.as_generator).
        dtype: float32 or float64, the dtype of the parameters; inputs must have the same
            floating dtype (integer input is promoted to float64 first).

    Reference: torch.nn.Linear, https://pytorch.org/docs/stable/generated/torch.nn.Linear.html
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None, dtype=np.float64):
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"Linear: dtype must be float32 or float64, got {dtype}")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=dtype))
        self.bias = Parameter(np.empty(self.out_features, dtype=dtype)) if bias else None
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None):
        """Re-draw W ~ kaiming_uniform_(a=sqrt(5)) and b ~ U[-1/sqrt(in), 1/sqrt(in)], as PyTorch."""
        rng = init.as_generator(rng)
        init.kaiming_uniform_(self.weight.data, a=math.sqrt(5.0), rng=rng)
        if self.bias is not None:
            fan_in, _ = init.calculate_fan_in_and_fan_out(self.weight.data)
            bound = 1.0 / math.sqrt(fan_in)
            init.uniform_(self.bias.data, -bound, bound, rng=rng)

    def forward(self, x: ArrayLike) -> np.ndarray:
        """y = x W^T + b; x (*, in_features) -> y (*, out_features). Caches x for the weight gradient."""
        x = as_float_array(x, "x")
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear: x has shape {x.shape} but the weight has shape {self.weight.shape}; "
                f"x's last dimension must be in_features={self.in_features}"
            )
        if x.dtype != self.weight.data.dtype:
            raise TypeError(
                f"Linear: x has dtype {x.dtype} but the parameters are {self.weight.data.dtype}; "
                f"cast x or build the layer with dtype={x.dtype}"
            )
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        self.cache = x
        return y

    def backward(self, grad_output: ArrayLike) -> np.ndarray:
        """dx = G W; accumulates dW = G^T x and db = sum G over all leading dimensions.

        G (*, out_features) is taken in the dtype of the cached input, so dx has x's dtype.
        """
        if self.cache is None:
            raise RuntimeError("Linear: backward called before forward")
        x = self.cache
        grad_output = as_float_array(grad_output, "grad_output").astype(x.dtype, copy=False)
        expected = x.shape[:-1] + (self.out_features,)
        if grad_output.shape != expected:
            raise ValueError(f"Linear: grad_output has shape {grad_output.shape}, expected {expected}")
        g2 = grad_output.reshape(-1, self.out_features)
        self.weight.accumulate_grad(g2.T @ x.reshape(-1, self.in_features))
        if self.bias is not None:
            self.bias.accumulate_grad(g2.sum(axis=0))
        return grad_output @ self.weight.data

    def __repr__(self):
        return f"Linear(in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None})"


def _positive_int(value, name):
    """An int >= 1 (bools rejected), or TypeError/ValueError naming the argument."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Linear: {name} must be an int, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"Linear: {name} must be an int, got {type(value).__name__}") from None
    if value < 1:
        raise ValueError(f"Linear: {name} must be a positive int, got {value}")
    return value
