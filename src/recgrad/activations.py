"""Activation functions and their derivatives, side by side.

Every function takes an array of any shape and returns an array of the same shape and dtype:
float32 stays float32, float64 stays float64, integers are promoted to float64 (PyTorch would
promote to its default float, float32). NaN propagates. Each `*_grad(x)` is the elementwise
derivative f'(x) evaluated at x. Formulas and derivations: docs/formulas.md.
"""

import numpy as np

from recgrad._arrays import as_float_array


def sigmoid(x):
    """sigmoid(x) = 1 / (1 + exp(-x)), computed without overflow.

    For x >= 0 use 1 / (1 + exp(-x)); for x < 0 the equal form exp(x) / (1 + exp(x)). Either way
    exp only sees a non-positive argument, so it never overflows; sigmoid(+-inf) = 1, 0.
    Reference: torch.sigmoid.
    """
    x = as_float_array(x)
    z = np.exp(-np.abs(x))  # in (0, 1]; NaN stays NaN
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z)).astype(x.dtype, copy=False)


def softplus(x):
    """softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), stable for every input.

    It is -log sigmoid(-x), the building block of BPR and of the logistic loss. Its derivative
    is sigmoid(x). Reference: torch.nn.functional.softplus with beta=1 and no threshold.
    """
    x = as_float_array(x)
    with np.errstate(invalid="ignore"):  # inf - inf inside |x| for x = -inf is harmless: max picks 0
        return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype, copy=False)


def log_sigmoid(x):
    """log sigmoid(x) = -softplus(-x), stable for every input (torch.nn.functional.logsigmoid)."""
    return -softplus(-as_float_array(x))


def softmax(x, axis=-1):
    """softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m) with m = max_j x_j along `axis`.

    Subtracting the row maximum changes nothing mathematically and keeps every exp <= 1.
    A row with -inf entries (masked logits) gives 0 there; a row of all -inf gives NaN, as
    torch.softmax does. Reference: torch.softmax.
    """
    x = as_float_array(x)
    shifted = _shift_by_max(x, axis)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """log_softmax(x)_i = x_i - m - log sum_j exp(x_j - m), the max-shifted log-sum-exp.

    Never takes log of a softmax value, so tiny probabilities keep their precision.
    Reference: torch.log_softmax.
    """
    x = as_float_array(x)
    shifted = _shift_by_max(x, axis)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def logsumexp(x, axis=-1, keepdims=False):
    """log sum_j exp(x_j) = m + log sum_j exp(x_j - m), m the maximum along `axis`; its gradient is softmax(x)."""
    x = as_float_array(x)
    m = np.max(x, axis=axis, keepdims=True)
    finite_m = np.where(np.isfinite(m), m, 0.0).astype(x.dtype, copy=False)
    with np.errstate(divide="ignore"):  # an all -inf row sums to 0: log 0 = -inf, as torch.logsumexp
        out = finite_m + np.log(np.sum(np.exp(x - finite_m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def _shift_by_max(x, axis):
    """x - max(x) along axis; an all -inf row becomes NaN (inf - inf), as PyTorch's softmax gives."""
    with np.errstate(invalid="ignore"):
        return x - np.max(x, axis=axis, keepdims=True)
