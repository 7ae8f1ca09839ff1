"""recgrad.init against PyTorch's formulas: fan rules, the gain table, bounds and variances of large draws."""

import math
from pathlib import Path

import numpy as np
import pytest

from recgrad import init

FIXTURE = np.load(Path(__file__).parent / "fixtures" / "init_linear.npz", allow_pickle=False)


def gain_cases():
    for name, param, gain in zip(FIXTURE["gain_names"], FIXTURE["gain_params"], FIXTURE["gains"]):
        yield str(name), None if np.isnan(param) else float(param), float(gain)


# --- fans -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, fans",
    [((3, 5), (5, 3)), ((1, 1), (1, 1)), ((4, 3, 2, 2), (12, 16)), ((6, 2, 3), (6, 18)), ((8, 2, 3, 5, 1), (30, 120))],
)
def test_fan_rule_out_in_receptive(shape, fans):
    assert init.calculate_fan_in_and_fan_out(np.empty(shape)) == fans


def test_fans_match_torch_fixture():
    k = 0
    while f"fan_shape_{k}" in FIXTURE:
        shape = tuple(int(s) for s in FIXTURE[f"fan_shape_{k}"])
        assert init.calculate_fan_in_and_fan_out(np.empty(shape)) == tuple(int(f) for f in FIXTURE[f"fan_{k}"])
        k += 1
    assert k >= 4


@pytest.mark.parametrize("shape", [(), (5,)])
@pytest.mark.parametrize(
    "fill",
    [
        init.calculate_fan_in_and_fan_out,
        init.xavier_uniform_,
        init.xavier_normal_,
        init.kaiming_uniform_,
        init.kaiming_normal_,
    ],
)
def test_fewer_than_two_dims_raises(shape, fill):
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fill(np.zeros(shape))


# --- gains ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, param, gain", list(gain_cases()))
def test_gain_matches_torch_fixture(name, param, gain):
    assert init.calculate_gain(name, param) == pytest.approx(gain, rel=1e-12)
    assert isinstance(init.calculate_gain(name, param), float)


def test_gain_closed_forms():
    assert init.calculate_gain("tanh") == 5.0 / 3.0
    assert init.calculate_gain("relu") == math.sqrt(2.0)
    assert init.calculate_gain("selu") == 0.75
    assert init.calculate_gain("leaky_relu") == math.sqrt(2.0 / (1.0 + 0.01**2))  # param None -> slope 0.01
    assert init.calculate_gain("leaky_relu", 0) == math.sqrt(2.0)
    assert init.calculate_gain("leaky_relu", math.sqrt(5.0)) == pytest.approx(1.0 / math.sqrt(3.0), rel=1e-15)


@pytest.mark.torch
@pytest.mark.parametrize("name, param, _", list(gain_cases()))
def test_gain_matches_torch_live(name, param, _):
    torch = pytest.importorskip("torch")
    assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param), rel=1e-12)


@pytest.mark.parametrize("name", ["softmax", "ReLU", "", None])
def test_unknown_nonlinearity_raises(name):
    with pytest.raises(ValueError, match="nonlinearity"):
        init.calculate_gain(name)


@pytest.mark.parametrize("param", [True, "0.2", float("nan"), [0.1]])
def test_bad_leaky_relu_param_raises(param):
    with pytest.raises(ValueError, match="param"):
        init.calculate_gain("leaky_relu", param)


# --- bounds and variances of large draws -------------------------------------------------------------

SHAPE = (1000, 1000)
FAN_IN, FAN_OUT = 1000, 1000


def uniform_bound_and_draw(name, shape, rng, dtype=np.float64):
    """(expected bound, draw) of a uniform initialiser, the bound from the formula in the brief."""
    fan_in, fan_out = init.calculate_fan_in_and_fan_out(np.empty(shape))
    w = np.empty(shape, dtype=dtype)
    if name == "xavier_uniform":
        return math.sqrt(6.0 / (fan_in + fan_out)), init.xavier_uniform_(w, rng=rng)
    if name == "xavier_uniform_tanh":
        return 5.0 / 3.0 * math.sqrt(6.0 / (fan_in + fan_out)), init.xavier_uniform_(w, gain=5.0 / 3.0, rng=rng)
    if name == "kaiming_uniform":
        return math.sqrt(2.0) * math.sqrt(3.0 / fan_in), init.kaiming_uniform_(w, rng=rng)
    if name == "kaiming_uniform_sqrt5":
        return 1.0 / math.sqrt(fan_in), init.kaiming_uniform_(w, a=math.sqrt(5.0), rng=rng)
    if name == "kaiming_uniform_fan_out_relu":
        bound = math.sqrt(2.0) * math.sqrt(3.0 / fan_out)
        return bound, init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu", rng=rng)
    raise AssertionError(name)


def normal_std_and_draw(name, shape, rng, dtype=np.float64):
    fan_in, fan_out = init.calculate_fan_in_and_fan_out(np.empty(shape))
    w = np.empty(shape, dtype=dtype)
    if name == "xavier_normal":
        return math.sqrt(2.0 / (fan_in + fan_out)), init.xavier_normal_(w, rng=rng)
    if name == "kaiming_normal":
        return math.sqrt(2.0) / math.sqrt(fan_in), init.kaiming_normal_(w, rng=rng)
    if name == "kaiming_normal_fan_out_tanh":
        return 5.0 / 3.0 / math.sqrt(fan_out), init.kaiming_normal_(w, mode="fan_out", nonlinearity="tanh", rng=rng)
    raise AssertionError(name)


UNIFORM = ["xavier_uniform", "xavier_uniform_tanh", "kaiming_uniform", "kaiming_uniform_sqrt5",
           "kaiming_uniform_fan_out_relu"]
NORMAL = ["xavier_normal", "kaiming_normal", "kaiming_normal_fan_out_tanh"]


@pytest.mark.parametrize("name", UNIFORM)
def test_uniform_bound_and_variance(name):
    # A non-square shape so that fan_in and fan_out differ and a mix-up shows.
    bound, w = uniform_bound_and_draw(name, (500, 2000), rng=0)
    assert np.max(np.abs(w)) <= bound
    assert np.max(np.abs(w)) > 0.999 * bound  # 1e6 draws reach within ~1e-6 of the bound
    # Var(U[-b, b]) = b^2 / 3; the sample variance of 1e6 draws has relative s.e. ~ 0.09 %.
    assert np.var(w) == pytest.approx(bound**2 / 3.0, rel=5e-3)
    assert abs(np.mean(w)) < 5.0 * bound / math.sqrt(3.0 * w.size)


@pytest.mark.parametrize("name", NORMAL)
def test_normal_std_and_mean(name):
    std, w = normal_std_and_draw(name, (500, 2000), rng=0)
    assert np.std(w) == pytest.approx(std, rel=5e-3)
    assert abs(np.mean(w)) < 5.0 * std / math.sqrt(w.size)
    # The fourth standardised moment of a normal is 3 (a uniform's is 1.8).
    assert np.mean((w / std) ** 4) == pytest.approx(3.0, rel=0.02)


def test_square_large_draw_variances():
    w = init.xavier_uniform_(np.empty(SHAPE), rng=1)
    assert np.var(w) == pytest.approx(2.0 / (FAN_IN + FAN_OUT), rel=5e-3)
    w = init.kaiming_normal_(np.empty(SHAPE), nonlinearity="relu", rng=1)
    assert np.var(w) == pytest.approx(2.0 / FAN_IN, rel=5e-3)


@pytest.mark.parametrize("name", UNIFORM + NORMAL)
def test_draw_statistics_match_torch_fixture(name):
    """torch's own draws of the same call (recorded) have the same spread as ours."""
    shape = (400, 300)
    if name in UNIFORM:
        _, w = uniform_bound_and_draw(name, shape, rng=2)
        assert np.max(np.abs(w)) == pytest.approx(float(FIXTURE[f"draw_{name}_maxabs"]), rel=1e-3)
    else:
        _, w = normal_std_and_draw(name, shape, rng=2)
    assert np.std(w) == pytest.approx(float(FIXTURE[f"draw_{name}_std"]), rel=1e-2)


def test_four_dimensional_kaiming_uses_receptive_field():
    w = init.kaiming_uniform_(np.empty((64, 16, 5, 5)), nonlinearity="relu", rng=3)
    bound = math.sqrt(2.0) * math.sqrt(3.0 / (16 * 25))
    assert np.max(np.abs(w)) <= bound
    assert np.max(np.abs(w)) > 0.99 * bound
    w = init.xavier_normal_(np.empty((64, 16, 5, 5)), rng=3)
    assert np.std(w) == pytest.approx(math.sqrt(2.0 / (16 * 25 + 64 * 25)), rel=2e-2)


def test_uniform_normal_zeros():
    w = init.uniform_(np.empty((300, 300)), -0.5, 2.0, rng=4)
    assert w.min() >= -0.5 and w.max() < 2.0
    assert np.mean(w) == pytest.approx(0.75, abs=0.01)
    w = init.normal_(np.empty((300, 300)), mean=1.0, std=0.1, rng=4)
    assert np.mean(w) == pytest.approx(1.0, abs=1e-3)
    assert np.std(w) == pytest.approx(0.1, rel=2e-2)
    w = init.zeros_(np.ones((3, 4, 5)))
    assert not np.any(w)
    # uniform_/normal_ accept 1-D arrays (biases, embeddings' rows): no fans involved.
    assert init.normal_(np.empty(7), rng=0).shape == (7,)


# --- in-place contract, dtype, determinism ----------------------------------------------------------

ALL_FILLS = [
    lambda w, rng: init.xavier_uniform_(w, rng=rng),
    lambda w, rng: init.xavier_normal_(w, rng=rng),
    lambda w, rng: init.kaiming_uniform_(w, rng=rng),
    lambda w, rng: init.kaiming_normal_(w, rng=rng),
    lambda w, rng: init.uniform_(w, -1.0, 1.0, rng=rng),
    lambda w, rng: init.normal_(w, 0.0, 0.1, rng=rng),
]


@pytest.mark.parametrize("fill", ALL_FILLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fills_in_place_and_keeps_dtype(fill, dtype):
    w = np.zeros((20, 30), dtype=dtype)
    out = fill(w, 0)
    assert out is w
    assert w.dtype == dtype
    assert np.all(w != 0)


@pytest.mark.parametrize("fill", ALL_FILLS)
def test_same_seed_same_values_and_generator_continues(fill):
    a = fill(np.empty((10, 12)), 7)
    b = fill(np.empty((10, 12)), 7)
    np.testing.assert_array_equal(a, b)
    c = fill(np.empty((10, 12)), np.random.default_rng(7))
    np.testing.assert_array_equal(a, c)  # an int seed is default_rng(seed)
    rng = np.random.default_rng(7)
    first, second = fill(np.empty((10, 12)), rng), fill(np.empty((10, 12)), rng)
    assert not np.array_equal(first, second)  # one Generator continues its stream
    assert not np.array_equal(a, fill(np.empty((10, 12)), 8))
    # float32 gets the float64 draw rounded: the same numbers up to float32 precision.
    np.testing.assert_allclose(fill(np.empty((10, 12), dtype=np.float32), 7), a, rtol=1e-6, atol=1e-7)


def test_float32_bound_respected():
    bound, w = uniform_bound_and_draw("kaiming_uniform", (300, 300), rng=5, dtype=np.float32)
    assert w.dtype == np.float32
    assert np.max(np.abs(w)) <= np.float32(bound)


def test_as_generator():
    rng = np.random.default_rng(0)
    assert init.as_generator(rng) is rng
    assert isinstance(init.as_generator(None), np.random.Generator)
    assert init.as_generator(np.int64(3)).random() == np.random.default_rng(3).random()
    for bad in (1.5, True, np.random.RandomState(0), "0"):
        with pytest.raises(TypeError, match="rng"):
            init.as_generator(bad)


@pytest.mark.parametrize("w", [[[0.0, 1.0]], np.zeros((2, 2), dtype=np.int64), 3.0])
def test_non_float_ndarray_raises_type_error(w):
    with pytest.raises(TypeError, match="w: expected a floating numpy ndarray"):
        init.xavier_uniform_(w)
    with pytest.raises(TypeError, match="w: expected"):
        init.zeros_(w)


@pytest.mark.parametrize("mode", ["fan_avg", "in", None])
def test_bad_mode_raises(mode):
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(np.empty((3, 4)), mode=mode)
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_normal_(np.empty((3, 4)), mode=mode)


def test_mode_is_case_insensitive_as_torch():
    a = init.kaiming_uniform_(np.empty((3, 4)), mode="FAN_OUT", rng=0)
    b = init.kaiming_uniform_(np.empty((3, 4)), mode="fan_out", rng=0)
    np.testing.assert_array_equal(a, b)


def test_kaiming_bad_nonlinearity_and_slope_raise():
    with pytest.raises(ValueError, match="nonlinearity"):
        init.kaiming_uniform_(np.empty((3, 4)), nonlinearity="gelu")
    with pytest.raises(ValueError, match="param"):
        init.kaiming_normal_(np.empty((3, 4)), a=True)


def test_bad_hyper_parameters_raise():
    with pytest.raises(ValueError, match="must not exceed"):
        init.uniform_(np.empty(3), 1.0, 0.0)
    with pytest.raises(ValueError, match="std"):
        init.normal_(np.empty(3), std=-1.0)
    with pytest.raises(ValueError, match="gain"):
        init.xavier_uniform_(np.empty((2, 2)), gain=float("inf"))
    with pytest.raises(ValueError, match="mean"):
        init.normal_(np.empty(3), mean="0")


def test_zero_element_array_is_a_no_op():
    w = np.empty((0, 5))
    assert init.kaiming_uniform_(w, rng=0) is w
    assert init.xavier_normal_(np.empty((0, 0)), rng=0).shape == (0, 0)


def test_kaiming_default_slope_is_zero_not_leaky_relu_default():
    """kaiming's a=0 default gives the relu gain sqrt(2), not calculate_gain('leaky_relu')'s slope 0.01."""
    a = init.kaiming_uniform_(np.empty((50, 40)), rng=0)
    b = init.kaiming_uniform_(np.empty((50, 40)), nonlinearity="relu", rng=0)
    np.testing.assert_array_equal(a, b)
    c = init.kaiming_uniform_(np.empty((50, 40)), a=0.01, rng=0)
    np.testing.assert_allclose(c, a * math.sqrt(1.0 / (1.0 + 0.01**2)), rtol=1e-12)
