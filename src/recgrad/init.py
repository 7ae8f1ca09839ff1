"""Weight initialisers with PyTorch's semantics (torch.nn.init), drawn from a numpy Generator.

Every `*_` function fills the float ndarray `w` in place and returns it. A weight is laid out
`(out, in, *receptive)` (a Linear weight is `(out, in)`, a conv kernel `(out, in, kh, kw)`):

    fan_in  = in  * prod(receptive)        fan_out = out * prod(receptive)

The scales keep the variance of activations (fan_in) or of gradients (fan_out) constant from
layer to layer. A uniform draw on [-b, b] has variance b^2 / 3, so a uniform initialiser with
standard deviation s uses the bound b = sqrt(3) * s:

    xavier (Glorot & Bengio 2010):  Var(w) = gain^2 * 2 / (fan_in + fan_out)
    kaiming (He et al. 2015):       Var(w) = gain^2 / fan          (fan = fan_in or fan_out)

`rng` is a numpy.random.Generator, an int seed or None (a fresh, unseeded Generator); see
`as_generator`. Values are drawn in float64 and cast to `w`'s dtype, so a seed gives the same
numbers in float32 and float64 up to rounding. A zero-element `w` is returned unchanged (PyTorch
also does nothing there, with a warning). Derivations and the gain table: docs/formulas.md.
Reference: https://pytorch.org/docs/stable/nn.init.html
"""

import math
import numbers

import numpy as np

_LINEAR_NONLINEARITIES = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)


def as_generator(rng=None):
    """Return a numpy.random.Generator: `rng` itself, `default_rng(rng)` for an int seed, or a fresh one for None.

    Passing the same Generator to several calls continues its stream; passing the same int seed
    restarts it. Anything else (a float, a bool, the legacy RandomState) raises TypeError.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng: expected a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity, PyTorch's table (torch.nn.init.calculate_gain).

    ==================  ==============================
    nonlinearity        gain
    ==================  ==============================
    linear, conv*,      1
    conv_transpose*,
    sigmoid
    tanh                5/3
    relu                sqrt(2)
    leaky_relu          sqrt(2 / (1 + slope^2))
    selu                3/4
    ==================  ==============================

    For relu the gain restores the variance halved by zeroing half of a symmetric input:
    E[relu(z)^2] = Var(z) / 2. For leaky_relu the negative half keeps slope^2 of it:
    E[lrelu(z)^2] = (1 + slope^2) Var(z) / 2.

    Args:
        nonlinearity: one of the names above.
        param: the negative slope for "leaky_relu" (a real number, not a bool); None means 0.01,
            LeakyReLU's default slope. As in PyTorch, `param` is read only for "leaky_relu".

    Returns:
        The gain as a Python float.

    Raises:
        ValueError: an unknown nonlinearity, or a leaky_relu slope that is not a finite real number.
    """
    if nonlinearity in _LINEAR_NONLINEARITIES or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, numbers.Real) and not isinstance(param, (bool, np.bool_)) and math.isfinite(param):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: param (the leaky_relu negative slope) {param!r} is not a valid number")
        return math.sqrt(2.0 / (1.0 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4.0  # found empirically by PyTorch (pytorch/pytorch#50664)
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def calculate_fan_in_and_fan_out(w):
    """(fan_in, fan_out) of an array laid out (out, in, *receptive).

    fan_in = in * prod(receptive) and fan_out = out * prod(receptive): the number of inputs that
    feed one output unit, and of outputs one input unit feeds. Raises ValueError for fewer than
    2 dimensions, where no in/out split exists (PyTorch raises too).
    """
    shape = np.shape(w)
    if len(shape) < 2:
        raise ValueError(
            f"w: fan_in and fan_out need an array of at least 2 dimensions laid out (out, in, *receptive), "
            f"got shape {shape}"
        )
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def uniform_(w, a=0.0, b=1.0, rng=None):
    """Fill `w` with draws from U[a, b) (torch.nn.init.uniform_); requires a <= b."""
    _check_weight(w)
    a, b = _finite_float(a, "a"), _finite_float(b, "b")
    if a > b:
        raise ValueError(f"uniform_: a ({a}) must not exceed b ({b})")
    w[...] = as_generator(rng).uniform(a, b, size=w.shape)
    return w


def normal_(w, mean=0.0, std=1.0, rng=None):
    """Fill `w` with draws from N(mean, std^2) (torch.nn.init.normal_); requires std >= 0."""
    _check_weight(w)
    mean, std = _finite_float(mean, "mean"), _finite_float(std, "std")
    if std < 0.0:
        raise ValueError(f"normal_: std must be >= 0, got {std}")
    w[...] = as_generator(rng).normal(mean, std, size=w.shape)
    return w


def zeros_(w):
    """Fill `w` with zeros (torch.nn.init.zeros_)."""
    _check_weight(w)
    w[...] = 0.0
    return w


def xavier_uniform_(w, gain=1.0, rng=None):
    """Glorot/Xavier uniform: U[-b, b] with b = gain * sqrt(6 / (fan_in + fan_out)).

    Var(w) = b^2 / 3 = gain^2 * 2 / (fan_in + fan_out), the compromise between keeping the
    forward variance (needs 1/fan_in) and the backward variance (needs 1/fan_out).
    Reference: Glorot & Bengio (2010); torch.nn.init.xavier_uniform_.
    """
    _check_weight(w)
    fan_in, fan_out = calculate_fan_in_and_fan_out(w)
    if w.size == 0:
        return w
    bound = _finite_float(gain, "gain") * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(w, -bound, bound, rng)


def xavier_normal_(w, gain=1.0, rng=None):
    """Glorot/Xavier normal: N(0, s^2) with s = gain * sqrt(2 / (fan_in + fan_out)).

    Reference: Glorot & Bengio (2010); torch.nn.init.xavier_normal_.
    """
    _check_weight(w)
    fan_in, fan_out = calculate_fan_in_and_fan_out(w)
    if w.size == 0:
        return w
    std = _finite_float(gain, "gain") * math.sqrt(2.0 / (fan_in + fan_out))
    return normal_(w, 0.0, std, rng)


def kaiming_uniform_(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """He/Kaiming uniform: U[-b, b] with b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a).

    Var(w) = b^2 / 3 = gain^2 / fan. With mode "fan_in" the forward variance is preserved, with
    "fan_out" the backward one. `a` is the leaky_relu negative slope; the default a = 0 makes
    the default leaky_relu gain sqrt(2), the relu gain (0.01 is LeakyReLU's default slope and
    calculate_gain's default for param=None, not kaiming's). As in PyTorch, `a` is read only
    when nonlinearity is "leaky_relu". Linear's default init is a = sqrt(5): b = 1/sqrt(fan_in).
    Reference: He et al. (2015), arXiv:1502.01852; torch.nn.init.kaiming_uniform_.
    """
    _check_weight(w)
    fan = _correct_fan(w, mode)
    if w.size == 0:
        return w
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(w, -bound, bound, rng)


def kaiming_normal_(w, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """He/Kaiming normal: N(0, s^2) with s = gain / sqrt(fan), gain = calculate_gain(nonlinearity, a).

    Same arguments and conventions as `kaiming_uniform_`.
    Reference: He et al. (2015), arXiv:1502.01852; torch.nn.init.kaiming_normal_.
    """
    _check_weight(w)
    fan = _correct_fan(w, mode)
    if w.size == 0:
        return w
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return normal_(w, 0.0, std, rng)


def _correct_fan(w, mode):
    """fan_in or fan_out of `w` as `mode` says; mode is case-insensitive, as in PyTorch."""
    if not isinstance(mode, str) or mode.lower() not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(w)
    return fan_in if mode.lower() == "fan_in" else fan_out


def _check_weight(w):
    """Initialisers fill in place, so `w` must already be a floating ndarray."""
    if not isinstance(w, np.ndarray) or w.dtype.kind != "f":
        kind = f"ndarray of dtype {w.dtype}" if isinstance(w, np.ndarray) else type(w).__name__
        raise TypeError(f"w: expected a floating numpy ndarray to fill in place (for a Parameter pass .data), "
                        f"got {kind}")


def _finite_float(value, name):
    """A hyper-parameter as a finite Python float, or ValueError naming it."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)
