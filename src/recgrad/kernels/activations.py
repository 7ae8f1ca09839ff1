"""Fused activation kernels: one compiled, multi-threaded pass per forward and per backward.

The NumPy functions in recgrad.activations are the reference and the test oracle; these kernels
evaluate the same expressions in the same order (the same float32 or float64 roundings of x/sqrt 2,
beta x, 2z = sqrt(8/pi) (x + 0.044715 x^3), 1 - y^2 ...) and replace only the transcendental
functions by approximations that the compiler vectorises (numba's np.exp in a loop is a scalar
libm call):

- exp(a): a = k ln2 + r, |r| <= ln2/2 (k rounded by adding 1.5 2^m, m the mantissa width, which leaves k
  in the sum's low bits; Cody-Waite: ln2 split in a short and a long part), then e^r = 1 + r + r^2 q(r)
  with q a Chebyshev interpolant (degree 4 in float32, 9 in float64) and 2^k built from its exponent
  bits, in two halves so that subnormal results are exact too.
- expm1(a) = 2^k (r + r^2 q(r)) + (2^k - 1): no cancellation for small |a| (used by tanh).
- erfc(z) = t exp(-z^2) F(t) for z >= 0, t = 2/(2 + z), F a Chebyshev interpolant in t (degree 8
  in float32, 24 in float64, evaluated by Horner in monomial form); erfc(-z) = 2 - erfc(z). z^2 is split exactly
  (head = z^2 rounded, tail = fma(z, z, -head) its rounding error) so exp(-z^2) keeps full relative precision.
- gelu'(x) = Phi(x) + x phi(x): phi's exponential e^(-x^2/2) is erfc's e^(-z^2) (z = -x/sqrt 2) times
  (1 + d), d = z^2 - x^2/2 as the two are rounded (|d| < 2e-5): one exponential for both terms.
Every polynomial step and product-plus-sum of these is one fused multiply-add (one rounding; the
reference's own expressions outside the approximations keep their separate roundings). Two places
trade a division for one more rounding: the pair (sigmoid(a), sigmoid(-a)) is 1/(1 + e) and
e (1/(1 + e)), and softmax multiplies a row by 1 / sum(e) (computed in float64).
Coefficients: scripts/kernels/fit_activation_approximations.py. Accuracy measured against the
reference and derivation of each piece: docs/kernels.md. float32 stays float32 throughout
(float32 constants; the one exception is the row sum of softmax, accumulated in float64).

Public API (what recgrad.nn's activation modules call):
    y = forward(name, x, **params)
    grad_input = backward(name, grad_output, cached, **params)
name: "sigmoid", "tanh", "relu", "gelu" (params: approximate="none" | "tanh"),
"swish" (beta=1.0), "silu", "softmax", "log_softmax" (axis=-1). `cached` is what CACHED[name]
says: the forward's output y (sigmoid, tanh, softmax, log_softmax) or its input x (the others).
Input handling: anything recgrad._arrays.as_float_array accepts (ints become float64, float16
becomes float32, exactly as the reference; then the kernel runs); non-contiguous input is copied
to a C-contiguous array first; size 0 returns an empty array. grad_output and cached are brought
to their common dtype (NumPy's promotion, as the reference's arithmetic would). Softmax rows lie
along `axis`: another axis is moved last (a copy), the result is a view with the axis moved back.
Outputs of 1 MiB or more come from recgrad.kernels.buffers, which hands the memory of dead outputs
out again instead of a fresh mapping whose page faults would cost as much as the kernel.
Threads: recgrad.kernels.set_num_threads. Every output element is computed by the same
instructions whatever the thread count (rows are never split), so results are bit-identical for
1 and for N threads.
"""

import math
from collections import namedtuple
from decimal import Decimal, localcontext

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from recgrad._arrays import as_float_array, check_same_shape
from recgrad.activations import _check_approximate
from recgrad.kernels import buffers

CACHED = {
    "sigmoid": "output",
    "tanh": "output",
    "relu": "input",
    "gelu": "input",
    "swish": "input",
    "silu": "input",
    "softmax": "output",
    "log_softmax": "output",
}
_PARAMS = {"gelu": ("approximate",), "swish": ("beta",), "softmax": ("axis",), "log_softmax": ("axis",)}
_SIGMOID, _TANH, _RELU, _GELU_ERF, _GELU_TANH, _SWISH = range(6)
_CHUNK = 16384  # elements per parallel task: 64 KiB of float32, a few L2-resident blocks per thread
# Below this many elements one thread does the work: waking the thread pool costs more than it saves
# (tens of microseconds idle, up to a millisecond on a loaded machine).
_PARALLEL_FROM = 2 * _CHUNK

# ---------------------------------------------------------------- coefficients (fit script output)
# q(r) = (e^r - 1 - r) / r^2 on |r| <= ln(2)/2, monomial, lowest degree first (degree 4 / 9).
_EXP_Q_32 = (0.5, 0.1666657702559799, 0.041666554662050534, 0.008363173074513711, 0.001392617611993558)
_EXP_Q_64 = (0.5000000000000001, 0.16666666666666669, 0.041666666666624164, 0.008333333333330065,
             0.0013888888917196719, 0.00019841269863040545, 2.4801521322368692e-05, 2.7557268480310024e-06,
             2.7620075879983367e-07, 2.5100375832561234e-08)
# F(t) = e^(z^2) erfc(z) / t, t = 2/(2+z) in [t_min, 1]: monomial in w = (2t-1-t_min)/(1-t_min), lowest first
# (degree 8 / 24).
_ERFC_T_MIN_32 = 0.1652892561983471
_ERFC_F_32 = (0.5714730437309122, 0.32642366510065546, 0.10233739817577599, 0.006036556931803271,
              -0.006187265612551876, -0.0006422689865244384, 0.0005930576478036905, 2.0801900759768464e-05,
              -5.5030863495044246e-05)
_ERFC_T_MIN_64 = 0.06825938566552901
_ERFC_F_64 = (0.5349005709592315, 0.33812644261939073, 0.12428028537460556, 0.012249449921987477,
              -0.008854723556588907, -0.0018058828528324268, 0.0011135668438908754, 0.00014469202509989772,
              -0.00018627863017771378, 1.4347526760302373e-05, 2.8005389726390554e-05, -1.0633008352906469e-05,
              -1.7800811131801553e-06, 2.713289166611866e-06, -7.012745996197704e-07, -2.700389295183185e-07,
              2.7398059175488476e-07, -7.45342171513111e-08, -2.8825245238717013e-08, 3.753574586828396e-08,
              -9.824233968852844e-09, -7.020307329554115e-09, 4.195741574240735e-09, 5.203550817082802e-10,
              -5.356956945427235e-10)

# Every constant a kernel uses, in the kernel's dtype (so float32 arithmetic stays float32).
_Constants = namedtuple(
    "_Constants",
    "zero half one two log2e ln2_hi ln2_lo exp_lo exp_hi q mantissa_bits sign_shift low_mask "
    "erfc_z_cap erfc_w_scale erfc_w_shift erfc_f neg_sqrt_half inv_sqrt_2pi neg_half "
    "gelu_tail sqrt_2_over_pi two_sqrt_2_over_pi cubic three_cubic logistic_tail shifter",
)


def _constants(float_type, int_type, mantissa_bits, ln2_hi_bits, exp_lo, exp_hi, q, z_cap, t_min, f):
    with localcontext() as context:
        context.prec = 40
        ln2_exact = Decimal(2).ln()
    ln2 = float(ln2_exact)
    ln2_hi = math.ldexp(round(math.ldexp(ln2, ln2_hi_bits)), -ln2_hi_bits)  # k * ln2_hi is exact for |k| < 2^11
    c = float_type
    bits = 8 * np.dtype(float_type).itemsize
    bias = (1 << (bits - mantissa_bits - 2)) - 1  # the exponent bias: 127 / 1023
    return _Constants(
        zero=c(0.0), half=c(0.5), one=c(1.0), two=c(2.0),
        log2e=c(1.0 / ln2), ln2_hi=c(ln2_hi), ln2_lo=c(float(ln2_exact - Decimal(ln2_hi))),
        exp_lo=c(exp_lo), exp_hi=c(exp_hi),
        q=tuple(c(v) for v in reversed(q)),  # highest degree first, for Horner
        mantissa_bits=int_type(mantissa_bits),
        sign_shift=int_type(bits - 1), low_mask=int_type((1 << (bits - 1)) - 1),
        erfc_z_cap=c(z_cap),
        erfc_w_scale=c(2.0 / (1.0 - t_min)), erfc_w_shift=c(-(1.0 + t_min) / (1.0 - t_min)),
        erfc_f=tuple(c(v) for v in reversed(f)),  # highest degree first, for Horner
        neg_sqrt_half=c(-math.sqrt(0.5)), inv_sqrt_2pi=c(1.0 / math.sqrt(2.0 * math.pi)), neg_half=c(-0.5),
        gelu_tail=c(100.0), sqrt_2_over_pi=c(math.sqrt(2.0 / math.pi)),
        two_sqrt_2_over_pi=c(2.0 * math.sqrt(2.0 / math.pi)), cubic=c(0.044715), three_cubic=c(3.0 * 0.044715),
        logistic_tail=c(800.0),
        # S = 1.5 2^m + 2 bias (m mantissa bits): adding S to v, |v| < 2^(m-2), rounds v to the integer k and the
        # sum's bits are bits(S) + k, with bits(S) / 2 = bias modulo 2^(exponent bits + 1): see _pow2_halves.
        shifter=c(1.5 * 2.0**mantissa_bits + 2 * bias),
    )


# exp_lo/exp_hi: below, e^a rounds to 0 (float32: e^-110 < 2^-150; float64: e^-760 < 2^-1075); above, it
# overflows to inf. z_cap: erfc(z) is 0 beyond it; capping keeps z^2 finite.
_CONSTANTS = {
    np.dtype(np.float32): _constants(np.float32, np.int32, 23, 12, -110.0, 89.0, _EXP_Q_32, 11.0,
                                     _ERFC_T_MIN_32, _ERFC_F_32),
    np.dtype(np.float64): _constants(np.float64, np.int64, 52, 40, -760.0, 710.0, _EXP_Q_64, 28.0,
                                     _ERFC_T_MIN_64, _ERFC_F_64),
}


# ---------------------------------------------------------------- bit casts and constants


def _int_of_width(float_type):
    return types.int32 if float_type == types.float32 else types.int64


@intrinsic
def _float_bits(typingctx, value):
    """The IEEE-754 bits of a float32 (as int32) or float64 (as int64)."""
    int_type = _int_of_width(value)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(int_type))

    return int_type(value), codegen


@intrinsic
def _bits_float(typingctx, like, bits):
    """The float of `like`'s type whose IEEE bits are `bits` (truncated/extended to that width)."""
    int_type = _int_of_width(like)

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[1], signature.args[1], int_type)
        return builder.bitcast(value, context.get_value_type(like))

    return like(like, bits), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a b + c rounded once (llvm.fma: one vfmadd instruction on x86-64 with FMA); all three of one float type."""

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, a, a), codegen


@intrinsic
def _cast_like(typingctx, like, value):
    """`value` converted to `like`'s float type."""

    def codegen(context, builder, signature, args):
        return context.cast(builder, args[1], signature.args[1], like)

    return like(like, value), codegen


def _k(value):
    """The _Constants of value's dtype; inside compiled code, a compile-time constant."""
    return _CONSTANTS[np.asarray(value).dtype]


@overload(_k, inline="always")
def _k_compiled(value):
    constants = _CONSTANTS[np.dtype(str(value))]
    return lambda value: constants


# ---------------------------------------------------------------- unrolled polynomials
# A loop over a tuple of coefficients is not unrolled by the compiler once it is long (the erfc series has
# 25 terms), and a loop inside the element loop stops vectorisation; so each polynomial is generated as
# straight-line source with its coefficients as constants of the dtype.


def _horner(coefficients):
    """An inline compiled p(r) = fma(fma(c0, r, c1), r, c2) ... with c0 the highest degree, as straight-line source
    (Horner's rule, each step one fused multiply-add)."""
    body = "c0"
    for i in range(1, len(coefficients)):
        body = f"_fma({body}, r, c{i})"
    namespace = {f"c{i}": c for i, c in enumerate(coefficients)}
    namespace["_fma"] = _fma
    exec(f"def polynomial(r):\n    return {body}\n", namespace)  # noqa: S102 - generated from the template above
    return njit(inline="always")(namespace["polynomial"])


_POLYNOMIALS = {
    dtype: (
        _horner(K.q),
        _horner(K.erfc_f),
    )
    for dtype, K in _CONSTANTS.items()
}


def _exp_q(r):
    """q(r) = (e^r - 1 - r) / r^2 on |r| <= ln2/2 (compiled code only)."""
    raise NotImplementedError("compiled code only")


def _erfc_f(w):
    """F(t) = e^(z^2) erfc(z) / t as a polynomial in w (compiled code only)."""
    raise NotImplementedError("compiled code only")


@overload(_exp_q, inline="always")
def _exp_q_compiled(r):
    polynomial = _POLYNOMIALS[np.dtype(str(r))][0]
    return lambda r: polynomial(r)


@overload(_erfc_f, inline="always")
def _erfc_f_compiled(w):
    polynomial = _POLYNOMIALS[np.dtype(str(w))][1]
    return lambda w: polynomial(w)


# ---------------------------------------------------------------- scalar building blocks


@njit(inline="always")
def _reduce_unclamped(a):
    """a = k ln2 + r with the integer k = round(a / ln2), |r| <= ln2/2: (bits(S + k), r), S = K.shifter.

    For |a| <= 170 (float32) / 1400 (float64), where both halves of 2^k are normal numbers; NaN gives a NaN r
    (and arbitrary bits)."""
    K = _k(a)
    shifted = _fma(a, K.log2e, K.shifter)  # S + round(a / ln2), exactly
    kf = shifted - K.shifter
    r = _fma(-kf, K.ln2_lo, _fma(-kf, K.ln2_hi, a))  # the inner product kf ln2_hi is exact anyway
    return _float_bits(shifted), r


@njit(inline="always")
def _reduce(a):
    """_reduce_unclamped of a clamped to [exp_lo, exp_hi] (NaN kept), where e^a is already 0 or inf."""
    K = _k(a)
    a = K.exp_lo if a < K.exp_lo else a
    a = K.exp_hi if a > K.exp_hi else a
    return _reduce_unclamped(a)


@njit(inline="always")
def _expm1_reduced(r):
    """e^r - 1 = r + r^2 q(r)."""
    return _fma(r * r, _exp_q(r), r)


@njit(inline="always")
def _pow2_halves(shifted_bits, like):
    """(2^k1, 2^k2), k1 = floor(k / 2), k2 = k - k1, each a normal number of like's type, from B = bits(S + k).

    B = 2c + k with c = bits(S) / 2, so B >> 1 = c + k1 and B - (B >> 1) = c + k2; c = bias modulo 2^(exponent
    bits + 1), so shifting either left by the mantissa width leaves exactly the bits of 2^k1 or 2^k2.
    """
    K = _k(like)
    half = shifted_bits >> 1
    return (_bits_float(like, half << K.mantissa_bits),
            _bits_float(like, (shifted_bits - half) << K.mantissa_bits))


@njit(inline="always")
def _exp_parts(a, b):
    """e^(a + b) = (1 + p) s1 s2 for a small correction b (|b| << 1) and a in _reduce_unclamped's range (erfc's
    -z^2, z capped, is): (p, s1, s2)."""
    shifted_bits, r = _reduce_unclamped(a)
    s1, s2 = _pow2_halves(shifted_bits, r)
    return _expm1_reduced(r + b), s1, s2


@njit(inline="always")
def _exp_mul(a, b, m):
    """m e^(a + b) for a small correction b (|b| << 1); m is applied before the power of two (one rounding)."""
    p, s1, s2 = _exp_parts(a, b)
    return _fma(m, p, m) * s1 * s2


@njit(inline="always")
def _exp(a):
    shifted_bits, r = _reduce(a)
    s1, s2 = _pow2_halves(shifted_bits, r)
    return (_k(a).one + _expm1_reduced(r)) * s1 * s2


@njit(inline="always")
def _expm1(a):
    """e^a - 1 = 2^k (e^r - 1) + (2^k - 1), exact to a few ulp for every a (no cancellation near 0)."""
    shifted_bits, r = _reduce(a)
    s1, s2 = _pow2_halves(shifted_bits, r)
    s = s1 * s2
    return _fma(s, _expm1_reduced(r), s - _k(a).one)


@njit(inline="always")
def _sigmoid(a):
    """The reference's sign-split sigmoid: 1 / (1 + e) for a >= 0, e / (1 + e) otherwise, e = exp(-|a|)."""
    K = _k(a)
    e = _exp(-abs(a))
    return (K.one if a >= K.zero else e) / (K.one + e)


@njit(inline="always")
def _sigmoid_pair(a):
    """(sigmoid(a), sigmoid(-a)) from one exp and one division: 1/(1 + e) and e (1/(1 + e))."""
    K = _k(a)
    e = _exp(-abs(a))
    inverse = K.one / (K.one + e)
    small = e * inverse
    return (inverse if a >= K.zero else small), (inverse if -a >= K.zero else small)


@njit(inline="always")
def _erfc_factor(z):
    """t F(t), t = 2/(2 + |z|) (|z| capped): the polynomial factor of erfc(|z|) = e^(-z^2) t F(t)."""
    K = _k(z)
    az = abs(z)
    az = K.erfc_z_cap if az > K.erfc_z_cap else az
    t = K.two / (K.two + az)
    return t * _erfc_f(_fma(t, K.erfc_w_scale, K.erfc_w_shift))


@njit(inline="always")
def _square_split(z):
    """(head, tail), head + tail = z^2 exactly for |z| capped at erfc_z_cap: head = z^2 rounded and tail its
    rounding error, which one fused multiply-add gives exactly (|tail| <= half an ulp of head)."""
    K = _k(z)
    az = abs(z)
    az = K.erfc_z_cap if az > K.erfc_z_cap else az
    head = az * az
    return head, _fma(az, az, -head)


@njit(inline="always")
def _erfc_select(z, upper):
    """erfc(z) from upper = erfc(|z|): upper for z >= 0, 2 - upper for z < 0 (NaN propagates)."""
    K = _k(z)
    return upper if z >= K.zero else K.two - upper


@njit(inline="always")
def _erfc(z):
    """erfc(z) = t F(t) e^(-z^2) for z >= 0 (z^2 as head + tail, so e^(-z^2) keeps full relative precision)."""
    head, tail = _square_split(z)
    return _erfc_select(z, _exp_mul(-head, -tail, _erfc_factor(z)))


@njit(inline="always")
def _clip(x, bound):
    """x limited to [-bound, bound]; NaN stays NaN (as np.clip)."""
    x = -bound if x < -bound else x
    return bound if x > bound else x


# ---------------------------------------------------------------- each activation: value and derivative
# forward: y = f(x). backward: dx = g * f'(.) from the cached y (sigmoid, tanh) or x (the others),
# written exactly as the reference (recgrad.nn.activation / recgrad.activations) writes it.


@njit(inline="always")
def _relu(x):
    K = _k(x)
    return K.zero if x <= K.zero else x  # NaN stays NaN


@njit(inline="always")
def _relu_backward(g, x):
    K = _k(x)
    d = K.one if x > K.zero else K.zero
    return g * (x if x != x else d)  # NaN input: NaN gradient, as relu_grad


@njit(inline="always")
def _sigmoid_backward(g, y):
    return g * y * (_k(y).one - y)


@njit(inline="always")
def _tanh(x):
    """tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)), sign restored."""
    K = _k(x)
    t = _expm1(-(abs(x) + abs(x)))
    y = abs(t / (K.two + t))
    return -y if x < K.zero else y


@njit(inline="always")
def _tanh_backward(g, y):
    return g * (_k(y).one - y * y)


@njit(inline="always")
def _gelu_erf(x):
    """x Phi(x) = max(x, -100) erfc(-x / sqrt 2) / 2."""
    K = _k(x)
    gate = K.half * _erfc(K.neg_sqrt_half * x)
    return (-K.gelu_tail if x < -K.gelu_tail else x) * gate


@njit(inline="always")
def _gelu_erf_backward(g, x):
    """g (Phi(x) + xc phi(xc)), xc = clip(x, +-100), Phi(x) = erfc(z) / 2 with z = -x / sqrt 2.

    One exponential serves both terms: erfc needs E = e^-(head + tail), head + tail = z^2, and
    phi(xc) = e^-h / sqrt(2 pi) with h the reference's rounding of xc^2 / 2, which differs from z^2 by
    roundings only (|d| < 2e-5 (float32) / 2e-13 (float64), d = head + tail - h, head - h exact by Sterbenz), so
    e^-h = E e^d = E (1 + d) to within d^2 / 2. Where |z| is capped, E is 0 and (1 + d) is floored at 0.
    """
    K = _k(x)
    xc = _clip(x, K.gelu_tail)
    z = K.neg_sqrt_half * x
    head, tail = _square_split(z)
    p, s1, s2 = _exp_parts(-head, -tail)
    factor = _erfc_factor(z)
    gate = K.half * _erfc_select(z, _fma(factor, p, factor) * s1 * s2)
    h = -(K.neg_half * xc * xc)
    d = (head - h) + tail
    one_plus_d = K.one + d
    m = xc * (K.inv_sqrt_2pi * (one_plus_d if one_plus_d > K.zero else K.zero))
    return g * (gate + _fma(m, p, m) * s1 * s2)


@njit(inline="always")
def _gelu_tanh_two_z(xc):
    """2z = 2 sqrt(2/pi) (x + 0.044715 x^3), the reference's order of operations."""
    K = _k(xc)
    return K.two_sqrt_2_over_pi * (xc + K.cubic * (xc * xc * xc))


@njit(inline="always")
def _gelu_tanh(x):
    """max(x, -100) sigmoid(2z(clip(x, +-100)))."""
    K = _k(x)
    gate = _sigmoid(_gelu_tanh_two_z(_clip(x, K.gelu_tail)))
    return (-K.gelu_tail if x < -K.gelu_tail else x) * gate


@njit(inline="always")
def _gelu_tanh_backward(g, x):
    """g (s + xc 2 s (1 - s) z'), s = sigmoid(2z), 1 - s = sigmoid(-2z), z' = sqrt(2/pi) (1 + 3 0.044715 xc^2)."""
    K = _k(x)
    xc = _clip(x, K.gelu_tail)
    s, s_neg = _sigmoid_pair(_gelu_tanh_two_z(xc))
    dz = K.sqrt_2_over_pi * (K.one + K.three_cubic * xc * xc)
    return g * (s + xc * K.two * s * s_neg * dz)


@njit(inline="always")
def _swish(x, beta):
    """x sigmoid(beta x), 0 where the sigmoid is exactly 0 (no -inf * 0)."""
    K = _k(x)
    s = _sigmoid(beta * x)
    return x * s if s != K.zero else K.zero


@njit(inline="always")
def _swish_backward(g, x, beta):
    """g (s + bx s (1 - s)), bx = clip(beta x, +-800), s = sigmoid(bx)."""
    bx = _clip(beta * x, _k(x).logistic_tail)
    s, s_neg = _sigmoid_pair(bx)
    return g * (s + bx * s * s_neg)


# ---------------------------------------------------------------- parallel drivers
# Each op's loop is its own compiled function (one vectorised loop per unit of LLVM optimisation: one large
# function holding every loop vectorised some of them badly); the parallel drivers call them per chunk.
# error_model="numpy": x / 0 gives inf or NaN as in NumPy, with no per-division check to stop vectorisation.


def _map_x(f):
    @njit(error_model="numpy")
    def loop(x, y, beta):
        for i in range(x.size):
            y[i] = f(x[i])

    return loop


def _map_x_beta(f):
    @njit(error_model="numpy")
    def loop(x, y, beta):
        for i in range(x.size):
            y[i] = f(x[i], beta)

    return loop


def _map_g_c(f):
    @njit(error_model="numpy")
    def loop(g, c, dx, beta):
        for i in range(g.size):
            dx[i] = f(g[i], c[i])

    return loop


def _map_g_c_beta(f):
    @njit(error_model="numpy")
    def loop(g, c, dx, beta):
        for i in range(g.size):
            dx[i] = f(g[i], c[i], beta)

    return loop


_sigmoid_loop, _sigmoid_backward_loop = _map_x(_sigmoid), _map_g_c(_sigmoid_backward)
_tanh_loop, _tanh_backward_loop = _map_x(_tanh), _map_g_c(_tanh_backward)
_relu_loop, _relu_backward_loop = _map_x(_relu), _map_g_c(_relu_backward)
_gelu_tanh_loop, _gelu_tanh_backward_loop = _map_x(_gelu_tanh), _map_g_c(_gelu_tanh_backward)
_gelu_erf_loop, _gelu_erf_backward_loop = _map_x(_gelu_erf), _map_g_c(_gelu_erf_backward)
_swish_loop, _swish_backward_loop = _map_x_beta(_swish), _map_g_c_beta(_swish_backward)


@njit(cache=True)
def _forward_span(op, x, y, beta):
    """y = f(x) on one contiguous span; op selects f."""
    if op == _SIGMOID:
        _sigmoid_loop(x, y, beta)
    elif op == _TANH:
        _tanh_loop(x, y, beta)
    elif op == _RELU:
        _relu_loop(x, y, beta)
    elif op == _GELU_ERF:
        _gelu_erf_loop(x, y, beta)
    elif op == _GELU_TANH:
        _gelu_tanh_loop(x, y, beta)
    else:
        _swish_loop(x, y, beta)


@njit(cache=True)
def _backward_span(op, g, c, dx, beta):
    """dx = g * f'(.) on one contiguous span, from the cached c."""
    if op == _SIGMOID:
        _sigmoid_backward_loop(g, c, dx, beta)
    elif op == _TANH:
        _tanh_backward_loop(g, c, dx, beta)
    elif op == _RELU:
        _relu_backward_loop(g, c, dx, beta)
    elif op == _GELU_ERF:
        _gelu_erf_backward_loop(g, c, dx, beta)
    elif op == _GELU_TANH:
        _gelu_tanh_backward_loop(g, c, dx, beta)
    else:
        _swish_backward_loop(g, c, dx, beta)


@njit(parallel=True, cache=True)
def _forward_kernel(op, x, y, beta):
    """_forward_span over parallel chunks of _CHUNK elements."""
    n = x.size
    for chunk in prange((n + _CHUNK - 1) // _CHUNK):
        lo = chunk * _CHUNK
        hi = min(lo + _CHUNK, n)
        _forward_span(op, x[lo:hi], y[lo:hi], beta)


@njit(parallel=True, cache=True)
def _backward_kernel(op, g, c, dx, beta):
    """_backward_span over parallel chunks of _CHUNK elements."""
    n = g.size
    for chunk in prange((n + _CHUNK - 1) // _CHUNK):
        lo = chunk * _CHUNK
        hi = min(lo + _CHUNK, n)
        _backward_span(op, g[lo:hi], c[lo:hi], dx[lo:hi], beta)


# ---------------------------------------------------------------- softmax rows


@njit(inline="always")
def _order_key(value):
    """An integer that orders like the float (negative floats' bits reversed); an involution."""
    K = _k(value)
    b = _float_bits(value)
    return b ^ ((b >> K.sign_shift) & K.low_mask)


@njit(inline="always")
def _row_max(row):
    """max(row) through the integer keys: vectorises without fast-math (a positive NaN wins; any other NaN
    still makes the whole row NaN through the row sum, as in the reference)."""
    best = _order_key(row[0])
    for j in range(1, row.size):
        key = _order_key(row[j])
        best = key if key > best else best
    K = _k(row[0])
    return _bits_float(row[0], best ^ ((best >> K.sign_shift) & K.low_mask))


@njit(fastmath={"reassoc"})
def _row_sum(row):
    """sum(row) in float64 (reassociation lets the loop vectorise; it never changes a NaN or inf result)."""
    total = 0.0
    for j in range(row.size):
        total += row[j]
    return total


@njit(fastmath={"reassoc"})
def _row_dot(a, b):
    """sum(a * b) in float64, as _row_sum."""
    total = 0.0
    for j in range(a.size):
        total += a[j] * b[j]
    return total


@njit(cache=True, error_model="numpy")
def _softmax_forward_rows(log, x, y, first, last):
    """Rows first..last-1 of x (rows, k): softmax = e (1 / sum(e)), or log_softmax = (x - m) - log sum(e),
    with m the row maximum and e = exp(x - m)."""
    for r in range(first, last):
        xr = x[r]
        yr = y[r]
        m = _row_max(xr)
        for j in range(xr.size):
            yr[j] = _exp(xr[j] - m)
        total = _row_sum(yr)
        if log:
            lse = _cast_like(m, math.log(total))
            for j in range(xr.size):
                yr[j] = (xr[j] - m) - lse
        else:
            inverse = _cast_like(m, 1.0 / total)  # a multiply per element instead of a division
            for j in range(xr.size):
                yr[j] = yr[j] * inverse


@njit(cache=True, error_model="numpy")
def _softmax_backward_rows(log, g, y, dx, first, last):
    """Rows first..last-1: softmax dx = y (g - sum(g y)); log_softmax dx = g - exp(y) sum(g)."""
    for r in range(first, last):
        gr = g[r]
        yr = y[r]
        dr = dx[r]
        if log:
            total = _cast_like(gr[0], _row_sum(gr))
            for j in range(gr.size):
                dr[j] = gr[j] - _exp(yr[j]) * total
        else:
            dot = _cast_like(gr[0], _row_dot(gr, yr))
            for j in range(gr.size):
                dr[j] = yr[j] * (gr[j] - dot)


@njit(parallel=True, cache=True)
def _softmax_forward_kernel(log, x, y):
    """_softmax_forward_rows over parallel blocks of rows (about _CHUNK elements each; a row is never split)."""
    rows = x.shape[0]
    step = max(1, _CHUNK // max(1, x.shape[1]))
    for block in prange((rows + step - 1) // step):
        _softmax_forward_rows(log, x, y, block * step, min(rows, (block + 1) * step))


@njit(parallel=True, cache=True)
def _softmax_backward_kernel(log, g, y, dx):
    """_softmax_backward_rows over parallel blocks of rows."""
    rows = g.shape[0]
    step = max(1, _CHUNK // max(1, g.shape[1]))
    for block in prange((rows + step - 1) // step):
        _softmax_backward_rows(log, g, y, dx, block * step, min(rows, (block + 1) * step))


# ---------------------------------------------------------------- Python entry points


def _parse(name, params):
    """Validate the name and its keyword parameters; return (op code or None for softmax rows, beta, axis)."""
    if name not in CACHED:
        raise ValueError(f"name must be one of {sorted(CACHED)}, got {name!r}")
    allowed = _PARAMS.get(name, ())
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise TypeError(f"{name} takes no parameter {unknown[0]!r} (its parameters: {list(allowed) or 'none'})")
    if name in ("softmax", "log_softmax"):
        return None, 1.0, params.get("axis", -1)
    if name == "gelu":
        approximate = _check_approximate(params.get("approximate", "none"))
        return (_GELU_ERF if approximate == "none" else _GELU_TANH), 1.0, None
    if name in ("swish", "silu"):
        return _SWISH, float(params.get("beta", 1.0)), None
    return {"sigmoid": _SIGMOID, "tanh": _TANH, "relu": _RELU}[name], 1.0, None


def _as_rows(array, axis):
    """(rows, k) C-contiguous view/copy of `array` with `axis` last, and the moved shape."""
    moved = np.moveaxis(array, axis, -1) if array.ndim else array.reshape(1)
    return np.ascontiguousarray(moved).reshape(-1, moved.shape[-1]), moved.shape


def _from_rows(rows, moved_shape, ndim, axis):
    out = rows.reshape(moved_shape)
    return np.moveaxis(out, -1, axis) if ndim else out.reshape(())


def _check_axis(axis, ndim):
    axis = int(axis)
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ValueError(f"axis {axis} is out of bounds for an array of dimension {ndim}")
    return axis


def forward(name, x, **params):
    """y = name(x): the activation's value, same shape and dtype as x (see the module docstring).

    Example: forward("gelu", x, approximate="tanh"), forward("softmax", x, axis=1).
    """
    op, beta, axis = _parse(name, params)
    x = as_float_array(x)
    if op is None:
        axis = _check_axis(axis, x.ndim)
        if x.size == 0:
            return np.empty_like(x)
        rows, moved_shape = _as_rows(x, axis)
        out = buffers.empty(rows.shape, rows.dtype)
        if rows.size < _PARALLEL_FROM:
            _softmax_forward_rows(name == "log_softmax", rows, out, 0, rows.shape[0])
        else:
            _softmax_forward_kernel(name == "log_softmax", rows, out)
        return _from_rows(out, moved_shape, x.ndim, axis)
    y = buffers.empty(x.shape, x.dtype)
    if x.size:
        run = _forward_kernel if x.size >= _PARALLEL_FROM else _forward_span
        run(op, np.ascontiguousarray(x).reshape(-1), y.reshape(-1), x.dtype.type(beta))
    return y


def backward(name, grad_output, cached, **params):
    """dL/dx of name's forward, from dL/dy = grad_output and the forward's cached array (CACHED[name]).

    Same shape as grad_output; dtype: the common dtype of grad_output and cached.
    """
    op, beta, axis = _parse(name, params)
    g = as_float_array(grad_output, "grad_output")
    c = as_float_array(cached, "cached")
    check_same_shape(g, c, "grad_output", "cached")
    dtype = np.result_type(g, c)
    g, c = g.astype(dtype, copy=False), c.astype(dtype, copy=False)
    if op is None:
        axis = _check_axis(axis, g.ndim)
        if g.size == 0:
            return np.empty_like(g)
        g_rows, moved_shape = _as_rows(g, axis)
        c_rows, _ = _as_rows(c, axis)
        out = buffers.empty(g_rows.shape, g_rows.dtype)
        if g_rows.size < _PARALLEL_FROM:
            _softmax_backward_rows(name == "log_softmax", g_rows, c_rows, out, 0, g_rows.shape[0])
        else:
            _softmax_backward_kernel(name == "log_softmax", g_rows, c_rows, out)
        return _from_rows(out, moved_shape, g.ndim, axis)
    dx = buffers.empty(g.shape, dtype)
    if g.size:
        run = _backward_kernel if g.size >= _PARALLEL_FROM else _backward_span
        run(
            op,
            np.ascontiguousarray(g).reshape(-1),
            np.ascontiguousarray(c).reshape(-1),
            dx.reshape(-1),
            dtype.type(beta),
        )
    return dx
