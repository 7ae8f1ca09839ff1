"""recgrad.nn.Linear: finite differences, PyTorch parity (fixture + live), init, accumulation, state_dict."""

import math
from pathlib import Path

import numpy as np
import pytest

from recgrad import gradcheck
from recgrad.nn import Linear, Sequential

FIXTURE = np.load(Path(__file__).parent / "fixtures" / "init_linear.npz", allow_pickle=False)
CASES = ["f64_batch", "f64_nested", "f64_vector", "f64_nobias", "f32_nested"]


def layer_with(w, b=None):
    """A Linear holding copies of the given weight and (optional) bias."""
    layer = Linear(w.shape[1], w.shape[0], bias=b is not None, rng=0, dtype=w.dtype)
    layer.weight.data[...] = w
    if b is not None:
        layer.bias.data[...] = b
    return layer


def check(fn, inputs, grad_fn):
    ok, max_abs, max_rel = gradcheck(fn, inputs, grad_fn)
    assert ok, (max_abs, max_rel)


@pytest.mark.parametrize("x_shape", [(3,), (5, 3), (2, 4, 3), (2, 1, 3, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_gradients_match_finite_differences(x_shape, bias):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((4, 3))
    b = rng.standard_normal(4)

    def fn(x, w, b):
        return layer_with(w, b if bias else None)(x)

    def grad_fn(inputs, g):
        layer = layer_with(inputs[1], inputs[2] if bias else None)
        layer(inputs[0])
        dx = layer.backward(g)
        db = layer.bias.grad if bias else np.zeros(4)
        return dx, layer.weight.grad, db

    check(fn, (x, w, b), grad_fn)


@pytest.mark.parametrize("case", CASES)
def test_matches_torch_fixture(case):
    get = {key[len(f"linear_{case}_"):]: FIXTURE[key] for key in FIXTURE.files if key.startswith(f"linear_{case}_")}
    bias = "db" in get
    layer = layer_with(get["w"], get["b"] if bias else None)
    tol = 1e-5 if get["x"].dtype == np.float32 else 1e-6
    y = layer(get["x"])
    assert y.dtype == get["x"].dtype
    np.testing.assert_allclose(y, get["y"], rtol=tol, atol=tol * 1e-2)
    dx = layer.backward(get["g"])
    assert dx.dtype == get["x"].dtype and layer.weight.grad.dtype == get["x"].dtype
    np.testing.assert_allclose(dx, get["dx"], rtol=tol, atol=tol * 1e-2)
    np.testing.assert_allclose(layer.weight.grad, get["dw"], rtol=tol, atol=tol * 1e-2)
    if bias:
        np.testing.assert_allclose(layer.bias.grad, get["db"], rtol=tol, atol=tol * 1e-2)
    else:
        assert layer.bias is None and len(layer.parameters()) == 1


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape", [(7,), (6, 7), (3, 2, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_torch_live(dtype, x_shape, bias):
    torch = pytest.importorskip("torch")
    layer = Linear(7, 5, bias=bias, rng=1, dtype=dtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(dtype)
    g = rng.standard_normal(x_shape[:-1] + (5,)).astype(dtype)
    tw = torch.tensor(layer.weight.data, requires_grad=True)
    tb = torch.tensor(layer.bias.data, requires_grad=True) if bias else None
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.linear(tx, tw, tb)
    ty.backward(torch.tensor(g))
    tol = 1e-5 if dtype == np.float32 else 1e-6
    np.testing.assert_allclose(layer(x), ty.detach().numpy(), rtol=tol, atol=tol * 1e-2)
    np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), rtol=tol, atol=tol * 1e-2)
    np.testing.assert_allclose(layer.weight.grad, tw.grad.numpy(), rtol=tol, atol=tol * 1e-2)
    if bias:
        np.testing.assert_allclose(layer.bias.grad, tb.grad.numpy(), rtol=tol, atol=tol * 1e-2)


def test_init_bounds_follow_pytorch_formula():
    """kaiming_uniform_(a=sqrt(5)) gives W ~ U[-1/sqrt(in), 1/sqrt(in)], and so does the bias."""
    layer = Linear(500, 200, rng=0)
    bound = 1.0 / math.sqrt(500)
    w, b = layer.weight.data, layer.bias.data
    assert w.shape == (200, 500) and b.shape == (200,)
    assert np.max(np.abs(w)) <= bound and np.max(np.abs(w)) > 0.999 * bound
    assert np.var(w) == pytest.approx(bound**2 / 3.0, rel=1e-2)
    assert np.max(np.abs(b)) <= bound and np.max(np.abs(b)) > 0.9 * bound
    # torch's own nn.Linear(500, 200), recorded: the same spread.
    assert np.max(np.abs(w)) == pytest.approx(float(FIXTURE["torch_linear_500_200_weight_maxabs"]), rel=1e-3)
    assert np.std(w) == pytest.approx(float(FIXTURE["torch_linear_500_200_weight_std"]), rel=1e-2)
    assert float(FIXTURE["torch_linear_500_200_bias_maxabs"]) <= bound


@pytest.mark.torch
def test_init_bounds_match_torch_live():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.Linear(300, 50, dtype=torch.float64)
    ours = Linear(300, 50, rng=0)
    for name in ("weight", "bias"):
        their = getattr(theirs, name).detach().numpy()
        our = getattr(ours, name).data
        assert np.max(np.abs(their)) <= 1.0 / math.sqrt(300) and np.max(np.abs(our)) <= 1.0 / math.sqrt(300)
    assert np.std(ours.weight.data) == pytest.approx(float(theirs.weight.detach().std()), rel=2e-2)


def test_seeded_init_is_reproducible_and_dtype_kept():
    a, b = Linear(6, 4, rng=3), Linear(6, 4, rng=3)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
    assert not np.array_equal(a.weight.data, Linear(6, 4, rng=4).weight.data)
    c = Linear(6, 4, rng=3, dtype=np.float32)
    assert c.weight.data.dtype == np.float32 and c.bias.data.dtype == np.float32
    np.testing.assert_allclose(c.weight.data, a.weight.data, rtol=1e-6)
    x = np.ones((2, 6), dtype=np.float32)
    assert c(x).dtype == np.float32 and c.backward(np.ones((2, 4), dtype=np.float32)).dtype == np.float32
    rng = np.random.default_rng(3)
    d, e = Linear(6, 4, rng=rng), Linear(6, 4, rng=rng)
    np.testing.assert_array_equal(d.weight.data, a.weight.data)  # the weight is drawn first, then the bias
    assert not np.array_equal(d.weight.data, e.weight.data)


def test_gradients_accumulate_across_backward_calls():
    rng = np.random.default_rng(0)
    layer = Linear(3, 2, rng=0)
    x1, g1 = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    x2, g2 = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    layer(x1)
    layer.backward(g1)
    layer(x2)
    layer.backward(g2)
    np.testing.assert_allclose(layer.weight.grad, g1.T @ x1 + g2.T @ x2, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, g1.sum(0) + g2.sum(0), rtol=1e-12)
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


def test_state_dict_round_trip():
    layer = Linear(4, 3, rng=0)
    state = layer.state_dict()
    assert list(state) == ["weight", "bias"]
    other = Linear(4, 3, rng=1)
    other.load_state_dict(state)
    x = np.random.default_rng(0).standard_normal((2, 4))
    np.testing.assert_array_equal(other(x), layer(x))
    state["weight"][...] = 0.0  # a copy: changing it leaves the layer alone
    assert np.any(layer.weight.data)
    assert list(Linear(4, 3, bias=False).state_dict()) == ["weight"]
    with pytest.raises(KeyError):
        Linear(4, 3, bias=False).load_state_dict(layer.state_dict())


def test_sequential_of_two_linears_matches_finite_differences():
    rng = np.random.default_rng(0)
    shapes = [(5, 3), (5,), (2, 5), (2,)]
    x = rng.standard_normal((2, 4, 3))
    params = [rng.standard_normal(s) for s in shapes]

    def build(w1, b1, w2, b2):
        return Sequential(layer_with(w1, b1), layer_with(w2, b2))

    def fn(x, *params):
        return build(*params)(x)

    def grad_fn(inputs, g):
        net = build(*inputs[1:])
        net(inputs[0])
        dx = net.backward(g)
        return (dx,) + tuple(p.grad for p in net.parameters())

    check(fn, (x, *params), grad_fn)
    net = build(*params)
    assert [name for name, _ in net.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_input_validation():
    layer = Linear(3, 2, rng=0)
    with pytest.raises(ValueError, match=r"x has shape \(4, 5\) but the weight has shape \(2, 3\)"):
        layer(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="x has shape"):
        layer(np.float64(1.0))
    with pytest.raises(TypeError, match="dtype"):
        layer(np.zeros((4, 3), dtype=np.float32))
    assert layer(np.ones((2, 3), dtype=np.int64)).dtype == np.float64  # ints promote to float64
    with pytest.raises(RuntimeError, match="before forward"):
        Linear(3, 2).backward(np.zeros((1, 2)))
    layer(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="grad_output"):
        layer.backward(np.zeros((4, 3)))


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError),
                                        ("3", TypeError)])
def test_feature_count_validation(bad, error):
    with pytest.raises(error, match="in_features"):
        Linear(bad, 2)
    with pytest.raises(error, match="out_features"):
        Linear(2, bad)


def test_dtype_validation_and_repr():
    with pytest.raises(ValueError, match="dtype"):
        Linear(2, 2, dtype=np.int32)
    assert repr(Linear(np.int64(3), 2, bias=False)) == "Linear(in_features=3, out_features=2, bias=False)"
