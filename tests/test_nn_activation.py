"""recgrad.nn activation modules: backward by finite differences, caching, errors, PyTorch parity,
on both engines (the compiled kernels by default, the NumPy reference with engine="numpy")."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import recgrad.activations as A
from recgrad import engine, gradcheck
from recgrad.kernels import activations as kernels
from recgrad.nn import GELU, LogSoftmax, ReLU, Sequential, Sigmoid, SiLU, Softmax, Swish, Tanh

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "activations.npz"
EDGES = np.array([0.0, 1e-8, -1e-8, 20.0, -20.0, 1e4, -1e4])
SHAPES = [(), (7,), (3, 4), (2, 3, 4)]
TOLERANCE = {"float32": dict(rtol=1e-5, atol=2e-6), "float64": dict(rtol=1e-6, atol=1e-12)}
ENGINES = [None, "numpy"]  # the default (compiled kernels) and the reference

# fixture case name -> module factory (the generator's names; see scripts/fixtures/make_activations.py)
MODULES = {
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "gelu": GELU,
    "gelu_tanh": lambda: GELU(approximate="tanh"),
    "silu": SiLU,
    "swish": lambda: Swish(beta=1.5),
    "softmax_last": lambda: Softmax(axis=-1),
    "softmax_axis1": lambda: Softmax(axis=1),
    "softmax_masked": Softmax,
    "log_softmax_last": LogSoftmax,
    "log_softmax_axis1": lambda: LogSoftmax(axis=1),
    "log_softmax_masked": LogSoftmax,
}
# Distinct modules for the finite-difference checks.
FD_MODULES = {
    name: MODULES[name]
    for name in ("sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "silu", "swish")
    + ("softmax_last", "log_softmax_last")
}
FD_MODULES["softmax_axis0"] = lambda: Softmax(axis=0)
FD_MODULES["log_softmax_axis0"] = lambda: LogSoftmax(axis=0)
FD_MODULES["swish_negative_beta"] = lambda: Swish(beta=-0.7)


def module_gradcheck(module, x):
    """Finite differences of module.forward against module.backward (float64)."""

    def backward(inputs, g):
        module.forward(inputs[0])
        return (module.backward(g),)

    return gradcheck(lambda v: module.forward(v), (x,), backward)


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("name", FD_MODULES)
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_finite_differences_random(name, shape, engine_name):
    if name.endswith("axis0") and shape == ():
        pytest.skip("a 0-d array has no axis 0")
    x = 2.5 * np.random.default_rng(1).standard_normal(shape)
    if name == "relu":
        x = np.where(np.abs(x) < 1e-3, 0.5, x)  # keep central differences off the kink
    with engine.default_engine_set(engine_name):
        ok, max_abs, max_rel = module_gradcheck(FD_MODULES[name](), x)
    assert ok, (name, shape, max_abs, max_rel)


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("name", FD_MODULES)
def test_backward_matches_finite_differences_edges(name, engine_name):
    x = EDGES[np.abs(EDGES) > 1e-6] if name == "relu" else EDGES  # relu: 0 and +-1e-8 straddle the kink
    with engine.default_engine_set(engine_name):
        ok, max_abs, max_rel = module_gradcheck(FD_MODULES[name](), x)
    assert ok, (name, max_abs, max_rel)


def test_backward_uses_the_derivative_functions():
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    pairs = [
        (Sigmoid(), g * A.sigmoid_grad(x)),
        (Tanh(), g * A.tanh_grad(x)),
        (ReLU(), g * A.relu_grad(x)),
        (GELU("tanh"), g * A.gelu_grad(x, "tanh")),
        (Swish(2.0), g * A.swish_grad(x, 2.0)),
        (Softmax(0), A.softmax_backward(g, A.softmax(x, 0), 0)),
        (LogSoftmax(), A.log_softmax_backward(g, A.log_softmax(x))),
    ]
    for module, expected in pairs:
        module.forward(x)
        grad_input = module.backward(g)
        np.testing.assert_allclose(grad_input, expected, rtol=1e-13, atol=1e-15, err_msg=type(module).__name__)


def test_forward_caches_what_backward_needs():
    x = np.random.default_rng(3).standard_normal((2, 4))
    for module in (Sigmoid(), Tanh(), Softmax(), LogSoftmax()):  # the output y
        y = module.forward(x)
        assert module.cache is y
    for module in (ReLU(), GELU(), Swish(0.5), SiLU()):  # the input x
        module.forward(x)
        assert module.cache is x


@pytest.mark.parametrize("name", MODULES)
def test_backward_before_forward_raises(name):
    module = MODULES[name]()
    with pytest.raises(RuntimeError, match=f"{type(module).__name__}.backward called before forward"):
        module.backward(np.ones(3))


def test_grad_output_shape_must_match():
    module = Sigmoid()
    module.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="grad_output"):
        module.backward(np.ones((3, 2)))


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="approximate.*'exact'"):
        GELU(approximate="exact")
    with pytest.raises(TypeError):
        Softmax(axis=1.5)
    with pytest.raises((TypeError, ValueError)):
        Swish(beta="large")
    assert isinstance(Swish(np.float64(2)).beta, float)  # a Python float: float32 stays float32
    assert SiLU().beta == 1.0


def test_no_parameters_and_empty_state():
    for factory in MODULES.values():
        module = factory()
        assert module.parameters() == [] and module.state_dict() == {}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved_through_forward_and_backward(dtype):
    x = np.linspace(-2, 2, 12, dtype=dtype).reshape(3, 4)
    for factory in MODULES.values():
        module = factory()
        assert module.forward(x).dtype == dtype
        assert module.backward(np.ones_like(x)).dtype == dtype


def test_integer_input_is_promoted_to_float64():
    for factory in MODULES.values():
        module = factory()
        assert module.forward(np.array([[1, -2, 3]])).dtype == np.float64
        assert module.backward(np.ones((1, 3), dtype=int)).dtype == np.float64


def test_sequential_of_activations_backpropagates():
    model = Sequential(GELU(), Tanh(), Swish(0.5), LogSoftmax())
    x = np.random.default_rng(4).standard_normal((3, 5))

    def backward(inputs, g):
        model.forward(inputs[0])
        return (model.backward(g),)

    ok, max_abs, max_rel = gradcheck(model.forward, (x,), backward)
    assert ok, (max_abs, max_rel)


# ---------------------------------------------------------------- PyTorch parity


def load_generator():
    """The fixture generator script, imported as a module (its `reference()` runs torch live)."""
    script = ROOT / "scripts" / "fixtures" / "make_activations.py"
    spec = importlib.util.spec_from_file_location("make_activations", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_parity(reference, engine_name):
    """Module forward = torch's value and module backward = torch's x.grad, both dtypes."""
    for name, factory in MODULES.items():
        x, g = reference[f"{name}__x"], reference[f"{name}__grad_output"]
        for dtype in ("float32", "float64"):
            key = f"{name}__{dtype}"
            module = factory()
            module.engine = engine_name
            y = module.forward(x.astype(dtype))
            grad_input = module.backward(g.astype(dtype))
            assert y.dtype == dtype and grad_input.dtype == dtype
            np.testing.assert_allclose(y, reference[f"{key}__value"], **TOLERANCE[dtype], err_msg=key)
            np.testing.assert_allclose(grad_input, reference[f"{key}__vjp"], **TOLERANCE[dtype], err_msg=key)


@pytest.mark.parametrize("engine_name", ENGINES)
def test_parity_with_recorded_pytorch(engine_name):
    with np.load(FIXTURE, allow_pickle=False) as data:
        check_parity(dict(data), engine_name)


@pytest.mark.torch
@pytest.mark.parametrize("engine_name", ENGINES)
def test_parity_with_live_pytorch(engine_name):
    pytest.importorskip("torch")
    check_parity(load_generator().reference(), engine_name)


# ---------------------------------------------------------------- which path runs


@pytest.fixture
def kernel_calls(monkeypatch):
    """Count the calls of the kernels' forward and backward (which still run)."""
    calls = []

    def counting(name):
        kernel = getattr(kernels, name)

        def counted(*args, **kwargs):
            calls.append(name)
            return kernel(*args, **kwargs)
        return counted

    for name in ("forward", "backward"):
        monkeypatch.setattr(kernels, name, counting(name))
    return calls


def _forward_backward(module, x, g):
    return module.forward(x).copy(), module.backward(g).copy()  # copies: kernel outputs are recycled buffers


@pytest.mark.parametrize("name", MODULES)
def test_the_default_runs_the_kernels_and_numpy_runs_the_reference(kernel_calls, name):
    rng = np.random.default_rng(5)
    x, g = 3.0 * rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    module = MODULES[name]()
    assert module.engine is None and module.compiled()
    compiled = _forward_backward(module, x, g)
    assert kernel_calls == ["forward", "backward"]
    module.engine = "numpy"
    assert not module.compiled()
    numpy_path = _forward_backward(module, x, g)
    assert kernel_calls == ["forward", "backward"]  # no more kernel calls
    expected = module.reference_forward(x), module.reference_backward(g, module.cache)
    for ours, theirs in zip(numpy_path, expected):
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(compiled, numpy_path):  # docs/kernels.md: float64 within 1e-12 of the terms
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12 * np.max(np.abs(theirs)))


@pytest.mark.parametrize("name", MODULES)
def test_the_process_default_forces_the_reference_unless_an_engine_is_passed(kernel_calls, name):
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    with engine.default_engine_set("numpy"):
        forced = _forward_backward(MODULES[name](), x, np.ones_like(x))
        assert kernel_calls == []
        module = MODULES[name]()
        module.engine = "compiled"
        _forward_backward(module, x, np.ones_like(x))
        assert kernel_calls == ["forward", "backward"]
    module = MODULES[name]()
    y = module.reference_forward(x)
    expected = y, module.reference_backward(np.ones_like(x), y if kernels.CACHED[module.kernel] == "output" else x)
    for ours, theirs in zip(forced, expected):
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, theirs)


def test_the_engine_is_a_keyword_argument_and_is_checked():
    assert GELU("tanh", engine="numpy").engine == "numpy" and Softmax(0, engine="compiled").axis == 0
    assert Swish(2.0, engine="auto").beta == 2.0 and SiLU(engine="numpy").beta == 1.0
    for factory in (Sigmoid, Tanh, ReLU, GELU, Swish, SiLU, Softmax, LogSoftmax):
        with pytest.raises(ValueError, match="^engine: expected one of auto, compiled, numpy, got 'fast'$"):
            factory(engine="fast")
