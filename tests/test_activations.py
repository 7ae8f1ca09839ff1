"""recgrad.activations: finite differences, closed forms, numerics, dtypes and PyTorch parity."""

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import recgrad.activations as A
from recgrad import gradcheck

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "activations.npz"
EDGES = np.array([0.0, 1e-8, -1e-8, 20.0, -20.0, 1e4, -1e4])
SHAPES = [(), (7,), (3, 4), (2, 3, 4)]

# name -> (f, f'), each a function of x only.
ELEMENTWISE = {
    "sigmoid": (A.sigmoid, A.sigmoid_grad),
    "tanh": (A.tanh, A.tanh_grad),
    "relu": (A.relu, A.relu_grad),
    "gelu": (A.gelu, A.gelu_grad),
    "gelu_tanh": (lambda x: A.gelu(x, approximate="tanh"), lambda x: A.gelu_grad(x, approximate="tanh")),
    "silu": (A.silu, A.silu_grad),
    "swish": (lambda x: A.swish(x, beta=1.5), lambda x: A.swish_grad(x, beta=1.5)),
    "swish_negative_beta": (lambda x: A.swish(x, beta=-0.7), lambda x: A.swish_grad(x, beta=-0.7)),
}
TOLERANCE = {"float32": dict(rtol=1e-5, atol=2e-6), "float64": dict(rtol=1e-6, atol=1e-12)}


def load_generator():
    """The fixture generator script, imported as a module (its `reference()` runs torch live)."""
    script = ROOT / "scripts" / "fixtures" / "make_activations.py"
    spec = importlib.util.spec_from_file_location("make_activations", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def elementwise_check(f, f_grad):
    return lambda inputs, g: (g * f_grad(inputs[0]),)


# ---------------------------------------------------------------- finite differences (float64)


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("shape", SHAPES)
def test_grad_matches_finite_differences_random(name, shape):
    f, f_grad = ELEMENTWISE[name]
    x = 2.5 * np.random.default_rng(1).standard_normal(shape)
    if name == "relu":
        x = np.where(np.abs(x) < 1e-3, 0.5, x)  # keep central differences off the kink
    ok, max_abs, max_rel = gradcheck(f, (x,), elementwise_check(f, f_grad))
    assert ok, (name, shape, max_abs, max_rel)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_grad_matches_finite_differences_edges(name):
    f, f_grad = ELEMENTWISE[name]
    x = EDGES[np.abs(EDGES) > 1e-6] if name == "relu" else EDGES  # relu: 0 and +-1e-8 straddle the kink
    ok, max_abs, max_rel = gradcheck(f, (x,), elementwise_check(f, f_grad))
    assert ok, (name, max_abs, max_rel)


def test_relu_grad_is_zero_at_the_kink_as_pytorch():
    np.testing.assert_array_equal(A.relu_grad(np.array([-1.0, -0.0, 0.0, 1e-300, 2.0])), [0, 0, 0, 1, 1])


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,axis", [((5,), -1), ((3, 4), -1), ((3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), -1)])
def test_softmax_backward_matches_finite_differences(op, shape, axis):
    x = 3.0 * np.random.default_rng(2).standard_normal(shape)
    forward = getattr(A, op)
    backward = A.softmax_backward if op == "softmax" else A.log_softmax_backward
    ok, max_abs, max_rel = gradcheck(
        lambda v: forward(v, axis=axis),
        (x,),
        lambda inputs, g: (backward(g, forward(inputs[0], axis=axis), axis=axis),),
    )
    assert ok, (op, shape, axis, max_abs, max_rel)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_backward_finite_differences_at_extreme_logits(op):
    x = np.array([[0.0, 1e-8, -1e-8, 20.0], [-20.0, 1e4, -1e4, 0.0]])
    forward = getattr(A, op)
    backward = A.softmax_backward if op == "softmax" else A.log_softmax_backward
    ok, max_abs, max_rel = gradcheck(forward, (x,), lambda inputs, g: (backward(g, forward(inputs[0])),))
    assert ok, (op, max_abs, max_rel)


@pytest.mark.parametrize("shape,axis", [((4,), -1), ((3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), -1)])
def test_softmax_jacobian_matches_finite_differences(shape, axis):
    x = 2.0 * np.random.default_rng(3).standard_normal(shape)
    jacobian = A.softmax_jacobian(x, axis=axis)
    k = shape[axis]
    other = np.moveaxis(x, axis, -1).shape[:-1]
    assert jacobian.shape == other + (k, k)
    eps = 1e-6
    numeric = np.zeros_like(jacobian)
    for j in range(k):
        step = np.zeros(k)
        step[j] = eps
        step = np.moveaxis(np.broadcast_to(step, other + (k,)), -1, axis)
        column = (A.softmax(x + step, axis=axis) - A.softmax(x - step, axis=axis)) / (2 * eps)
        numeric[..., :, j] = np.moveaxis(column, axis, -1)
    np.testing.assert_allclose(jacobian, numeric, rtol=1e-6, atol=1e-9)


def test_softmax_jacobian_is_not_only_its_diagonal():
    s = A.softmax(np.array([1.0, 2.0, 3.0]))
    jacobian = A.softmax_jacobian(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(np.diag(jacobian), s * (1 - s), rtol=1e-15)
    np.testing.assert_allclose(jacobian, np.diag(s) - np.outer(s, s), rtol=1e-15)
    assert np.all(jacobian[~np.eye(3, dtype=bool)] < 0)  # -s_i s_j off the diagonal
    np.testing.assert_allclose(jacobian.sum(axis=-1), 0.0, atol=1e-16)
    np.testing.assert_allclose(jacobian, jacobian.T, rtol=0, atol=0)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_backward_is_the_jacobian_transpose_product(axis):
    rng = np.random.default_rng(4)
    x, g = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    jacobian = A.softmax_jacobian(x, axis=axis)
    g_last = np.moveaxis(g, axis, -1)
    expected = np.moveaxis(np.einsum("...ij,...i->...j", jacobian, g_last), -1, axis)
    grad_input = A.softmax_backward(g, A.softmax(x, axis=axis), axis=axis)
    np.testing.assert_allclose(grad_input, expected, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- closed forms


def test_closed_forms():
    assert A.sigmoid(0.0) == 0.5
    assert A.sigmoid_grad(0.0) == 0.25
    assert A.tanh(0.0) == 0.0 and A.tanh_grad(0.0) == 1.0
    assert A.relu(-2.0) == 0.0 and A.relu(3.0) == 3.0
    assert A.gelu(0.0) == 0.0 and A.gelu(0.0, approximate="tanh") == 0.0
    assert A.gelu_grad(0.0) == 0.5 and A.gelu_grad(0.0, approximate="tanh") == 0.5
    Phi1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert A.gelu(1.0) == pytest.approx(Phi1, rel=1e-15)
    assert A.gelu_grad(1.0) == pytest.approx(Phi1 + math.exp(-0.5) / math.sqrt(2 * math.pi), rel=1e-15)
    assert A.gelu(1.0, approximate="tanh") == pytest.approx(
        0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * (1 + 0.044715))), rel=1e-15
    )
    assert A.silu(0.0) == 0.0 and A.silu_grad(0.0) == 0.5
    assert A.swish(2.0, beta=0.0) == 1.0  # beta = 0 is x / 2
    assert A.swish(1.0, beta=2.0) == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-15)
    np.testing.assert_allclose(A.softmax(np.zeros(4)), 0.25, rtol=0)
    np.testing.assert_allclose(A.log_softmax(np.zeros(4)), -math.log(4), rtol=1e-15)
    np.testing.assert_allclose(A.softmax(np.array([0.0, math.log(3.0)])), [0.25, 0.75], rtol=1e-15)


def test_tails_keep_relative_precision():
    # 1 - sigmoid(30) rounds to 0 but sigmoid'(30) = e^-30 / (1 + e^-30)^2 does not.
    assert A.sigmoid_grad(30.0) == pytest.approx(math.exp(-30) / (1 + math.exp(-30)) ** 2, rel=1e-14)
    assert A.tanh_grad(20.0) == pytest.approx(1 / math.cosh(20.0) ** 2, rel=1e-14)
    # gelu(-10) = -10 Phi(-10) = -10 erfc(10 / sqrt 2) / 2, where 1 + erf cancels to garbage.
    assert A.gelu(-10.0) == pytest.approx(-5 * math.erfc(10 / math.sqrt(2)), rel=1e-14)
    assert A.silu(-40.0) == pytest.approx(-40 / (1 + math.exp(40)), rel=1e-14)


def test_silu_is_swish_with_beta_one():
    x = np.random.default_rng(5).standard_normal(20)
    np.testing.assert_array_equal(A.silu(x), A.swish(x, 1.0))
    np.testing.assert_array_equal(A.silu_grad(x), A.swish_grad(x))


def test_gelu_tanh_approximates_exact_gelu():
    x = np.linspace(-6, 6, 201)
    assert np.max(np.abs(A.gelu(x, "tanh") - A.gelu(x))) < 1e-3


def test_bad_approximate_raises_naming_it():
    with pytest.raises(ValueError, match="approximate.*'erf'"):
        A.gelu(np.ones(2), approximate="erf")
    with pytest.raises(ValueError, match="approximate.*'Tanh'"):
        A.gelu_grad(np.ones(2), approximate="Tanh")


def test_shape_mismatch_in_backward_raises():
    with pytest.raises(ValueError, match="grad_output.*softmax_output"):
        A.softmax_backward(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="grad_output.*log_softmax_output"):
        A.log_softmax_backward(np.ones(3), np.ones(4))


# ---------------------------------------------------------------- numerics


def test_sigmoid_and_friends_at_infinity():
    inf = np.array([np.inf, -np.inf])
    np.testing.assert_array_equal(A.sigmoid(inf), [1.0, 0.0])
    np.testing.assert_array_equal(A.sigmoid_grad(inf), [0.0, 0.0])
    np.testing.assert_array_equal(A.tanh(inf), [1.0, -1.0])
    np.testing.assert_array_equal(A.tanh_grad(inf), [0.0, 0.0])
    for approximate in ("none", "tanh"):  # the limits (torch gives NaN at -inf and for the derivatives)
        np.testing.assert_array_equal(A.gelu(inf, approximate), [np.inf, 0.0])
        np.testing.assert_array_equal(A.gelu_grad(inf, approximate), [1.0, 0.0])
    np.testing.assert_array_equal(A.silu(inf), [np.inf, 0.0])
    np.testing.assert_array_equal(A.silu_grad(inf), [1.0, 0.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_finite_inputs_give_the_limits(dtype):
    # x^3 (tanh-GELU), x^2 (GELU's density) and beta x (swish) would overflow here without clipping.
    big = np.finfo(dtype).max
    x = np.array([1e4, -1e4, 1e20, -1e20, big, -big], dtype=dtype)
    positive = x > 0
    for name in ("gelu", "gelu_tanh", "silu", "swish"):
        f, f_grad = ELEMENTWISE[name]
        np.testing.assert_array_equal(f(x), np.where(positive, x, 0.0), err_msg=name)
        np.testing.assert_array_equal(f_grad(x), np.where(positive, 1.0, 0.0), err_msg=name)
    np.testing.assert_array_equal(A.swish(x, beta=1e30), np.where(positive, x, 0.0))  # beta x overflows to inf
    np.testing.assert_array_equal(A.swish_grad(x, beta=1e30), np.where(positive, 1.0, 0.0))
    np.testing.assert_array_equal(A.sigmoid_grad(x), 0.0)
    np.testing.assert_array_equal(A.tanh_grad(x), 0.0)


def test_softmax_with_masked_logits():
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, -np.inf], [-np.inf, 5.0, -np.inf]])
    s = A.softmax(x)
    np.testing.assert_allclose(s[0], [1 / (1 + math.e), 0.0, math.e / (1 + math.e)], rtol=1e-15)
    assert np.all(np.isnan(s[1]))  # all masked: NaN, as torch
    np.testing.assert_array_equal(s[2], [0.0, 1.0, 0.0])
    y = A.log_softmax(x)
    assert y[0, 1] == -np.inf and np.all(np.isnan(y[1])) and y[2, 1] == 0.0
    g = np.ones_like(x)
    assert A.softmax_backward(g, s)[0, 1] == 0.0
    assert np.all(np.isnan(A.softmax_backward(g, s)[1]))


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_nan_propagates(name):
    f, f_grad = ELEMENTWISE[name]
    x = np.array([np.nan, 1.0], dtype=np.float32)
    assert np.isnan(f(x)[0]) and np.isnan(f_grad(x)[0]) and np.isfinite(f(x)[1])


def finite_arrays(dtype):
    return arrays(
        dtype,
        array_shapes(min_dims=1, max_dims=3, max_side=5),
        elements=st.floats(allow_nan=False, allow_infinity=False, width=np.dtype(dtype).itemsize * 8),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_input_gives_finite_output_without_warnings(dtype):
    @settings(max_examples=60, deadline=None)
    @given(x=finite_arrays(dtype))
    def check(x):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
                outputs = [fn(x) for pair in ELEMENTWISE.values() for fn in pair]
                log_outputs = []
                for axis in range(x.ndim):
                    s, y = A.softmax(x, axis=axis), A.log_softmax(x, axis=axis)
                    outputs += [s, A.softmax_jacobian(x, axis=axis)]
                    log_outputs.append(y)
                    g = np.ones_like(x)
                    outputs += [A.softmax_backward(g, s, axis=axis), A.log_softmax_backward(g, y, axis=axis)]
        for out in outputs:
            assert out.dtype == dtype
            assert np.all(np.isfinite(out))
        # log_softmax is x - max - log(sum): when a row spans more than the float range (e.g.
        # [1.8e308, -1e292]) the exact value is below -max_float and -inf is its correct rounding,
        # as in torch. Everything else must be finite.
        for y in log_outputs:
            assert y.dtype == dtype
            assert np.all(np.isfinite(y) | np.isneginf(y))

    check()


def test_log_softmax_beyond_the_float_range_rounds_to_minus_inf_without_warning():
    x = np.array([1e308, -1e308])  # log_softmax[1] = -2e308 exactly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(A.log_softmax(x), [0.0, -np.inf])
        np.testing.assert_array_equal(A.softmax(x), [1.0, 0.0])


# ---------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(dtype):
    x = np.linspace(-3, 3, 12, dtype=dtype).reshape(3, 4)
    for f, f_grad in ELEMENTWISE.values():
        assert f(x).dtype == dtype and f_grad(x).dtype == dtype
        assert f(x).shape == x.shape
    for fn in (A.softmax, A.log_softmax, A.softmax_jacobian):
        assert fn(x).dtype == dtype
    assert A.softmax_backward(x, A.softmax(x)).dtype == dtype
    assert A.log_softmax_backward(x, A.log_softmax(x)).dtype == dtype


def test_integers_are_promoted_to_float64():
    x = np.array([[-2, 0, 3]])
    for f, f_grad in ELEMENTWISE.values():
        assert f(x).dtype == np.float64 and f_grad(x).dtype == np.float64
    np.testing.assert_allclose(A.sigmoid(x), A.sigmoid(x.astype(np.float64)), rtol=0)
    assert A.softmax_jacobian(x).dtype == np.float64
    assert A.softmax_backward(np.ones((1, 3), dtype=int), A.softmax(x)).dtype == np.float64


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_float32_tails_keep_relative_precision(name):
    # No cancellation: 1 + erf(x / sqrt 2) or 1 - tanh^2 in float32 would have relative error ~1
    # in the tails. What remains is the rounding of intermediate arguments (x / sqrt 2, beta x),
    # amplified by the tails' conditioning (about x^2 for the Gaussian), hence |x| <= 12. atol:
    # below float32's smallest normal for f; for f', near its roots (gelu' and silu' cross 0).
    f, f_grad = ELEMENTWISE[name]
    x32 = np.linspace(-12, 12, 481).astype(np.float32)
    x64 = x32.astype(np.float64)
    np.testing.assert_allclose(f(x32), f(x64), rtol=1e-5, atol=np.finfo(np.float32).tiny)
    np.testing.assert_allclose(f_grad(x32), f_grad(x64), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- PyTorch parity


def check_parity(reference):
    generator = load_generator()
    for name, (f, f_grad) in ELEMENTWISE.items():
        if name not in generator.ELEMENTWISE:
            continue
        x = reference[f"{name}__x"]
        for dtype in generator.DTYPES:
            key, xd = f"{name}__{dtype}", x.astype(dtype)
            np.testing.assert_allclose(f(xd), reference[f"{key}__value"], **TOLERANCE[dtype], err_msg=key)
            np.testing.assert_allclose(
                f_grad(xd), reference[f"{key}__derivative"], **TOLERANCE[dtype], err_msg=key
            )
            assert f(xd).dtype == dtype
    for name, (op, axis) in generator.SOFTMAX_CASES.items():
        x, g = reference[f"{name}__x"], reference[f"{name}__grad_output"]
        backward = A.softmax_backward if op == "softmax" else A.log_softmax_backward
        for dtype in generator.DTYPES:
            key = f"{name}__{dtype}"
            y = getattr(A, op)(x.astype(dtype), axis=axis)
            np.testing.assert_allclose(y, reference[f"{key}__value"], **TOLERANCE[dtype], err_msg=key)
            grad_input = backward(g.astype(dtype), y, axis=axis)
            np.testing.assert_allclose(grad_input, reference[f"{key}__vjp"], **TOLERANCE[dtype], err_msg=key)
            if f"{key}__jacobian" in reference:
                jacobian = A.softmax_jacobian(x.astype(dtype), axis=axis)
                np.testing.assert_allclose(jacobian, reference[f"{key}__jacobian"], **TOLERANCE[dtype])


def test_parity_with_recorded_pytorch():
    with np.load(FIXTURE, allow_pickle=False) as data:
        reference = dict(data)
    assert np.all(np.isnan(reference["softmax_masked__float32__value"][2]))  # the all -inf row
    check_parity(reference)


@pytest.mark.torch
def test_parity_with_live_pytorch():
    pytest.importorskip("torch")
    check_parity(load_generator().reference())
