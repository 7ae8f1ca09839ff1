"""recgrad.kernels.activations against the NumPy reference (recgrad.activations): values and gradients.

Accuracy contract (docs/kernels.md): float64 within 1e-12 and float32 within 1e-6 of the reference,
relative to the size of the terms that make up the result (where the reference itself cancels, e.g.
gelu'(x) = Phi(x) + x phi(x) near its root, the bound is relative to |Phi| + |x phi|), and absolutely
below 1e-30 (float32) / 1e-300 (float64), where intermediate factors are subnormal. Non-finite
results must match exactly (same NaN positions, same infinities).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import ndtr

import recgrad.activations as A
from recgrad import kernels
from recgrad.kernels import activations as K
from recgrad.nn import GELU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Swish, Tanh

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-6, np.float64: 1e-12}
FLOOR = {np.float32: 1e-30, np.float64: 1e-300}
EDGES = [0.0, 1e-8, -1e-8, 20.0, -20.0, 1e4, -1e4, np.inf, -np.inf, np.nan]
ELEMENTWISE = [
    ("sigmoid", {}),
    ("tanh", {}),
    ("relu", {}),
    ("gelu", {}),
    ("gelu", {"approximate": "tanh"}),
    ("swish", {"beta": 1.5}),
    ("swish", {"beta": -0.7}),
    ("silu", {}),
]
ROWS = [("softmax", {}), ("log_softmax", {}), ("softmax", {"axis": 0}), ("log_softmax", {"axis": 0})]
CASES = ELEMENTWISE + ROWS


def case_id(case):
    name, params = case
    return name + "".join(f"-{k}={v}" for k, v in params.items())


# The NumPy reference of each kernel is the recgrad.nn layer's engine="numpy" path (recgrad.activations).
LAYERS = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU, "gelu": GELU, "swish": Swish, "silu": SiLU,
          "softmax": Softmax, "log_softmax": LogSoftmax}


def reference_forward(name, x, params):
    return LAYERS[name](**params).reference_forward(x)


def reference_backward(name, g, x, y, params):
    """The reference's dL/dx from what the layer caches (y or x, K.CACHED)."""
    return LAYERS[name](**params).reference_backward(g, y if K.CACHED[name] == "output" else x)


def two_z(x):
    xc = np.clip(x.astype(np.float64), -100, 100)
    return 2 * np.sqrt(2 / np.pi) * (xc + 0.044715 * xc**3)


def forward_scale(name, x, ref, params):
    """Size of the terms behind each reference value (float64)."""
    x, ref = x.astype(np.float64), ref.astype(np.float64)
    if name == "gelu" and params.get("approximate") == "tanh":
        # x^3 is rounded (numpy's float32 power is not correctly rounded either): sigmoid(2z) inherits
        # that relative error times |2z| in the far tail.
        return np.abs(ref) * np.maximum(1.0, np.abs(two_z(x)))
    if name == "log_softmax":
        axis = params.get("axis", -1)
        with np.errstate(invalid="ignore"):  # inf - inf in the non-finite rows, which are compared exactly
            shifted = x - np.max(x, axis=axis, keepdims=True)
        # the row sum (>= 1) is rounded once in the reference: an absolute error ~eps in log(sum)
        return np.abs(shifted) + np.maximum(1.0, np.abs(A.logsumexp(shifted, axis=axis, keepdims=True)))
    return np.abs(ref)


def backward_scale(name, g, x, y, params):
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 at the infinite edges: not compared there
        return _backward_scale(name, g.astype(np.float64), x.astype(np.float64), y.astype(np.float64), params)


def _backward_scale(name, g, x, y, params):
    if name == "gelu" and params.get("approximate", "none") == "none":
        xc = np.clip(x, -100, 100)
        return np.abs(g) * (ndtr(x) + np.abs(xc) * np.exp(-xc * xc / 2))
    if name == "gelu":
        xc = np.clip(x, -100, 100)
        s = A.sigmoid(two_z(xc))
        return np.abs(g) * (s + np.abs(xc) * s * (1 + 0.2 * xc * xc)) * np.maximum(1.0, np.abs(two_z(xc)))
    if name in ("swish", "silu"):
        bx = np.clip(params.get("beta", 1.0) * x, -800, 800)
        return np.abs(g) * A.sigmoid(bx) * (1 + np.abs(bx))
    axis = params.get("axis", -1)
    # the row sums are rounded differently (float64 here, pairwise float32 in the reference): relative to sum |.|
    if name == "softmax":
        return np.abs(y) * (np.abs(g) + np.sum(np.abs(g * y), axis=axis, keepdims=True))
    if name == "log_softmax":
        return np.abs(g) + np.exp(y) * np.sum(np.abs(g), axis=axis, keepdims=True)
    return np.abs(reference_backward(name, g, x, y, params))


def assert_matches(actual, expected, scale, dtype, what):
    assert actual.dtype == dtype and actual.shape == expected.shape, what
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{what}: NaN positions")
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~finite], expected[~finite], err_msg=f"{what}: infinities")
    error = np.abs(actual[finite].astype(np.float64) - expected[finite])
    bound = RTOL[dtype] * scale[finite] + FLOOR[dtype]
    worst = np.argmax(error - bound) if error.size else 0
    assert np.all(error <= bound), (what, error.flat[worst], bound.flat[worst], actual[finite].flat[worst])


def check(name, params, x, g, what):
    dtype = x.dtype.type
    y = K.forward(name, x, **params)
    ref = reference_forward(name, x, params)
    assert_matches(y, ref, forward_scale(name, x, ref, params), dtype, f"{what} forward")
    cached = y if K.CACHED[name] == "output" else x
    dx = K.backward(name, g, cached, **params)
    # the same cached array for both: the backward formulas are compared, not the forward again
    expected = reference_backward(name, g, x, y, params)
    assert_matches(dx, expected, backward_scale(name, g, x, y, params), dtype, f"{what} backward")
    return y, dx


def sample(shape, dtype, seed, spread=4.0):
    rng = np.random.default_rng(seed)
    return (spread * rng.standard_normal(shape)).astype(dtype), rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_random_values_and_gradients(case, dtype):
    name, params = case
    x, g = sample((64, 37), dtype, 0)
    check(name, params, x, g, f"{case_id(case)} {dtype.__name__}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ELEMENTWISE, ids=case_id)
def test_edge_values(case, dtype):
    name, params = case
    x = np.array(EDGES + [-40.0, -100.0, -120.0, 90.0, -800.0, 3e38], dtype=dtype)
    g = np.linspace(-1.5, 2.0, x.size).astype(dtype)
    check(name, params, x, g, f"{case_id(case)} {dtype.__name__} edges")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ELEMENTWISE, ids=case_id)
def test_wide_range(case, dtype):
    """Every binade the approximations see, through the subnormal tails (x in [-120, 120])."""
    name, params = case
    x = np.linspace(-120, 120, 20011).astype(dtype)
    g = np.ones_like(x)
    check(name, params, x, g, f"{case_id(case)} {dtype.__name__} wide")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_gradient_shares_erfc_exponential(dtype):
    """gelu'(x) = Phi(x) + x phi(x) takes phi's e^(-x^2/2) from erfc's e^(-z^2), z = -x/sqrt 2, times (1 + d):
    dense around where d is largest and where erfc's |z| cap (11 / 28, |x| = 15.6 / 39.6) zeroes both terms."""
    cap = 11.0 if dtype == np.float32 else 28.0
    edge = cap * np.sqrt(2.0)
    x = np.concatenate([np.linspace(-edge - 2, edge + 2, 100001), np.linspace(-edge - 0.01, -edge + 0.01, 2001)])
    x = x.astype(dtype)
    g = np.cos(np.arange(x.size)).astype(dtype)
    check("gelu", {}, x, g, f"gelu {dtype.__name__} shared exp")
    dx = K.backward("gelu", np.ones_like(x), x)
    assert np.all(dx[x < -edge] == 0) and np.all(dx[x > edge] == 1)  # both terms vanish past the cap


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_keeps_subnormal_results(dtype):
    """exp's 2^k is applied in two normal halves, so results below the smallest normal are not flushed to 0:
    sigmoid(x) = e^x / (1 + e^x) in the subnormal range, within two subnormal steps of the reference."""
    lo, hi = (-104.0, -87.0) if dtype == np.float32 else (-746.0, -708.0)
    x = np.linspace(lo, hi, 20001).astype(dtype)
    y, expected = K.forward("sigmoid", x), A.sigmoid(x)
    np.testing.assert_array_equal(y > 0, expected > 0)
    step = np.finfo(dtype).smallest_subnormal
    assert np.max(np.abs(y.astype(np.float64) - expected.astype(np.float64))) <= 2 * float(step)


@pytest.mark.parametrize("size", [0, 1, 7, 1000003])
@pytest.mark.parametrize("case", [("sigmoid", {}), ("gelu", {}), ("swish", {"beta": 1.5})], ids=case_id)
def test_sizes_cross_chunk_boundaries(case, size):
    name, params = case
    x, g = sample(size, np.float32, size)
    check(name, params, x, g, f"{case_id(case)} n={size}")


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4), (1, 1), (5, 1), (2, 7), (3, 4, 5), ()])
@pytest.mark.parametrize("case", ROWS, ids=case_id)
def test_softmax_shapes(case, shape):
    name, params = case
    if shape == () and params.get("axis") == 0:
        shape = (1,)
    x, g = sample(shape, np.float64, 1)
    axis = params.get("axis", -1)
    if x.ndim and x.shape[axis] == 0:  # the reference cannot reduce an empty axis; the kernels return empty
        y = K.forward(name, x, **params)
        assert y.shape == x.shape and K.backward(name, g, y, **params).shape == x.shape
        return
    check(name, params, x, g, f"{case_id(case)} {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_masked_and_nonfinite_rows(name, dtype):
    x = np.array(
        [
            [1.0, -np.inf, 2.0, -np.inf],  # masked logits: exactly 0 probability
            [-np.inf] * 4,  # all masked: NaN, as torch
            [0.0, np.nan, 1.0, 2.0],  # NaN anywhere: the whole row NaN
            [np.inf, 0.0, 1.0, 2.0],  # +inf: NaN (inf - inf), as the reference
            [1e4, -1e4, 0.0, 20.0],
            [-1e4, -1e4 + 1e-3, -1e4, -1e4],
        ],
        dtype=dtype,
    )
    g = np.arange(x.size, dtype=dtype).reshape(x.shape) / 7
    check(name, {}, x, g, f"{name} {dtype.__name__} masked")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_non_contiguous_input_is_copied(case):
    name, params = case
    base, gbase = sample((12, 18), np.float32, 3)
    x, g = base[::2, ::3].T, gbase[::2, ::3].T  # strided and transposed
    assert not x.flags.c_contiguous
    y, dx = check(name, params, x, g, f"{case_id(case)} strided")
    cached = y if K.CACHED[name] == "output" else x
    np.testing.assert_array_equal(y, K.forward(name, np.ascontiguousarray(x), **params))
    np.testing.assert_array_equal(
        dx, K.backward(name, np.ascontiguousarray(g), np.ascontiguousarray(cached), **params)
    )


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_one_and_two_threads_agree_bitwise(case, kernel_threads):
    name, params = case
    x, g = sample((300, 1000), np.float32, 4)
    results = []
    for threads in sorted({1, min(2, kernels.get_num_threads())}):
        kernel_threads(threads)
        y = K.forward(name, x, **params)
        results.append((y, K.backward(name, g, y if K.CACHED[name] == "output" else x, **params)))
    for y, dx in results[1:]:
        np.testing.assert_array_equal(y, results[0][0])
        np.testing.assert_array_equal(dx, results[0][1])


def test_closed_forms():
    for dtype in DTYPES:
        zero = np.zeros(1, dtype)
        assert K.forward("sigmoid", zero)[0] == 0.5
        assert K.forward("tanh", zero)[0] == 0.0
        assert K.forward("gelu", zero)[0] == 0.0
        assert abs(K.backward("gelu", np.ones(1, dtype), zero)[0] - 0.5) <= np.finfo(dtype).eps  # Phi(0)
        assert K.backward("silu", np.ones(1, dtype), zero)[0] == 0.5
        np.testing.assert_array_equal(K.forward("softmax", np.zeros((2, 4), dtype)), np.full((2, 4), 0.25, dtype))
        limits = K.forward("sigmoid", np.array([-np.inf, np.inf], dtype))
        np.testing.assert_array_equal(limits, [0.0, 1.0])


def test_dtypes_follow_the_reference():
    assert K.forward("tanh", np.array([1, 2])).dtype == np.float64  # ints -> float64
    assert K.forward("tanh", np.array([1, 2], np.float16)).dtype == np.float32
    mixed = K.backward("sigmoid", np.ones(3, np.float32), np.full(3, 0.5))
    assert mixed.dtype == np.float64 and np.all(mixed == 0.25)
    with pytest.raises(TypeError, match="x"):
        K.forward("relu", np.array([1j]))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="name must be one of"):
        K.forward("softsign", np.ones(2))
    with pytest.raises(TypeError, match="beta"):
        K.forward("relu", np.ones(2), beta=2.0)
    with pytest.raises(TypeError, match="axis"):
        K.backward("gelu", np.ones(2), np.ones(2), axis=0)
    with pytest.raises(ValueError, match="approximate"):
        K.forward("gelu", np.ones(2), approximate="exact")
    with pytest.raises(ValueError, match="grad_output"):
        K.backward("sigmoid", np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="axis 2"):
        K.forward("softmax", np.ones((2, 2)), axis=2)


finite32 = st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(
    x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=2, max_side=40), elements=finite32),
    case=st.sampled_from(CASES),
    as64=st.booleans(),
)
def test_random_finite_inputs(x, case, as64):
    name, params = case
    if "axis" in params and x.ndim < 2:
        params = {}
    x = x.astype(np.float64) if as64 else x
    g = np.cos(np.arange(x.size, dtype=x.dtype)).reshape(x.shape)
    y, dx = check(name, params, x, g, case_id(case))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))  # finite in, finite out
