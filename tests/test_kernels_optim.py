"""Fused optimizer kernels (recgrad.kernels.optim) against the NumPy reference steps of recgrad.optim.

The reference is itself checked against PyTorch in tests/test_optim.py; here the fused path must give
the same bits as the reference, on the same option grid and objective (imported from that file).
"""

import numpy as np
import pytest
from test_optim import DENSE, SPARSE, fixture_inputs, gen, recgrad_dense_run, recgrad_sparse_run

from recgrad.kernels import get_num_threads, set_num_threads
from recgrad.kernels import optim as kernels
from recgrad.nn import Parameter, RowSparseGrad
from recgrad.optim import SGD, Adam, AdamW, SparseAdam


@pytest.fixture(scope="module")
def fixture():
    with np.load(gen.OUTPUT, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _grads(params, step, dtype):
    """A deterministic gradient per parameter and step (any values will do: both paths get the same)."""
    return [(np.cos(p.data * 1.3 + step) + 0.1 * np.sin(7.0 * step + np.arange(p.data.size)).reshape(p.data.shape))
            .astype(dtype) for p in params]


def _sparse_grad(table, step, dtype):
    n = table.shape[0]
    rows = np.unique(np.array([step % min(5, n), (3 * step) % n, n - 1]))
    values = np.cos(table.data[rows] * 1.3 + step).astype(dtype)
    return RowSparseGrad(rows, values)


def _run(cls, kwargs, shapes, dtype, steps, sparse=False, seed=0):
    """Params and optimizer state after `steps` steps of `cls(**kwargs)` on fixed gradients."""
    rng = np.random.default_rng(seed)
    params = [Parameter(rng.normal(size=shape).astype(dtype)) for shape in shapes]
    opt = cls(params, **kwargs)
    for step in range(steps):
        for param, grad in zip(params, _grads(params, step, dtype)):
            param.grad = _sparse_grad(param, step, dtype) if sparse else grad
        opt.step()
    return [p.data for p in params], opt.state


def assert_same_state(state_a, state_b):
    assert state_a.keys() == state_b.keys()
    for index in state_a:
        assert state_a[index].keys() == state_b[index].keys()
        for name, value in state_a[index].items():
            np.testing.assert_array_equal(value, state_b[index][name], err_msg=f"{index}/{name}")


# ----------------------------------------------------------------------------------------------
# Fused == reference, bit for bit, on the option grid of tests/test_optim.py


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("name,optimizer_name,kwargs", DENSE, ids=[entry[0] for entry in DENSE])
def test_fused_dense_trajectory_equals_reference(fixture, name, optimizer_name, kwargs, dtype):
    """Same objective and grid as the torch-parity tests; A and b after steps 1, 10 and 200."""
    const = fixture_inputs(fixture, "objective")
    reference = recgrad_dense_run(optimizer_name, kwargs, dtype, const)
    fused = recgrad_dense_run(optimizer_name, {**kwargs, "fused": True}, dtype, const)
    assert sorted(fused) == list(gen.CHECKPOINTS)
    for step in gen.CHECKPOINTS:
        for ours, theirs in zip(fused[step], reference[step]):
            assert ours.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(ours, theirs, err_msg=f"step {step}")


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("name,kwargs", SPARSE + [("SparseAdam_decay", {"lr": 0.05, "weight_decay": 0.1})],
                         ids=[entry[0] for entry in SPARSE] + ["SparseAdam_decay"])
def test_fused_sparse_adam_trajectory_equals_reference(fixture, name, kwargs, dtype):
    inputs = fixture_inputs(fixture, "sparse_inputs")
    reference = recgrad_sparse_run(kwargs, dtype, inputs)
    fused = recgrad_sparse_run({**kwargs, "fused": True}, dtype, inputs)
    for step in gen.SPARSE_CHECKPOINTS:
        np.testing.assert_array_equal(fused[step], reference[step], err_msg=f"step {step}")


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("maximize", [False, True])
def test_fused_sparse_sgd_equals_reference_and_leaves_other_rows(dtype, maximize):
    kwargs = {"lr": 0.1, "maximize": maximize}
    (reference,), _ = _run(SGD, kwargs, [(9, 3)], dtype, 12, sparse=True)
    (fused,), _ = _run(SGD, {**kwargs, "fused": True}, [(9, 3)], dtype, 12, sparse=True)
    np.testing.assert_array_equal(fused, reference)
    (start,), _ = _run(SGD, kwargs, [(9, 3)], dtype, 0)
    touched = np.unique([r for s in range(12) for r in (s % 5, (3 * s) % 9, 8)])
    untouched = np.setdiff1d(np.arange(9), touched)
    assert untouched.size > 0
    np.testing.assert_array_equal(fused[untouched], start[untouched])


def test_fused_sparse_adam_touches_only_the_given_rows():
    """Rows absent from every gradient keep their parameter, m and v exactly (never read or written)."""
    (table,), state = _run(SparseAdam, {"lr": 0.1, "weight_decay": 0.1, "fused": True}, [(12, 5)], "float64", 6,
                           sparse=True)
    (start,), _ = _run(SparseAdam, {}, [(12, 5)], "float64", 0)
    touched = np.unique([r for s in range(6) for r in (s % 5, (3 * s) % 12, 11)])
    untouched = np.setdiff1d(np.arange(12), touched)
    np.testing.assert_array_equal(table[untouched], start[untouched])
    assert not state[0]["exp_avg"][untouched].any() and not state[0]["exp_avg_sq"][untouched].any()
    assert state[0]["exp_avg"][touched].all()


# ----------------------------------------------------------------------------------------------
# Shapes: odd sizes, size 0, tables with several trailing dimensions


DENSE_CASES = [
    (SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}),
    (SGD, {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "maximize": True}),
    (Adam, {"lr": 0.01, "amsgrad": True, "weight_decay": 1e-2, "maximize": True}),
    (AdamW, {"lr": 0.01, "amsgrad": True}),
    (AdamW, {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-6}),
]


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("cls,kwargs", DENSE_CASES, ids=[c.__name__ for c, _ in DENSE_CASES])
def test_odd_sizes_and_size_zero(cls, kwargs, dtype):
    shapes = [(0,), (1,), (7,), (1031,), (3, 5, 7), (4, 0)]
    reference, reference_state = _run(cls, kwargs, shapes, dtype, 5)
    fused, fused_state = _run(cls, {**kwargs, "fused": True}, shapes, dtype, 5)
    for ours, theirs in zip(fused, reference):
        assert ours.shape == theirs.shape and ours.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(ours, theirs)
    assert_same_state(fused_state, reference_state)


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("cls,kwargs", [(SparseAdam, {"lr": 0.05, "weight_decay": 0.1}), (SGD, {"lr": 0.1})],
                         ids=["SparseAdam", "SGD"])
def test_lazy_odd_shapes(cls, kwargs, dtype):
    shapes = [(13,), (11, 3), (6, 2, 5), (5, 0)]
    reference, reference_state = _run(cls, kwargs, shapes, dtype, 7, sparse=True)
    fused, fused_state = _run(cls, {**kwargs, "fused": True}, shapes, dtype, 7, sparse=True)
    for ours, theirs in zip(fused, reference):
        np.testing.assert_array_equal(ours, theirs)
    assert_same_state(fused_state, reference_state)


def test_empty_row_sparse_gradient_counts_a_step_and_moves_nothing():
    table = Parameter(np.ones((3, 2), dtype=np.float32))
    opt = SparseAdam([table], fused=True)
    table.grad = RowSparseGrad(np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.float32))
    opt.step()
    np.testing.assert_array_equal(table.data, np.ones((3, 2)))
    assert opt.state[0]["step"] == 1


def test_gradient_of_another_dtype_or_layout_is_converted():
    """A float64 or Fortran-ordered gradient is read as a C-ordered copy in the parameter's dtype."""
    w = Parameter(np.ones((3, 4), dtype=np.float32))
    reference = Parameter(w.data.copy())
    opt, ref_opt = Adam([w], lr=0.1, fused=True), Adam([reference], lr=0.1)
    grad = np.asfortranarray(np.arange(12.0).reshape(3, 4) - 5.5)
    w.grad, reference.grad = grad, grad.astype(np.float32)
    opt.step()
    ref_opt.step()
    assert w.data.dtype == np.float32
    np.testing.assert_array_equal(w.data, reference.data)


# ----------------------------------------------------------------------------------------------
# State dicts: the layout does not depend on `fused`


ROUND_TRIP = [
    (SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}, False),
    (Adam, {"lr": 0.05, "amsgrad": True, "weight_decay": 1e-2}, False),
    (AdamW, {"lr": 0.05, "amsgrad": True}, False),
    (SparseAdam, {"lr": 0.05, "weight_decay": 1e-2}, True),
]


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("first,second", [(True, False), (False, True)], ids=["fused-then-numpy", "numpy-then-fused"])
@pytest.mark.parametrize("cls,kwargs,sparse", ROUND_TRIP, ids=[c.__name__ for c, _, _ in ROUND_TRIP])
def test_state_dict_interchange_between_fused_and_reference(cls, kwargs, sparse, first, second, dtype):
    """5 steps on one path, save, load into an optimizer on the other path, 5 more steps: the same
    parameters and state as 10 reference steps. The loading optimizer keeps its own `fused`."""
    shapes = [(6, 3), (4,)]
    expected, expected_state = _run(cls, kwargs, shapes, dtype, 10, sparse=sparse)

    rng = np.random.default_rng(0)
    params = [Parameter(rng.normal(size=shape).astype(dtype)) for shape in shapes]
    opt = cls(params, **kwargs, fused=first)
    resumed = None
    for step in range(10):
        if step == 5:
            saved = opt.state_dict()
            resumed = cls(params, **kwargs, fused=second)
            resumed.load_state_dict(saved)
            assert all(group["fused"] is second for group in resumed.param_groups)
            opt = resumed
        for param, grad in zip(params, _grads(params, step, dtype)):
            param.grad = _sparse_grad(param, step, dtype) if sparse else grad
        opt.step()
    for param, value in zip(params, expected):
        np.testing.assert_array_equal(param.data, value)
    assert_same_state(resumed.state, expected_state)


def test_state_dict_records_fused_and_an_old_checkpoint_without_it_loads():
    w = Parameter(np.ones(3))
    opt = Adam([w], fused=True)
    w.grad = np.ones(3)
    opt.step()
    saved = opt.state_dict()
    assert saved["param_groups"][0]["fused"] is True
    del saved["param_groups"][0]["fused"]
    other = Adam([Parameter(np.ones(3))], fused=True)
    other.load_state_dict(saved)
    assert other.param_groups[0]["fused"] is True
    assert_same_state(other.state, opt.state)


# ----------------------------------------------------------------------------------------------
# Threads: no reductions, so the result does not depend on the thread count


@pytest.mark.parametrize("cls,kwargs", DENSE_CASES[:1] + DENSE_CASES[2:3], ids=["SGD", "Adam"])
def test_one_thread_is_bit_reproducible_and_equals_all_threads(cls, kwargs):
    shapes = [(100_003,)]
    before = get_num_threads()
    try:
        set_num_threads(1)
        one, one_state = _run(cls, {**kwargs, "fused": True}, shapes, "float32", 3)
        again, _ = _run(cls, {**kwargs, "fused": True}, shapes, "float32", 3)
    finally:
        set_num_threads(before)
    many, many_state = _run(cls, {**kwargs, "fused": True}, shapes, "float32", 3)
    np.testing.assert_array_equal(one[0], again[0])
    np.testing.assert_array_equal(one[0], many[0])
    assert_same_state(one_state, many_state)


def test_lazy_step_with_one_thread_equals_all_threads():
    before = get_num_threads()
    rows = np.arange(0, 50_000, 3)

    def run():
        table = Parameter(np.linspace(-1, 1, 800_000, dtype=np.float32).reshape(50_000, 16))
        opt = SparseAdam([table], lr=0.1, fused=True)
        for step in range(3):
            table.grad = RowSparseGrad(rows, np.cos(table.data[rows] + step))
            opt.step()
        return table.data

    try:
        set_num_threads(1)
        one = run()
    finally:
        set_num_threads(before)
    np.testing.assert_array_equal(one, run())


# ----------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, SparseAdam])
def test_fused_refuses_other_dtypes_and_non_contiguous_params_at_construction(cls):
    for dtype in (np.float16, np.int64):  # Parameter() casts these; data assigned later is not cast
        param = Parameter(np.ones(3))
        param.data = np.ones(3, dtype=dtype)
        with pytest.raises(TypeError, match="^params: fused=True supports float32 and float64"):
            cls([param], fused=True)
    with pytest.raises(ValueError, match="^params: fused=True needs a writeable C-contiguous"):
        cls([Parameter(np.ones((4, 6))[:, ::2])], fused=True)
    with pytest.raises(ValueError, match="C-contiguous"):
        cls([{"params": [Parameter(np.ones((4, 6)).T)], "fused": True}])
    with pytest.raises(TypeError, match="^fused"):
        cls([Parameter(np.ones(3))], fused="yes")
    cls([Parameter(np.ones((4, 6))[:, ::2])], fused=False)  # the reference path takes any layout


def test_fused_refuses_a_parameter_made_non_contiguous_after_construction():
    w = Parameter(np.ones((4, 6)))
    opt = Adam([w], fused=True)
    w.data = np.ones((6, 4)).T
    w.grad = np.ones((4, 6))
    with pytest.raises(ValueError, match="C-contiguous"):
        opt.step()


def test_kernel_wrappers_validate_their_arrays():
    p = np.zeros((4, 3))
    common = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "step_size": 1e-3}
    with pytest.raises(ValueError, match="^grad: shape"):
        kernels.adam_step(p, np.zeros(12), np.zeros_like(p), np.zeros_like(p), None, sqrt_bias_correction2=1.0,
                          **common)
    with pytest.raises(ValueError, match="^exp_avg_sq"):
        kernels.adam_step(p, np.zeros_like(p), np.zeros_like(p), np.zeros((4, 3), np.float32), None,
                          sqrt_bias_correction2=1.0, **common)
    with pytest.raises(ValueError, match="^momentum_buffer"):
        kernels.sgd_step(p, np.zeros_like(p), np.zeros(3), lr=0.1, momentum=0.9)
    m, v = np.zeros_like(p), np.zeros_like(p)
    with pytest.raises(IndexError, match="^rows"):
        kernels.sparse_adam_step(p, np.array([4]), np.zeros((1, 3)), m, v, **common)
    with pytest.raises(IndexError, match="^rows"):
        kernels.sparse_sgd_step(p, np.array([-1]), np.zeros((1, 3)), lr=0.1)
    with pytest.raises(ValueError, match="^rows: .*unique sorted"):
        kernels.sparse_sgd_step(p, np.array([2, 1]), np.zeros((2, 3)), lr=0.1)
    with pytest.raises(TypeError, match="^rows"):
        kernels.sparse_sgd_step(p, np.array([1.0]), np.zeros((1, 3)), lr=0.1)
    with pytest.raises(ValueError, match="^values"):
        kernels.sparse_sgd_step(p, np.array([1]), np.zeros((1, 4)), lr=0.1)
    with pytest.raises(ValueError, match="^param: .*C-contiguous"):
        kernels.sparse_sgd_step(np.zeros((3, 4)).T, np.array([1]), np.zeros((1, 3)), lr=0.1)
    read_only = np.zeros(3)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        kernels.sgd_step(read_only, np.zeros(3), None, lr=0.1)
    np.testing.assert_array_equal(p, 0.0)  # nothing was written by a refused call


@pytest.mark.parametrize("cls,kwargs", [(Adam, {"lr": 0.1, "amsgrad": True, "weight_decay": 0.1}),
                                        (AdamW, {"lr": 0.1, "amsgrad": True}),
                                        (SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1})],
                         ids=["Adam", "AdamW", "SGD"])
def test_non_finite_gradients_propagate_as_in_the_reference(cls, kwargs):
    """NaN and inf in a gradient (and the NaN they leave in v and v_max) give the reference's values
    at every position, including np.maximum's NaN propagation in AMSGrad."""
    grads = [np.array([1.0, np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, 2.0]),
             np.array([0.5, 1.0, 1.0, 1.0, -0.0, 0.0, 1e30, np.nan])]
    results = []
    for fused in (False, True):
        w = Parameter(np.linspace(-1.0, 1.0, 8))
        opt = cls([w], **kwargs, fused=fused)
        with np.errstate(invalid="ignore", over="ignore"):
            for grad in grads:
                w.grad = grad
                opt.step()
        results.append((w.data, opt.state[0]))
    (reference, reference_state), (fused, fused_state) = results
    assert np.isnan(fused).any()
    np.testing.assert_array_equal(fused, reference)
    assert_same_state({0: fused_state}, {0: reference_state})
