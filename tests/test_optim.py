"""Optimizers: PyTorch parity (fixture + live), closed forms, equivalences, convergence, state dicts, errors.

These tests check the NumPy reference steps (engine "numpy", the oracle); tests/test_kernels_optim.py
checks that the compiled steps, which optimizers run by default, equal them bit for bit.
"""

import doctest
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from recgrad import gradcheck
from recgrad.engine import default_engine_set
from recgrad.nn import Parameter, RowSparseGrad
from recgrad.optim import SGD, Adam, AdamW, SparseAdam, adam, adamw, optimizer, sgd, sparse_adam

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "optim.npz"
TOLERANCE = {"float64": 1e-6, "float32": 1e-5}
OPTIMIZERS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW, "SparseAdam": SparseAdam}


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_optim", ROOT / "scripts" / "fixtures" / "make_optim.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
DENSE = gen.dense_grid()
SPARSE = gen.sparse_grid()


@pytest.fixture(autouse=True)
def reference_engine():
    with default_engine_set("numpy"):
        yield


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def assert_close(actual, expected, dtype):
    """Relative tolerance per dtype, with an absolute floor at that tolerance times the array's scale."""
    assert actual.dtype == np.dtype(dtype)
    rtol = TOLERANCE[dtype]
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def recgrad_dense_run(name, kwargs, dtype, const):
    """Our trajectory, driven exactly as gen.torch_dense_run drives torch: {step: (A, b)}."""
    A = Parameter(np.asarray(const["A0"]).astype(dtype))
    b = Parameter(np.asarray(const["b0"]).astype(dtype))
    opt = OPTIMIZERS[name]([A, b], **kwargs)
    sign = gen.loss_sign(kwargs)
    out = {}
    for step in range(1, gen.STEPS + 1):
        grad_A, grad_b = gen.objective_grad(A.data, b.data, const)
        A.grad, b.grad = sign * grad_A, sign * grad_b
        opt.step()
        if step in gen.CHECKPOINTS:
            out[step] = (A.data.copy(), b.data.copy())
    return out


def recgrad_sparse_run(kwargs, dtype, inputs):
    """SparseAdam on a (10, 4) table fed RowSparseGrads with repeated ids: {step: table}."""
    table = Parameter(np.asarray(inputs["table0"]).astype(dtype))
    opt = SparseAdam([table], **kwargs)
    sign = gen.loss_sign(kwargs)
    out = {}
    for step in range(1, gen.SPARSE_STEPS + 1):
        ids = inputs["ids"][step - 1]
        upstream = sign * gen.sparse_upstream(table.data[ids], inputs["targets"][step - 1].astype(dtype))
        opt.zero_grad()
        table.accumulate_grad(RowSparseGrad(ids, upstream))
        opt.step()
        if step in gen.SPARSE_CHECKPOINTS:
            out[step] = table.data.copy()
    return out


def fixture_inputs(data, prefix):
    return {key.split("/", 1)[1]: value for key, value in data.items() if key.startswith(prefix + "/")}


# ----------------------------------------------------------------------------------------------
# PyTorch parity: 200-step trajectories on the grid (fixture always, live when torch is present)


def test_fixture_specs_match_the_generator(fixture):
    """The recorded grid is the grid the tests run (regenerate the fixture after changing it)."""
    specs = json.loads(str(fixture["specs"]))
    assert specs["dense"] == json.loads(json.dumps(DENSE))
    assert specs["sparse"] == json.loads(json.dumps(SPARSE))


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("name,optimizer_name,kwargs", DENSE, ids=[entry[0] for entry in DENSE])
def test_dense_trajectory_matches_fixture(fixture, name, optimizer_name, kwargs, dtype):
    ours = recgrad_dense_run(optimizer_name, kwargs, dtype, fixture_inputs(fixture, "objective"))
    for step, (A, b) in ours.items():
        assert_close(A, fixture[f"{name}/{dtype}/step{step}/A"], dtype)
        assert_close(b, fixture[f"{name}/{dtype}/step{step}/b"], dtype)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("name,optimizer_name,kwargs", DENSE, ids=[entry[0] for entry in DENSE])
def test_dense_trajectory_matches_live_torch(name, optimizer_name, kwargs, dtype):
    pytest.importorskip("torch")
    const = gen.make_objective()
    ours = recgrad_dense_run(optimizer_name, kwargs, dtype, const)
    theirs = gen.torch_dense_run(optimizer_name, kwargs, dtype, const)
    for step in gen.CHECKPOINTS:
        assert_close(ours[step][0], theirs[step][0], dtype)
        assert_close(ours[step][1], theirs[step][1], dtype)


def test_trajectories_move_and_are_option_sensitive(fixture):
    """Guard against a vacuous grid: every option changes torch's trajectory, except dampening without
    momentum and AdamW with weight_decay=0 (== Adam); maximize=True on -f retraces maximize=False on f
    exactly (g is negated first)."""
    final = {name: fixture[f"{name}/float64/step200/A"] for name, _, _ in DENSE}
    assert all(not np.allclose(A, fixture["objective/A0"]) for A in final.values())
    minimizing = [(name, opt, kw) for name, opt, kw in DENSE if not kw["maximize"]]
    unused_dampening = sum(1 for _, opt, kw in minimizing
                           if opt == "SGD" and kw["momentum"] == 0.0 and kw["dampening"] != 0.0)
    adamw_as_adam = sum(1 for _, opt, kw in minimizing if opt == "AdamW" and kw["weight_decay"] == 0.0)
    distinct = len({final[name].tobytes() for name, _, _ in minimizing})
    assert distinct == len(minimizing) - unused_dampening - adamw_as_adam
    for name, opt, kw in DENSE:
        if kw["maximize"]:
            twin = next(n for n, o, k in minimizing if o == opt and k == {**kw, "maximize": False})
            np.testing.assert_array_equal(final[name], final[twin])


def test_objective_gradient_is_correct():
    const = gen.make_objective()
    ok, max_abs, max_rel = gradcheck(
        lambda A, b: np.asarray(gen.objective(A, b, const)),
        (const["A0"], const["b0"]),
        lambda inputs, grad_output: tuple(grad_output * g for g in gen.objective_grad(*inputs, const)),
    )
    assert ok, (max_abs, max_rel)


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("name,kwargs", SPARSE, ids=[entry[0] for entry in SPARSE])
def test_sparse_adam_matches_fixture(fixture, name, kwargs, dtype):
    ours = recgrad_sparse_run(kwargs, dtype, fixture_inputs(fixture, "sparse_inputs"))
    for step, table in ours.items():
        assert_close(table, fixture[f"{name}/{dtype}/step{step}/table"], dtype)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("name,kwargs", SPARSE, ids=[entry[0] for entry in SPARSE])
def test_sparse_adam_matches_live_torch_embedding(name, kwargs, dtype):
    pytest.importorskip("torch")
    inputs = gen.make_sparse_inputs()
    ours = recgrad_sparse_run(kwargs, dtype, inputs)
    theirs = gen.torch_sparse_run(kwargs, dtype, inputs)
    for step in gen.SPARSE_CHECKPOINTS:
        assert_close(ours[step], theirs[step], dtype)
    untouched = [8, 9]  # never looked up: SparseAdam must leave them exactly as they were
    np.testing.assert_array_equal(ours[gen.SPARSE_STEPS][untouched], inputs["table0"][untouched].astype(dtype))


@pytest.mark.torch
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_state_dict_layout_and_values_match_torch(name):
    torch = pytest.importorskip("torch")
    kwargs = {"lr": 0.05, "momentum": 0.9} if name == "SGD" else {"lr": 0.05, "amsgrad": True}
    const = gen.make_objective()
    A, b = Parameter(const["A0"].copy()), Parameter(const["b0"].copy())
    tA = torch.nn.Parameter(torch.tensor(const["A0"]))
    tb = torch.nn.Parameter(torch.tensor(const["b0"]))
    ours = OPTIMIZERS[name]([{"params": [A]}, {"params": [b], "lr": 0.01}], **kwargs)
    theirs = getattr(torch.optim, name)([{"params": [tA]}, {"params": [tb], "lr": 0.01}], **kwargs)
    for _ in range(3):
        A.grad, b.grad = gen.objective_grad(A.data, b.data, const)
        tA.grad, tb.grad = (torch.from_numpy(g) for g in gen.objective_grad(tA.detach().numpy(),
                                                                         tb.detach().numpy(), const))
        ours.step()
        theirs.step()
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert [g["params"] for g in mine["param_groups"]] == [g["params"] for g in reference["param_groups"]]
    for group, ref_group in zip(mine["param_groups"], reference["param_groups"]):
        assert set(group) <= set(ref_group)
        assert all(group[key] == (tuple(ref_group[key]) if key == "betas" else ref_group[key])
                   for key in group if key != "params")
    assert set(mine["state"]) == set(reference["state"])
    for index, entry in mine["state"].items():
        assert set(entry) == set(reference["state"][index])
        for key, value in entry.items():
            expected = reference["state"][index][key]
            if key == "step":
                assert value == int(expected)
            else:
                assert_close(value, expected.numpy(), "float64")


# ----------------------------------------------------------------------------------------------
# Closed forms


@pytest.mark.parametrize("make", [
    lambda p: Adam(p, lr=0.01), lambda p: Adam(p, lr=0.01, amsgrad=True),
    lambda p: AdamW(p, lr=0.01, weight_decay=0.0), lambda p: AdamW(p, lr=0.01, amsgrad=True, weight_decay=0.0),
])
@pytest.mark.parametrize("dtype", gen.DTYPES)
def test_first_adam_step_is_minus_lr_sign_g(make, dtype):
    """m_hat = g and v_hat = g^2 at t = 1, so the step is -lr * g / (|g| + eps) ~ -lr * sign(g)."""
    g = np.array([3.0, -0.2, 1e-3, -50.0], dtype=dtype)
    w = Parameter(np.zeros(4, dtype=dtype))
    opt = make([w])
    w.grad = g
    opt.step()
    np.testing.assert_allclose(w.data, -0.01 * np.sign(g), rtol=1e-5)
    exact = -0.01 * g.astype(np.float64) / (np.abs(g.astype(np.float64)) + 1e-8)
    np.testing.assert_allclose(w.data, exact, rtol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", gen.DTYPES)
def test_eps_placement_adam_on_sqrt_v_hat_sparse_adam_on_sqrt_v(dtype):
    """A gradient equal to eps makes the placement visible at t = 1 (sqrt(v_hat) = |g|):
    dense Adam steps -lr * g / (|g| + eps) = -lr / 2; SparseAdam adds eps to sqrt(v) = |g| sqrt(1 - beta2),
    so it steps -lr / (1 + 1 / sqrt(1 - beta2))."""
    eps = 1e-3 if dtype == "float32" else 1e-8
    w, table = Parameter(np.zeros(1, dtype=dtype)), Parameter(np.zeros((2, 1), dtype=dtype))
    dense, lazy = Adam([w], lr=0.1, eps=eps), SparseAdam([table], lr=0.1, eps=eps)
    w.grad = np.array([eps], dtype=dtype)
    table.grad = RowSparseGrad([0], np.array([[eps]], dtype=dtype))
    dense.step()
    lazy.step()
    np.testing.assert_allclose(w.data, [-0.05], rtol=TOLERANCE[dtype])
    np.testing.assert_allclose(table.data[0], [-0.1 / (1 + 1 / math.sqrt(1 - 0.999))], rtol=TOLERANCE[dtype])


def test_adam_second_step_by_hand():
    beta1, beta2, lr, eps = 0.9, 0.999, 0.1, 1e-8
    g1, g2, theta = 2.0, -1.0, 1.0
    m1, v1 = (1 - beta1) * g1, (1 - beta2) * g1**2
    theta -= lr * (m1 / (1 - beta1)) / (math.sqrt(v1 / (1 - beta2)) + eps)
    m2, v2 = beta1 * m1 + (1 - beta1) * g2, beta2 * v1 + (1 - beta2) * g2**2
    theta -= lr * (m2 / (1 - beta1**2)) / (math.sqrt(v2 / (1 - beta2**2)) + eps)
    w = Parameter(np.array([1.0]))
    opt = Adam([w], lr=lr)
    for g in (g1, g2):
        w.grad = np.array([g])
        opt.step()
    np.testing.assert_allclose(w.data, [theta], rtol=1e-14)


def test_amsgrad_keeps_the_max_of_the_uncorrected_second_moment():
    """A big gradient then small ones: v shrinks but max_exp_avg_sq stays at its peak (uncorrected)."""
    beta2 = 0.999
    w = Parameter(np.array([0.0]))
    opt = Adam([w], lr=0.1, amsgrad=True)
    v = 0.0
    peak = 0.0
    for g in (10.0, 0.1, 0.1):
        w.grad = np.array([g])
        opt.step()
        v = beta2 * v + (1 - beta2) * g * g
        peak = max(peak, v)
    state = opt.state[0]
    np.testing.assert_allclose(state["exp_avg_sq"], [v], rtol=1e-14)
    np.testing.assert_allclose(state["max_exp_avg_sq"], [peak], rtol=1e-14)
    assert state["max_exp_avg_sq"][0] > state["exp_avg_sq"][0]


def test_sgd_momentum_and_nesterov_by_hand():
    lr, mu, tau = 0.1, 0.9, 0.5
    grads = [1.0, 2.0, -1.0]
    for nesterov, dampening in ((False, tau), (True, 0.0)):
        w = Parameter(np.array([0.0]))
        opt = SGD([w], lr=lr, momentum=mu, dampening=dampening, nesterov=nesterov)
        theta, buf = 0.0, None
        for g in grads:
            buf = g if buf is None else mu * buf + (1 - dampening) * g
            theta -= lr * (g + mu * buf if nesterov else buf)
            w.grad = np.array([g])
            opt.step()
        np.testing.assert_allclose(w.data, [theta], rtol=1e-14)


def test_sgd_maximize_negates_before_weight_decay():
    """torch's order: g = -g, then g += wd * theta, so decay still pulls theta towards 0."""
    w = Parameter(np.array([2.0]))
    opt = SGD([w], lr=0.1, weight_decay=0.5, maximize=True)
    w.grad = np.array([1.0])
    opt.step()
    np.testing.assert_allclose(w.data, [2.0 - 0.1 * (-1.0 + 0.5 * 2.0)])


def test_adamw_decay_is_scaled_by_lr():
    """With a zero gradient m = v = 0, so the step is the decay alone: theta * (1 - lr * wd)."""
    w = Parameter(np.array([3.0, -2.0]))
    opt = AdamW([w], lr=0.1, weight_decay=0.2)
    w.grad = np.zeros(2)
    opt.step()
    np.testing.assert_allclose(w.data, np.array([3.0, -2.0]) * (1 - 0.1 * 0.2), rtol=1e-15)


# ----------------------------------------------------------------------------------------------
# Equivalences


def _run(opt, params, grads_fn, steps):
    for _ in range(steps):
        for param, grad in zip(params, grads_fn(params)):
            param.grad = grad
        opt.step()
    return [p.data.copy() for p in params]


def _quadratic_grads(params):
    return [np.arange(1.0, p.data.size + 1).reshape(p.data.shape) * (p.data - 0.5) + np.sin(p.data)
            for p in params]


def _fresh(seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.normal(size=(3, 4))), Parameter(rng.normal(size=5))]


def test_momentum_zero_is_plain_sgd():
    params = _fresh()
    ours = _run(SGD(params, lr=0.05, momentum=0.0, dampening=0.7), params, _quadratic_grads, 20)
    manual = _fresh()
    for _ in range(20):
        for param, grad in zip(manual, _quadratic_grads(manual)):
            param.data = param.data - 0.05 * grad
    for a, b in zip(ours, manual):
        np.testing.assert_array_equal(a, b.data)


def test_dampening_equal_to_momentum_is_the_ema_form():
    """b_1 = g_1 (torch's first step), then b = beta * b + (1 - beta) * g; theta -= lr * b."""
    beta, lr = 0.9, 0.05
    params = _fresh()
    ours = _run(SGD(params, lr=lr, momentum=beta, dampening=beta), params, _quadratic_grads, 30)
    manual, buffers = _fresh(), None
    for _ in range(30):
        grads = _quadratic_grads(manual)
        buffers = grads if buffers is None else [beta * b + (1 - beta) * g for b, g in zip(buffers, grads)]
        for param, b in zip(manual, buffers):
            param.data = param.data - lr * b
    for a, b in zip(ours, manual):
        np.testing.assert_allclose(a, b.data, rtol=1e-13)


def test_adamw_without_decay_is_adam_bitwise():
    kwargs = {"lr": 0.05, "betas": (0.8, 0.99), "amsgrad": True}
    p1, p2 = _fresh(), _fresh()
    a = _run(Adam(p1, **kwargs), p1, _quadratic_grads, 25)
    b = _run(AdamW(p2, weight_decay=0.0, **kwargs), p2, _quadratic_grads, 25)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_adamw_is_decay_then_adam_and_adam_l2_is_gradient_plus_decay():
    lr, wd = 0.05, 0.3
    p1, p2 = _fresh(), _fresh()
    adamw_run = _run(AdamW(p1, lr=lr, weight_decay=wd), p1, _quadratic_grads, 15)
    plain = Adam(p2, lr=lr)
    for _ in range(15):
        for param, grad in zip(p2, _quadratic_grads(p2)):
            param.data *= 1.0 - lr * wd
            param.grad = grad
        plain.step()
    for x, y in zip(adamw_run, p2):
        np.testing.assert_array_equal(x, y.data)

    p3, p4 = _fresh(), _fresh()
    l2_run = _run(Adam(p3, lr=lr, weight_decay=wd), p3, _quadratic_grads, 15)
    by_hand = _run(Adam(p4, lr=lr), p4, lambda ps: [g + wd * p.data for g, p in zip(_quadratic_grads(ps), ps)], 15)
    for x, y in zip(l2_run, by_hand):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(adamw_run[0], l2_run[0])


@pytest.mark.parametrize("maximize", [False, True])
def test_sgd_row_sparse_equals_dense_equivalent(maximize):
    rng = np.random.default_rng(3)
    table0 = rng.normal(size=(8, 3))
    sparse_table, dense_table = Parameter(table0.copy()), Parameter(table0.copy())
    sparse_opt = SGD([sparse_table], lr=0.1, maximize=maximize)
    dense_opt = SGD([dense_table], lr=0.1, maximize=maximize)
    for _ in range(5):
        ids = rng.integers(0, 8, size=6)
        values = rng.normal(size=(6, 3))
        sparse_table.grad = RowSparseGrad(ids, values)
        dense_table.grad = RowSparseGrad(ids, values).to_dense((8, 3))
        sparse_opt.step()
        dense_opt.step()
        np.testing.assert_array_equal(sparse_table.data, dense_table.data)
    assert not np.array_equal(sparse_table.data, table0)


def test_sparse_adam_with_every_row_present_equals_dense_adam_up_to_eps_placement():
    """All rows present every step: the lazy update is dense Adam (eps -> 0 removes the eps difference)."""
    rng = np.random.default_rng(4)
    table0 = rng.normal(size=(5, 3))
    lazy, dense = Parameter(table0.copy()), Parameter(table0.copy())
    lazy_opt, dense_opt = SparseAdam([lazy], lr=0.05, eps=1e-300), Adam([dense], lr=0.05, eps=0.0)
    for _ in range(20):
        grad = np.tanh(lazy.data - 1.0)
        lazy.grad = RowSparseGrad(np.arange(5), grad)
        dense.grad = np.tanh(dense.data - 1.0)
        lazy_opt.step()
        dense_opt.step()
    np.testing.assert_allclose(lazy.data, dense.data, rtol=1e-12)


def test_sparse_adam_is_lazy_where_dense_adam_is_not():
    """A row present at step 1 and absent at step 2: SparseAdam leaves it (and its m, v) alone; dense
    Adam keeps moving it on its momentum and decays its v."""
    lazy, dense = Parameter(np.zeros((3, 2))), Parameter(np.zeros((3, 2)))
    lazy_opt, dense_opt = SparseAdam([lazy], lr=0.1), Adam([dense], lr=0.1)
    first, second = RowSparseGrad([0, 1], np.ones((2, 2))), RowSparseGrad([1], np.ones((1, 2)))
    for grad in (first, second):
        lazy.grad, dense.grad = grad, grad.to_dense((3, 2))
        lazy_opt.step()
        dense_opt.step()
    # eps sits on sqrt(v) before bias correction: the first step is -lr / (1 + eps / sqrt(1 - beta2))
    row0_after_one_step = -0.1 * np.ones(2) / (1 + 1e-8 / math.sqrt(1 - 0.999))
    np.testing.assert_allclose(lazy.data[0], row0_after_one_step, rtol=1e-12)
    np.testing.assert_allclose(lazy_opt.state[0]["exp_avg"][0], 0.1 * np.ones(2))
    assert np.all(dense.data[0] < lazy.data[0])  # dense Adam moved row 0 again on m alone
    np.testing.assert_array_equal(lazy.data[2], [0.0, 0.0])
    assert lazy_opt.state[0]["step"] == 2  # one step count per parameter, not per row


def test_sparse_adam_weight_decay_touches_only_present_rows():
    table = Parameter(np.full((3, 2), 2.0))
    opt = SparseAdam([table], lr=0.1, weight_decay=0.5)
    table.grad = RowSparseGrad([1], np.zeros((1, 2)))
    opt.step()  # zero gradient: only the decoupled decay acts on row 1
    np.testing.assert_allclose(table.data, [[2.0, 2.0], [1.9, 1.9], [2.0, 2.0]], rtol=1e-15)


def test_sparse_adam_empty_gradient_counts_a_step_and_moves_nothing():
    table = Parameter(np.ones((3, 2)))
    opt = SparseAdam([table])
    table.grad = RowSparseGrad(np.zeros(0, dtype=np.int64), np.zeros((0, 2)))
    opt.step()
    np.testing.assert_array_equal(table.data, np.ones((3, 2)))
    assert opt.state[0]["step"] == 1


# ----------------------------------------------------------------------------------------------
# Convergence on a quadratic


QUADRATIC_OPTIMUM = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]])
CURVATURE = np.array([[1.0, 4.0, 0.5], [2.0, 1.5, 3.0]])


@pytest.mark.parametrize("make,steps,tolerance", [
    (lambda p: SGD(p, lr=0.1), 500, 1e-8),
    (lambda p: SGD(p, lr=0.05, momentum=0.9), 500, 1e-8),
    (lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True), 500, 1e-8),
    (lambda p: Adam(p, lr=0.05), 1500, 1e-3),
    (lambda p: Adam(p, lr=0.05, amsgrad=True), 1500, 1e-3),
    (lambda p: AdamW(p, lr=0.05, weight_decay=0.0), 1500, 1e-3),
    (lambda p: SparseAdam(p, lr=0.05), 1500, 1e-3),
], ids=["sgd", "sgd-momentum", "sgd-nesterov", "adam", "amsgrad", "adamw", "sparse-adam"])
def test_converges_on_a_quadratic(make, steps, tolerance):
    """f = 0.5 * sum(c * (theta - theta*)^2), gradient c * (theta - theta*)."""
    theta = Parameter(np.zeros((2, 3)))
    opt = make([theta])
    for _ in range(steps):
        grad = CURVATURE * (theta.data - QUADRATIC_OPTIMUM)
        theta.grad = RowSparseGrad(np.arange(2), grad) if isinstance(opt, SparseAdam) else grad
        opt.step()
    np.testing.assert_allclose(theta.data, QUADRATIC_OPTIMUM, atol=tolerance)


def test_adamw_decay_shrinks_the_optimum():
    theta = Parameter(np.zeros((2, 3)))
    opt = AdamW([theta], lr=0.01, weight_decay=0.5)
    for _ in range(3000):
        theta.grad = CURVATURE * (theta.data - QUADRATIC_OPTIMUM)
        opt.step()
    assert np.all(np.abs(theta.data) <= np.abs(QUADRATIC_OPTIMUM) + 1e-9)
    assert np.linalg.norm(theta.data) < np.linalg.norm(QUADRATIC_OPTIMUM) - 0.1


# ----------------------------------------------------------------------------------------------
# State dicts, param groups, bookkeeping


ROUND_TRIP = [
    (SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}, False),
    (Adam, {"lr": 0.05, "amsgrad": True, "weight_decay": 1e-2}, False),
    (AdamW, {"lr": 0.05, "amsgrad": True}, False),
    (SparseAdam, {"lr": 0.05, "weight_decay": 1e-2}, True),
]


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("cls,kwargs,sparse", ROUND_TRIP, ids=[c.__name__ for c, _, _ in ROUND_TRIP])
def test_state_dict_round_trip_continues_bit_identically(cls, kwargs, sparse, dtype):
    def grads(params, step):
        out = []
        for p in params:
            g = np.cos(p.data + step).astype(dtype)
            out.append(RowSparseGrad([step % 3, 3], g[[step % 3, 3]]) if sparse else g)
        return out

    def steps(opt, params, start, count):
        for step in range(start, start + count):
            for p, g in zip(params, grads(params, step)):
                p.grad = g
            opt.step()

    rng = np.random.default_rng(5)
    original = [Parameter(rng.normal(size=(4, 3)).astype(dtype)), Parameter(rng.normal(size=(5, 2)).astype(dtype))]
    opt = cls([{"params": [original[0]]}, {"params": [original[1]], "lr": 0.01}], **kwargs)
    steps(opt, original, 0, 5)
    saved = opt.state_dict()
    saved_params = [p.data.copy() for p in original]
    steps(opt, original, 5, 5)

    restored = [Parameter(data) for data in saved_params]
    fresh = cls([{"params": [restored[0]]}, {"params": [restored[1]]}], **kwargs)
    fresh.load_state_dict(saved)
    assert fresh.param_groups[1]["lr"] == 0.01
    steps(fresh, restored, 5, 5)
    for a, b in zip(original, restored):
        assert b.data.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a.data, b.data)
    for index, entry in fresh.state.items():
        for key, value in entry.items():
            np.testing.assert_array_equal(value, opt.state[index][key])


def test_state_dict_is_torch_shaped_and_a_copy():
    a, b, c = Parameter(np.ones(2)), Parameter(np.ones(3)), Parameter(np.ones(1))
    opt = Adam([{"params": [a, b]}, {"params": [c], "lr": 0.5}])
    a.grad, c.grad = np.ones(2), np.ones(1)  # b has no gradient: skipped, no state
    opt.step()
    saved = opt.state_dict()
    assert [g["params"] for g in saved["param_groups"]] == [[0, 1], [2]]
    assert saved["param_groups"][1]["lr"] == 0.5 and saved["param_groups"][0]["lr"] == 1e-3
    assert sorted(saved["state"]) == [0, 2]
    assert saved["state"][0]["step"] == 1 and isinstance(saved["state"][0]["step"], int)
    np.testing.assert_array_equal(b.data, np.ones(3))
    before = saved["state"][0]["exp_avg"].copy()
    opt.step()
    np.testing.assert_array_equal(saved["state"][0]["exp_avg"], before)


def test_load_state_dict_rejects_mismatches():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(3))
    opt = SGD([a, b], lr=0.1, momentum=0.9)
    a.grad, b.grad = np.ones(2), np.ones(3)
    opt.step()
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="parameter groups"):
        SGD([{"params": [a]}, {"params": [b]}], lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="group 0"):
        SGD([a], lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="shape"):
        SGD([b, a], lr=0.1, momentum=0.9).load_state_dict(saved)


def test_param_groups_use_their_own_lr_and_inherit_defaults():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    opt = SGD([{"params": [a]}, {"params": b, "lr": 0.5}], lr=0.1, momentum=0.3)
    assert opt.param_groups[1]["momentum"] == 0.3
    a.grad, b.grad = np.ones(2), np.ones(2)
    opt.step()
    np.testing.assert_allclose(a.data, [-0.1, -0.1])
    np.testing.assert_allclose(b.data, [-0.5, -0.5])


@pytest.mark.torch
def test_param_groups_with_different_lr_match_live_torch():
    torch = pytest.importorskip("torch")
    const = gen.make_objective()
    A, b = Parameter(const["A0"].copy()), Parameter(const["b0"].copy())
    tA, tb = torch.nn.Parameter(torch.tensor(const["A0"])), torch.nn.Parameter(torch.tensor(const["b0"]))
    ours = AdamW([{"params": [A], "lr": 0.1}, {"params": [b], "weight_decay": 0.1}], lr=0.01)
    theirs = torch.optim.AdamW([{"params": [tA], "lr": 0.1}, {"params": [tb], "weight_decay": 0.1}], lr=0.01)
    for _ in range(50):
        A.grad, b.grad = gen.objective_grad(A.data, b.data, const)
        tA.grad, tb.grad = (torch.from_numpy(g) for g in gen.objective_grad(tA.detach().numpy(),
                                                                         tb.detach().numpy(), const))
        ours.step()
        theirs.step()
    assert_close(A.data, tA.detach().numpy(), "float64")
    assert_close(b.data, tb.detach().numpy(), "float64")


def test_zero_grad_sets_none_and_parameters_without_grad_are_skipped():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = Adam([a, b], lr=0.1)
    a.grad = np.ones(2)
    opt.step()
    np.testing.assert_array_equal(b.data, np.ones(2))
    assert 1 not in opt.state or not opt.state[1]
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    opt.step()  # nothing has a gradient: nothing moves
    assert opt.state[0]["step"] == 1


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_float32_stays_float32(cls):
    w = Parameter(np.ones((2, 2), dtype=np.float32))
    opt = cls([w], lr=np.float64(0.1), **({"momentum": 0.9} if cls is SGD else {}))
    for _ in range(2):
        w.grad = np.full((2, 2), 0.5, dtype=np.float32)
        opt.step()
    assert w.data.dtype == np.float32
    assert all(v.dtype == np.float32 for v in opt.state[0].values() if isinstance(v, np.ndarray))


def test_closure_is_called_and_its_loss_returned():
    w = Parameter(np.array([1.0]))
    opt = SGD([w], lr=0.1)

    def closure():
        opt.zero_grad()
        w.accumulate_grad(2.0 * w.data)
        return float(w.data[0] ** 2)

    assert opt.step(closure) == 1.0
    np.testing.assert_allclose(w.data, [0.8])


# ----------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("make,argument", [
    (lambda p: SGD(p, lr=-0.1), "lr"),
    (lambda p: SGD(p, momentum=-0.1), "momentum"),
    (lambda p: SGD(p, weight_decay=-1e-3), "weight_decay"),
    (lambda p: SGD(p, nesterov=True), "nesterov"),
    (lambda p: SGD(p, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (lambda p: SGD([{"params": p, "lr": -1.0}]), "lr"),
    (lambda p: Adam(p, lr=-1e-3), "lr"),
    (lambda p: Adam(p, eps=-1e-8), "eps"),
    (lambda p: Adam(p, betas=(1.0, 0.999)), "betas"),
    (lambda p: Adam(p, betas=(0.9, -0.1)), "betas"),
    (lambda p: Adam(p, weight_decay=-1.0), "weight_decay"),
    (lambda p: AdamW(p, lr=-1e-3), "lr"),
    (lambda p: AdamW(p, eps=-1.0), "eps"),
    (lambda p: AdamW(p, betas=(0.9, 1.0)), "betas"),
    (lambda p: AdamW(p, weight_decay=-1e-2), "weight_decay"),
    (lambda p: SparseAdam(p, lr=0.0), "lr"),
    (lambda p: SparseAdam(p, eps=0.0), "eps"),
    (lambda p: SparseAdam(p, betas=(-0.1, 0.999)), "betas"),
    (lambda p: SparseAdam(p, weight_decay=-0.1), "weight_decay"),
])
def test_invalid_hyperparameters_raise_value_error_naming_them(make, argument):
    with pytest.raises(ValueError, match=f"^{argument}"):
        make([Parameter(np.ones(2))])


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, SparseAdam])
def test_bad_params_argument(cls):
    with pytest.raises(ValueError, match="empty"):
        cls([])
    with pytest.raises(TypeError, match="params"):
        cls(Parameter(np.ones(2)))
    with pytest.raises(TypeError, match="Parameters"):
        cls([np.ones(2)])
    p = Parameter(np.ones(2))
    with pytest.raises(ValueError, match="more than once"):
        cls([{"params": [p]}, {"params": [p]}])


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_dense_adam_rejects_row_sparse_grad_pointing_to_sparse_adam(cls):
    table = Parameter(np.ones((3, 2)))
    table.grad = RowSparseGrad([0], np.ones((1, 2)))
    with pytest.raises(TypeError, match="SparseAdam"):
        cls([table]).step()


def test_sparse_adam_rejects_dense_grad():
    table = Parameter(np.ones((3, 2)))
    table.grad = np.ones((3, 2))
    with pytest.raises(TypeError, match="Adam or AdamW"):
        SparseAdam([table]).step()


@pytest.mark.parametrize("kwargs", [{"momentum": 0.9}, {"weight_decay": 1e-2}])
def test_sgd_row_sparse_with_momentum_or_decay_is_refused(kwargs):
    table = Parameter(np.ones((3, 2)))
    table.grad = RowSparseGrad([0], np.ones((1, 2)))
    with pytest.raises(ValueError, match="RowSparseGrad"):
        SGD([table], lr=0.1, **kwargs).step()


@pytest.mark.parametrize("module", [optimizer, sgd, adam, adamw, sparse_adam])
def test_docstring_examples(module):
    failures, _ = doctest.testmod(module, raise_on_error=False)
    assert failures == 0
