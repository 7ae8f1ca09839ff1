"""Activation functions and their derivatives, side by side.

Every function takes an array of any shape and returns an array of the same shape and dtype:
float32 stays float32, float64 stays float64, integers and booleans are promoted to float64
(PyTorch would promote to its default float, float32). NaN propagates. Each `*_grad(x)` is the
elementwise derivative f'(x) evaluated at x. No function warns, overflows or returns NaN for a
finite input; at +-inf the functions return their limits. Formulas and derivations:
docs/formulas.md.
"""

import math

import numpy as np
from scipy.special import erfc

from recgrad._arrays import as_float_array, check_same_shape

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_CUBIC = 0.044715
# Beyond these bounds the exponentials below underflow to exactly 0 in float64 (e^-745 is the
# smallest subnormal), so clipping there changes no result and keeps x**2, x**3 and beta*x finite.
_GELU_TAIL = 100.0  # Phi(-100) < e^-5000; 2 sqrt(2/pi) (100 + 0.044715 * 100**3) > 7e4
_LOGISTIC_TAIL = 800.0  # sigmoid(-800) = e^-800


def sigmoid(x):
    """sigmoid(x) = 1 / (1 + exp(-x)), computed without overflow.

    For x >= 0 use 1 / (1 + exp(-x)); for x < 0 the equal form exp(x) / (1 + exp(x)). Either way
    exp only sees a non-positive argument, so it never overflows; sigmoid(+-inf) = 1, 0.
    Shape: any, returned unchanged. Reference: torch.sigmoid.
    """
    x = as_float_array(x)
    z = np.exp(-np.abs(x))  # in (0, 1]; NaN stays NaN
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z)).astype(x.dtype, copy=False)


def sigmoid_grad(x):
    """sigmoid'(x) = sigmoid(x) (1 - sigmoid(x)) = sigmoid(x) sigmoid(-x).

    Derivation: s = (1 + e^-x)^-1, so s' = e^-x (1 + e^-x)^-2 = s (e^-x / (1 + e^-x)) = s (1 - s),
    and 1 - s(x) = s(-x). The product s(x) s(-x) is used because 1 - s rounds to 0 once
    s(x) rounds to 1 (x > 37 in float64, x > 17 in float32), while s(-x) keeps every digit.
    PyTorch's autograd computes y (1 - y) from the rounded output (recgrad.nn.Sigmoid does too);
    the two agree to within one rounding of 1. Reference: torch.sigmoid backward.
    """
    x = as_float_array(x)
    return sigmoid(x) * sigmoid(-x)


def tanh(x):
    """tanh(x) = (e^x - e^-x) / (e^x + e^-x) (numpy's tanh: no overflow, tanh(+-inf) = +-1)."""
    return np.tanh(as_float_array(x))


def tanh_grad(x):
    """tanh'(x) = 1 - tanh(x)^2 = 4 sigmoid(2x) sigmoid(-2x).

    Derivation: tanh = sinh / cosh, so tanh' = (cosh^2 - sinh^2) / cosh^2 = 1 - tanh^2. With
    tanh(x) = 2 sigmoid(2x) - 1, 1 - tanh = 2 sigmoid(-2x) and 1 + tanh = 2 sigmoid(2x), whose
    product is used: it keeps full relative precision where 1 - tanh^2 cancels to 0. |x| is
    clipped at 400, where the product is already exactly 0, so 2x cannot overflow.
    PyTorch's autograd (and recgrad.nn.Tanh) computes 1 - y^2 from the output y.
    Reference: torch.tanh backward.
    """
    x = np.clip(as_float_array(x), -0.5 * _LOGISTIC_TAIL, 0.5 * _LOGISTIC_TAIL)
    return 4.0 * sigmoid(2.0 * x) * sigmoid(-2.0 * x)


def relu(x):
    """relu(x) = max(x, 0); NaN propagates. Reference: torch.relu."""
    x = as_float_array(x)
    return np.maximum(x, 0.0)


def relu_grad(x):
    """relu'(x) = 1 for x > 0, 0 for x <= 0 (0 at the kink x == 0, as PyTorch).

    NaN gives NaN (PyTorch's threshold backward would pass the gradient through). Reference:
    torch.relu backward (threshold_backward).
    """
    x = as_float_array(x)
    return np.where(np.isnan(x), x, x > 0).astype(x.dtype, copy=False)


def gelu(x, approximate="none"):
    """GELU: x Phi(x), Phi the standard normal CDF, or its tanh approximation.

    approximate="none" (the default, as torch): gelu(x) = x Phi(x) = x erfc(-x / sqrt 2) / 2.
        erfc(-x / sqrt 2) / 2 equals (1 + erf(x / sqrt 2)) / 2 but keeps its relative precision
        for x << 0, where 1 + erf cancels.
    approximate="tanh": gelu(x) = x (1 + tanh(z)) / 2 with z = sqrt(2/pi) (x + 0.044715 x^3),
        exactly torch.nn.functional.gelu(approximate="tanh"). It is evaluated as x sigmoid(2z)
        (since (1 + tanh z) / 2 = sigmoid(2z)) with x clipped to +-100 inside z, where
        sigmoid(2z) is already exactly 0 or 1: x^3 cannot overflow (float32 overflows at
        |x| > 7e12).
    gelu(-inf) = 0 (the limit; torch gives NaN). Shape: any.
    Reference: Hendrycks & Gimpel, "Gaussian Error Linear Units", 2016; torch.nn.GELU.
    """
    x = as_float_array(x)
    gate = _gelu_gate(x, _check_approximate(approximate))
    return np.maximum(x, -_GELU_TAIL) * gate  # gate is exactly 0 below -100: no -inf * 0


def gelu_grad(x, approximate="none"):
    """gelu'(x), elementwise, for either form.

    approximate="none": d/dx [x Phi(x)] = Phi(x) + x phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi).
        |x| is clipped at 100 inside x phi(x), where exp(-x^2/2) is already exactly 0.
    approximate="tanh": with g(x) = sigmoid(2z), z = sqrt(2/pi) (x + 0.044715 x^3),
        d/dx [x g] = g + x g' = g + x 2 g (1 - g) z',  z' = sqrt(2/pi) (1 + 3 * 0.044715 x^2),
        which is torch's 0.5 (1 + tanh z) + 0.5 x (1 - tanh^2 z) z' written with sigmoids
        (1 - tanh^2 z = 4 g (1 - g)); x is clipped at +-100 inside the second term (it is 0 there).
    gelu_grad(+-inf) = 1, 0 (the limits; torch gives NaN). Reference: torch.nn.GELU backward.
    """
    x = as_float_array(x)
    approximate = _check_approximate(approximate)
    xc = np.clip(x, -_GELU_TAIL, _GELU_TAIL)
    if approximate == "none":
        return _gelu_gate(x, "none") + xc * (_INV_SQRT_2PI * np.exp(-0.5 * xc * xc))
    two_z = _gelu_tanh_two_z(xc)
    g, one_minus_g = sigmoid(two_z), sigmoid(-two_z)
    dz = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_CUBIC * xc * xc)
    return g + xc * 2.0 * g * one_minus_g * dz


def _gelu_gate(x, approximate):
    """Phi(x) (exact) or sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)) (tanh form): gelu(x) / x."""
    if approximate == "none":
        return (0.5 * erfc(-_SQRT_HALF * x)).astype(x.dtype, copy=False)
    return sigmoid(_gelu_tanh_two_z(np.clip(x, -_GELU_TAIL, _GELU_TAIL)))


def _gelu_tanh_two_z(x):
    """2z = 2 sqrt(2/pi) (x + 0.044715 x^3), the tanh form's argument doubled (for sigmoid(2z))."""
    # x * x * x, not x**3: NumPy 2 computes a float power through pow(), hundreds of times slower.
    return 2.0 * _SQRT_2_OVER_PI * (x + _GELU_TANH_CUBIC * x * x * x)


def _check_approximate(approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return approximate


def swish(x, beta=1.0):
    """swish(x) = x sigmoid(beta x); beta = 1 is SiLU.

    Stable for every finite x because sigmoid is (swish(-1e4) = -0.0). beta x is allowed to
    overflow to +-inf, where sigmoid gives its exact limit. swish(-inf) = 0 (the limit; torch's
    silu gives NaN). beta is a Python float so float32 stays float32. Shape: any.
    Reference: Ramachandran, Zoph & Le, "Searching for Activation Functions", 2017.
    """
    x = as_float_array(x)
    s = sigmoid(_scaled(x, beta))
    out = np.zeros_like(s)
    return np.multiply(x, s, out=out, where=s != 0)  # s == 0 exactly: the product is 0, even at x = -inf


def swish_grad(x, beta=1.0):
    """swish'(x) = s + beta x s (1 - s), s = sigmoid(beta x).

    Derivation: product rule, d/dx [x s(beta x)] = s + x beta s'(beta x) and s' = s (1 - s).
    Written s + (beta x) s(beta x) s(-beta x), with beta x clipped at +-800 in the second term
    (where s(-800) is exactly 0), so huge x never meets 0 * inf. swish_grad(+-inf) = 1, 0 for
    beta > 0.
    """
    x = as_float_array(x)
    bx = np.clip(_scaled(x, beta), -_LOGISTIC_TAIL, _LOGISTIC_TAIL)
    s = sigmoid(bx)
    return s + bx * s * sigmoid(-bx)


def _scaled(x, beta):
    """beta * x in x's dtype; overflow to +-inf is intended (sigmoid(+-inf) is exact)."""
    with np.errstate(over="ignore"):
        return float(beta) * x


def silu(x):
    """silu(x) = x sigmoid(x) = swish(x, beta=1). Reference: torch.nn.functional.silu."""
    return swish(x, 1.0)


def silu_grad(x):
    """silu'(x) = s (1 + x (1 - s)), s = sigmoid(x) = swish_grad(x, beta=1)."""
    return swish_grad(x, 1.0)


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
    torch.softmax does. Shape: any, returned unchanged. Its derivative is the Jacobian
    `softmax_jacobian`; backpropagation uses the product `softmax_backward`.
    Reference: torch.softmax.
    """
    x = as_float_array(x)
    shifted = _shift_by_max(x, axis)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def softmax_jacobian(x, axis=-1):
    """The full Jacobian of softmax along `axis`: J[..., i, j] = ds_i/dx_j = s_i (delta_ij - s_j).

    Derivation: s_i = e^x_i / Z with Z = sum_k e^x_k, so ds_i/dx_j = delta_ij e^x_i / Z
    - e^x_i e^x_j / Z^2 = s_i delta_ij - s_i s_j, i.e. J = diag(s) - s s^T. The diagonal is
    s_i (1 - s_i), but the off-diagonal terms -s_i s_j are not zero: every output depends on
    every input of its row.
    Shapes: x (..., K at `axis`, ...) -> `axis` is moved last and J has shape (*other_dims, K, K).
    It is symmetric, and its rows sum to 0. For backpropagation use `softmax_backward`, which
    computes J^T g in O(K) instead of building the O(K^2) matrix.
    """
    s = np.moveaxis(softmax(x, axis=axis), axis, -1)
    jacobian = -s[..., :, None] * s[..., None, :]
    diagonal = np.arange(s.shape[-1])
    jacobian[..., diagonal, diagonal] += s
    return jacobian


def softmax_backward(grad_output, softmax_output, axis=-1):
    """The vector-Jacobian product of softmax: grad_x = J^T g = s * (g - sum_j g_j s_j).

    Derivation: (J^T g)_j = sum_i g_i s_i (delta_ij - s_j) = s_j g_j - s_j sum_i g_i s_i.
    Args: grad_output g = dL/ds and softmax_output s = softmax(x, axis), both of the same shape
    (any); `axis` as in the forward. Returns dL/dx, same shape. Reference: torch's
    _softmax_backward_data.
    """
    g = as_float_array(grad_output, "grad_output")
    s = as_float_array(softmax_output, "softmax_output")
    check_same_shape(g, s, "grad_output", "softmax_output")
    return s * (g - np.sum(g * s, axis=axis, keepdims=True))


def log_softmax(x, axis=-1):
    """log_softmax(x)_i = x_i - m - log sum_j exp(x_j - m), the max-shifted log-sum-exp.

    Never takes log of a softmax value, so tiny probabilities keep their precision. -inf
    entries stay -inf; an all -inf row gives NaN, as torch does. Reference: torch.log_softmax.
    """
    x = as_float_array(x)
    shifted = _shift_by_max(x, axis)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def log_softmax_backward(grad_output, log_softmax_output, axis=-1):
    """The vector-Jacobian product of log_softmax: grad_x = g - exp(y) * sum_j g_j.

    Derivation: y_i = x_i - logsumexp(x), so dy_i/dx_j = delta_ij - s_j with s = exp(y), and
    (J^T g)_j = g_j - s_j sum_i g_i. Args: grad_output g = dL/dy and log_softmax_output
    y = log_softmax(x, axis), same shape (any). Returns dL/dx. Reference: torch's
    _log_softmax_backward_data.
    """
    g = as_float_array(grad_output, "grad_output")
    y = as_float_array(log_softmax_output, "log_softmax_output")
    check_same_shape(g, y, "grad_output", "log_softmax_output")
    return g - np.exp(y) * np.sum(g, axis=axis, keepdims=True)


def logsumexp(x, axis=-1, keepdims=False):
    """log sum_j exp(x_j) = m + log sum_j exp(x_j - m), m the maximum along `axis`; its gradient is softmax(x)."""
    x = as_float_array(x)
    m = np.max(x, axis=axis, keepdims=True)
    finite_m = np.where(np.isfinite(m), m, 0.0).astype(x.dtype, copy=False)
    # An all -inf row sums to 0: log 0 = -inf, as torch.logsumexp. x - m may overflow to -inf for
    # a row spanning more than the float range, harmless as in _shift_by_max.
    with np.errstate(divide="ignore", over="ignore"):
        out = finite_m + np.log(np.sum(np.exp(x - finite_m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def _shift_by_max(x, axis):
    """x - max(x) along axis; an all -inf row becomes NaN (inf - inf), as PyTorch's softmax gives.

    A row spanning more than the float range (e.g. [1.8e308, -1e292]) overflows to -inf in the
    subtraction, which is harmless: exp(-inf) = 0 is also what the exact difference would give.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        return x - np.max(x, axis=axis, keepdims=True)
