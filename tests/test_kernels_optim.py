"""Compiled optimizer steps (recgrad.kernels.optim) against the NumPy reference steps of recgrad.optim.

The reference is itself checked against PyTorch in tests/test_optim.py; here the compiled path
(engine="compiled") must give the same bits as the reference (engine="numpy"), on the same option
grid and objective (imported from that file). Which path runs by default, and the engine switch,
are tested at the end.
"""

import numpy as np
import pytest
from test_optim import DENSE, SPARSE, fixture_inputs, gen, recgrad_dense_run, recgrad_sparse_run

from recgrad import engine
from recgrad.kernels import get_num_threads
from recgrad.kernels import optim as kernels
from recgrad.nn import Parameter, RowSparseGrad
from recgrad.optim import SGD, Adam, AdamW, SparseAdam


@pytest.fixture(scope="module")
def fixture():
    with np.load(gen.OUTPUT, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


COMPILED = {"engine": "compiled"}
REFERENCE = {"engine": "numpy"}


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
# Compiled == reference, bit for bit, on the option grid of tests/test_optim.py


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("name,optimizer_name,kwargs", DENSE, ids=[entry[0] for entry in DENSE])
def test_compiled_dense_trajectory_equals_reference(fixture, name, optimizer_name, kwargs, dtype):
    """Same objective and grid as the torch-parity tests; A and b after steps 1, 10 and 200."""
    const = fixture_inputs(fixture, "objective")
    reference = recgrad_dense_run(optimizer_name, {**kwargs, **REFERENCE}, dtype, const)
    compiled = recgrad_dense_run(optimizer_name, {**kwargs, **COMPILED}, dtype, const)
    assert sorted(compiled) == list(gen.CHECKPOINTS)
    for step in gen.CHECKPOINTS:
        for ours, theirs in zip(compiled[step], reference[step]):
            assert ours.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(ours, theirs, err_msg=f"step {step}")


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("name,kwargs", SPARSE + [("SparseAdam_decay", {"lr": 0.05, "weight_decay": 0.1})],
                         ids=[entry[0] for entry in SPARSE] + ["SparseAdam_decay"])
def test_compiled_sparse_adam_trajectory_equals_reference(fixture, name, kwargs, dtype):
    inputs = fixture_inputs(fixture, "sparse_inputs")
    reference = recgrad_sparse_run({**kwargs, **REFERENCE}, dtype, inputs)
    compiled = recgrad_sparse_run({**kwargs, **COMPILED}, dtype, inputs)
    for step in gen.SPARSE_CHECKPOINTS:
        np.testing.assert_array_equal(compiled[step], reference[step], err_msg=f"step {step}")


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("maximize", [False, True])
def test_compiled_sparse_sgd_equals_reference_and_leaves_other_rows(dtype, maximize):
    kwargs = {"lr": 0.1, "maximize": maximize}
    (reference,), _ = _run(SGD, {**kwargs, **REFERENCE}, [(9, 3)], dtype, 12, sparse=True)
    (compiled,), _ = _run(SGD, {**kwargs, **COMPILED}, [(9, 3)], dtype, 12, sparse=True)
    np.testing.assert_array_equal(compiled, reference)
    (start,), _ = _run(SGD, kwargs, [(9, 3)], dtype, 0)
    touched = np.unique([r for s in range(12) for r in (s % 5, (3 * s) % 9, 8)])
    untouched = np.setdiff1d(np.arange(9), touched)
    assert untouched.size > 0
    np.testing.assert_array_equal(compiled[untouched], start[untouched])


def test_compiled_sparse_adam_touches_only_the_given_rows():
    """Rows absent from every gradient keep their parameter, m and v exactly (never read or written)."""
    (table,), state = _run(SparseAdam, {"lr": 0.1, "weight_decay": 0.1, **COMPILED}, [(12, 5)], "float64", 6,
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
    reference, reference_state = _run(cls, {**kwargs, **REFERENCE}, shapes, dtype, 5)
    compiled, compiled_state = _run(cls, {**kwargs, **COMPILED}, shapes, dtype, 5)
    for ours, theirs in zip(compiled, reference):
        assert ours.shape == theirs.shape and ours.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(ours, theirs)
    assert_same_state(compiled_state, reference_state)


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("cls,kwargs", [(SparseAdam, {"lr": 0.05, "weight_decay": 0.1}), (SGD, {"lr": 0.1})],
                         ids=["SparseAdam", "SGD"])
def test_lazy_odd_shapes(cls, kwargs, dtype):
    shapes = [(13,), (11, 3), (6, 2, 5), (5, 0)]
    reference, reference_state = _run(cls, {**kwargs, **REFERENCE}, shapes, dtype, 7, sparse=True)
    compiled, compiled_state = _run(cls, {**kwargs, **COMPILED}, shapes, dtype, 7, sparse=True)
    for ours, theirs in zip(compiled, reference):
        np.testing.assert_array_equal(ours, theirs)
    assert_same_state(compiled_state, reference_state)


def test_empty_row_sparse_gradient_counts_a_step_and_moves_nothing():
    table = Parameter(np.ones((3, 2), dtype=np.float32))
    opt = SparseAdam([table], engine="compiled")
    table.grad = RowSparseGrad(np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.float32))
    opt.step()
    np.testing.assert_array_equal(table.data, np.ones((3, 2)))
    assert opt.state[0]["step"] == 1


def test_gradient_of_another_dtype_or_layout_is_converted():
    """A float64 or Fortran-ordered gradient is read as a C-ordered copy in the parameter's dtype."""
    w = Parameter(np.ones((3, 4), dtype=np.float32))
    reference = Parameter(w.data.copy())
    opt, ref_opt = Adam([w], lr=0.1, engine="compiled"), Adam([reference], lr=0.1, engine="numpy")
    grad = np.asfortranarray(np.arange(12.0).reshape(3, 4) - 5.5)
    w.grad, reference.grad = grad, grad.astype(np.float32)
    opt.step()
    ref_opt.step()
    assert w.data.dtype == np.float32
    np.testing.assert_array_equal(w.data, reference.data)


# ----------------------------------------------------------------------------------------------
# State dicts: the layout does not depend on the engine


ROUND_TRIP = [
    (SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}, False),
    (Adam, {"lr": 0.05, "amsgrad": True, "weight_decay": 1e-2}, False),
    (AdamW, {"lr": 0.05, "amsgrad": True}, False),
    (SparseAdam, {"lr": 0.05, "weight_decay": 1e-2}, True),
]


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("first,second", [("compiled", "numpy"), ("numpy", "compiled")],
                         ids=["compiled-then-numpy", "numpy-then-compiled"])
@pytest.mark.parametrize("cls,kwargs,sparse", ROUND_TRIP, ids=[c.__name__ for c, _, _ in ROUND_TRIP])
def test_state_dict_interchange_between_compiled_and_reference(cls, kwargs, sparse, first, second, dtype):
    """5 steps on one path, save, load into an optimizer on the other path, 5 more steps: the same
    parameters and state as 10 reference steps. The loading optimizer keeps its own engine."""
    shapes = [(6, 3), (4,)]
    expected, expected_state = _run(cls, {**kwargs, **REFERENCE}, shapes, dtype, 10, sparse=sparse)

    rng = np.random.default_rng(0)
    params = [Parameter(rng.normal(size=shape).astype(dtype)) for shape in shapes]
    opt = cls(params, **kwargs, engine=first)
    resumed = None
    for step in range(10):
        if step == 5:
            saved = opt.state_dict()
            assert all("engine" not in group for group in saved["param_groups"])
            resumed = cls(params, **kwargs, engine=second)
            resumed.load_state_dict(saved)
            assert resumed.engine == second
            opt = resumed
        for param, grad in zip(params, _grads(params, step, dtype)):
            param.grad = _sparse_grad(param, step, dtype) if sparse else grad
        opt.step()
    for param, value in zip(params, expected):
        np.testing.assert_array_equal(param.data, value)
    assert_same_state(resumed.state, expected_state)


def test_a_checkpoint_whose_groups_hold_a_fused_flag_loads_without_it():
    """State dicts saved when the optimizers took a `fused` flag hold it in each group; it is dropped."""
    w = Parameter(np.ones(3))
    opt = Adam([w], lr=0.05)
    w.grad = np.ones(3)
    opt.step()
    saved = opt.state_dict()
    saved["param_groups"][0]["fused"] = True
    other = Adam([Parameter(np.ones(3))], engine="numpy")
    other.load_state_dict(saved)
    assert "fused" not in other.param_groups[0] and other.param_groups[0]["lr"] == 0.05
    assert other.engine == "numpy"
    assert_same_state(other.state, opt.state)


# ----------------------------------------------------------------------------------------------
# Threads: no reductions, so the result does not depend on the thread count


@pytest.mark.parametrize("cls,kwargs", DENSE_CASES[:1] + DENSE_CASES[2:3], ids=["SGD", "Adam"])
def test_one_thread_is_bit_reproducible_and_equals_all_threads(cls, kwargs, kernel_threads):
    shapes = [(100_003,)]
    before = get_num_threads()
    kernel_threads(1)
    one, one_state = _run(cls, {**kwargs, **COMPILED}, shapes, "float32", 3)
    again, _ = _run(cls, {**kwargs, **COMPILED}, shapes, "float32", 3)
    kernel_threads(before)
    many, many_state = _run(cls, {**kwargs, **COMPILED}, shapes, "float32", 3)
    np.testing.assert_array_equal(one[0], again[0])
    np.testing.assert_array_equal(one[0], many[0])
    assert_same_state(one_state, many_state)


def test_lazy_step_with_one_thread_equals_all_threads(kernel_threads):
    before = get_num_threads()
    rows = np.arange(0, 50_000, 3)

    def run():
        table = Parameter(np.linspace(-1, 1, 800_000, dtype=np.float32).reshape(50_000, 16))
        opt = SparseAdam([table], lr=0.1, engine="compiled")
        for step in range(3):
            table.grad = RowSparseGrad(rows, np.cos(table.data[rows] + step))
            opt.step()
        return table.data

    kernel_threads(1)
    one = run()
    kernel_threads(before)
    np.testing.assert_array_equal(one, run())


# ----------------------------------------------------------------------------------------------
# Errors


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
    for name in ("numpy", "compiled"):
        w = Parameter(np.linspace(-1.0, 1.0, 8))
        opt = cls([w], **kwargs, engine=name)
        with np.errstate(invalid="ignore", over="ignore"):
            for grad in grads:
                w.grad = grad
                opt.step()
        results.append((w.data, opt.state[0]))
    (reference, reference_state), (compiled, compiled_state) = results
    assert np.isnan(compiled).any()
    np.testing.assert_array_equal(compiled, reference)
    assert_same_state({0: compiled_state}, {0: reference_state})


# ----------------------------------------------------------------------------------------------
# Which path runs: the compiled step by default, the reference when asked or not covered


CONSTRUCTED = [
    (SGD, {"momentum": 0.9}, "sgd_step", False),
    (SGD, {}, "sparse_sgd_step", True),
    (Adam, {}, "adam_step", False),
    (AdamW, {}, "adam_step", False),
    (SparseAdam, {}, "sparse_adam_step", True),
]


@pytest.fixture
def kernel_calls(monkeypatch):
    """Count the calls of each kernel wrapper the optimizers use (the wrappers still run)."""
    calls = {}

    def counting(name):
        kernel = getattr(kernels, name)

        def counted(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return kernel(*args, **kwargs)
        return counted

    for name in ("adam_step", "sgd_step", "sparse_adam_step", "sparse_sgd_step"):
        monkeypatch.setattr(kernels, name, counting(name))
    return calls


@pytest.fixture
def fresh_notices(monkeypatch):
    """Each notice is printed once per process; start from none shown."""
    monkeypatch.setattr(engine, "_notices_shown", set())


def _steps(cls, kwargs, sparse, dtype="float32", steps=3, data=None):
    param = Parameter(np.linspace(-1.0, 1.0, 12, dtype=dtype).reshape(4, 3))
    if data is not None:
        param.data = data
    opt = cls([param], **kwargs)
    dtype = param.data.dtype
    for step in range(steps):
        param.grad = _sparse_grad(param, step, dtype) if sparse else _grads([param], step, dtype)[0]
        opt.step()
    return param.data, opt


@pytest.mark.parametrize("dtype", gen.DTYPES)
@pytest.mark.parametrize("cls,kwargs,kernel,sparse", CONSTRUCTED, ids=[k for _, _, k, _ in CONSTRUCTED])
def test_default_construction_runs_the_compiled_step(kernel_calls, cls, kwargs, kernel, sparse, dtype):
    default, opt = _steps(cls, kwargs, sparse, dtype)
    assert opt.engine is None and kernel_calls == {kernel: 3}
    reference, _ = _steps(cls, {**kwargs, **REFERENCE}, sparse, dtype)
    assert kernel_calls == {kernel: 3}  # engine="numpy" called no kernel
    np.testing.assert_array_equal(default, reference)


@pytest.mark.parametrize("cls,kwargs,kernel,sparse", CONSTRUCTED, ids=[k for _, _, k, _ in CONSTRUCTED])
def test_the_process_default_forces_the_reference_unless_an_engine_is_passed(kernel_calls, cls, kwargs, kernel,
                                                                             sparse):
    with engine.default_engine_set("numpy"):
        forced, _ = _steps(cls, kwargs, sparse)
        assert kernel_calls == {}
        _steps(cls, {**kwargs, **COMPILED}, sparse)
        assert kernel_calls == {kernel: 3}
    assert engine.get_default_engine() == "auto"
    default, _ = _steps(cls, kwargs, sparse)
    assert kernel_calls == {kernel: 6}
    np.testing.assert_array_equal(forced, default)


UNCOVERED = [
    ("float16", lambda: np.linspace(-1.0, 1.0, 12, dtype=np.float16).reshape(4, 3), "a float16 array"),
    ("non-contiguous", lambda: np.linspace(-1.0, 1.0, 12).reshape(3, 4).T, "a non-contiguous array"),
]


@pytest.mark.parametrize("label,make,reason", UNCOVERED, ids=[u[0] for u in UNCOVERED])
@pytest.mark.parametrize("cls,kwargs,kernel,sparse", CONSTRUCTED, ids=[k for _, _, k, _ in CONSTRUCTED])
def test_an_uncovered_parameter_runs_the_reference(kernel_calls, fresh_notices, capsys, cls, kwargs, kernel, sparse,
                                                   label, make, reason):
    """By default silently; with engine="compiled" after one notice line (once, not per step)."""
    reference, _ = _steps(cls, {**kwargs, **REFERENCE}, sparse, data=make())
    default, _ = _steps(cls, kwargs, sparse, data=make())
    assert capsys.readouterr().err == ""
    asked, _ = _steps(cls, {**kwargs, **COMPILED}, sparse, data=make())
    assert capsys.readouterr().err == (f"recgrad: notice: the compiled path does not cover {cls.__name__} on "
                                       f"{reason}; running the NumPy reference\n")
    assert kernel_calls == {}
    np.testing.assert_array_equal(default, reference)
    np.testing.assert_array_equal(asked, reference)


def test_a_parameter_replaced_after_construction_is_judged_at_each_step(kernel_calls):
    w = Parameter(np.ones((4, 6)))
    opt = Adam([w])
    w.grad = np.ones((4, 6))
    opt.step()
    w.data = np.ascontiguousarray(w.data.T).T  # same values, no longer C-contiguous
    opt.step()
    assert kernel_calls == {"adam_step": 1}
    reference = Parameter(np.ones((4, 6)))
    ref_opt = Adam([reference], engine="numpy")
    for _ in range(2):
        reference.grad = np.ones((4, 6))
        ref_opt.step()
    np.testing.assert_array_equal(w.data, reference.data)


def test_a_gradient_the_kernels_cannot_take_runs_the_reference(kernel_calls):
    """The reference broadcasts a scalar gradient (as NumPy does); the kernels need the parameter's shape."""
    w, reference = Parameter(np.ones(5)), Parameter(np.ones(5))
    opt, ref_opt = SGD([w], lr=0.1, momentum=0.9), SGD([reference], lr=0.1, momentum=0.9, engine="numpy")
    for param, optimizer in ((w, opt), (reference, ref_opt)):
        for _ in range(2):
            param.grad = np.float64(0.5)
            optimizer.step()
    assert kernel_calls == {}
    np.testing.assert_array_equal(w.data, reference.data)


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, SparseAdam])
def test_a_bad_engine_is_refused_naming_it(cls):
    with pytest.raises(ValueError, match="^engine: expected one of auto, compiled, numpy, got 'fused'$"):
        cls([Parameter(np.ones(3))], engine="fused")
    with pytest.raises(TypeError, match="fused"):
        cls([Parameter(np.ones(3))], fused=True)  # PyTorch's flag: the compiled step is the default here


def test_kernel_wrappers_refuse_arrays_they_cannot_update():
    """Called directly, the kernels name what they got (the optimizers never pass them such arrays)."""
    common = {"lr": 0.1}
    with pytest.raises(TypeError, match="^param: the compiled steps support float32 and float64 arrays, got a "
                                        "float16 array$"):
        kernels.sgd_step(np.ones(3, np.float16), np.ones(3), None, **common)
    with pytest.raises(ValueError, match="^param: the compiled steps need a writeable C-contiguous array, got a "
                                         "non-contiguous array"):
        kernels.sgd_step(np.ones((4, 6))[:, ::2], np.ones((4, 3)), None, **common)
