"""Classification losses: PyTorch parity over the option grid, finite differences, closed forms,
extreme logits, errors."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from recgrad import gradcheck
from recgrad.activations import log_softmax
from recgrad.losses import CrossEntropyLoss, MSELoss, NLLLoss

REDUCTIONS = ("mean", "sum", "none")
ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "losses_classification.npz"
TOLERANCE = {"float64": 1e-6, "float32": 1e-5}
LOSSES = {"ce": CrossEntropyLoss, "nll": NLLLoss, "mse": MSELoss}


def load_generator():
    path = ROOT / "scripts" / "fixtures" / "make_losses_classification.py"
    module_spec = importlib.util.spec_from_file_location("make_losses_classification", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


GENERATOR = load_generator()


def assert_close(actual, expected, dtype, what):
    """Relative tolerance per element with an absolute floor at tolerance x the finite scale;
    infinities and NaNs must sit where torch has them."""
    tolerance = TOLERANCE[dtype]
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == np.dtype(dtype), what
    assert actual.shape == expected.shape, what
    finite = np.isfinite(expected)
    scale = float(np.max(np.abs(expected[finite]))) if finite.any() else 0.0
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * scale, err_msg=what)


def run_recgrad(spec, arrays):
    kwargs = GENERATOR.options(spec)
    if "weight" in arrays:
        kwargs["weight"] = arrays["weight"]
    loss = LOSSES[spec["loss"]](**kwargs)
    value = loss(arrays["input"], arrays["target"])
    return value, loss.backward(arrays["grad_output"])


def recorded_cases():
    with np.load(FIXTURE, allow_pickle=False) as data:
        names = sorted(key[: -len("/spec")] for key in data.files if key.endswith("/spec"))
        for name in names:
            spec = json.loads(str(data[f"{name}/spec"]))
            arrays = {key: data[f"{name}/{key}"] for key in ("input", "target", "grad_output", "weight")
                      if f"{name}/{key}" in data.files}
            yield spec, arrays, data[f"{name}/loss"], data[f"{name}/grad"]


# ---------------------------------------------------------------- PyTorch parity


def test_recorded_pytorch_parity():
    count = 0
    for spec, arrays, expected_loss, expected_grad in recorded_cases():
        value, grad = run_recgrad(spec, arrays)
        assert_close(value, expected_loss, spec["dtype"], f"{spec['name']} loss")
        assert_close(grad, expected_grad, spec["dtype"], f"{spec['name']} grad")
        count += 1
    assert count == len(GENERATOR.case_specs()) == 318


def test_recorded_grid_covers_every_option():
    specs = GENERATOR.case_specs()
    ce = [s for s in specs if s["loss"] == "ce" and "extreme" not in s]
    combinations = {(s["target"], s["weighted"], s.get("ignore"), s["smoothing"], s["reduction"], s["dtype"])
                    for s in ce if not s.get("spatial")}
    index = {(w, i, e, r, d) for _, w, i, e, r, d in combinations if _ == "index"}
    assert len(index) == 2 * 4 * 3 * 3 * 2
    assert len({c for c in combinations if c[0] == "prob"}) == 2 * 3 * 3 * 2


def test_fixture_matches_its_generator_inputs():
    """The recorded inputs are the ones the generator draws, so the live test covers the same cases.

    Equal to a few units in the last place of the array's largest value, not bit for bit: NLL's
    log-probabilities x - log(sum(exp(x))) are computed with NumPy's exp and log, whose SIMD paths
    round differently on different CPUs, and the subtraction keeps that rounding in absolute terms.
    """
    specs = {spec["name"]: spec for spec in GENERATOR.case_specs()}
    for spec, arrays, _, _ in recorded_cases():
        drawn = GENERATOR.make_inputs(specs[spec["name"]])
        assert set(drawn) == set(arrays), spec["name"]
        for key, value in arrays.items():
            if value.dtype.kind == "f":
                finite = np.abs(value[np.isfinite(value)])
                ulp = np.finfo(value.dtype).eps * (finite.max() if finite.size else 1.0)
                np.testing.assert_allclose(value, drawn[key], rtol=0, atol=16 * ulp, err_msg=spec["name"])
            else:
                np.testing.assert_array_equal(value, drawn[key], err_msg=spec["name"])


@pytest.mark.torch
def test_live_pytorch_parity():
    pytest.importorskip("torch")
    for spec in GENERATOR.case_specs():
        arrays = GENERATOR.make_inputs(spec)
        expected_loss, expected_grad = GENERATOR.torch_reference(spec, arrays)
        value, grad = run_recgrad(spec, arrays)
        assert_close(value, expected_loss, spec["dtype"], f"{spec['name']} loss")
        assert_close(grad, expected_grad, spec["dtype"], f"{spec['name']} grad")


@pytest.mark.torch
def test_live_pytorch_default_grad_output_and_functional_form():
    """backward() with no argument is loss.backward() in torch; F.cross_entropy agrees too."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits, target = rng.standard_normal((7, 4)), rng.integers(0, 4, 7)
    loss = CrossEntropyLoss(label_smoothing=0.2)
    value = loss(logits, target)
    t_logits = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(t_logits, torch.tensor(target), label_smoothing=0.2)
    expected.backward()
    np.testing.assert_allclose(value, expected.item(), rtol=1e-12)
    np.testing.assert_allclose(loss.backward(), t_logits.grad.numpy(), rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- finite differences (float64)


def check_gradient(loss, x, target):
    def fn(value):
        return loss.forward(value, target)

    def grad_fn(inputs, grad_output):
        loss.forward(inputs[0], target)
        return (loss.backward(grad_output),)

    ok, max_abs, max_rel = gradcheck(fn, (x,), grad_fn)
    assert ok, f"gradcheck failed: max abs err {max_abs:.3e}, max rel err {max_rel:.3e}"


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("ignore_index", [-100, 1])
def test_cross_entropy_class_indices_gradcheck(reduction, weighted, smoothing, ignore_index):
    rng = np.random.default_rng(4)
    logits = 2.0 * rng.standard_normal((6, 4))
    target = np.array([0, 1, 2, 3, ignore_index, 1])
    weight = rng.uniform(0.5, 2.0, 4) if weighted else None
    check_gradient(CrossEntropyLoss(weight, ignore_index, reduction, smoothing), logits, target)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_probabilities_gradcheck(reduction, weighted, smoothing):
    rng = np.random.default_rng(5)
    logits = 2.0 * rng.standard_normal((5, 4))
    target = rng.dirichlet(np.ones(4), size=5)
    weight = rng.uniform(0.5, 2.0, 4) if weighted else None
    check_gradient(CrossEntropyLoss(weight, reduction=reduction, label_smoothing=smoothing), logits, target)


@pytest.mark.parametrize("target_form", ["index", "prob"])
def test_cross_entropy_spatial_gradcheck(target_form):
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((3, 4, 2, 2))
    target = rng.integers(0, 4, (3, 2, 2)) if target_form == "index" else np.moveaxis(
        rng.dirichlet(np.ones(4), size=(3, 2, 2)), -1, 1)
    check_gradient(CrossEntropyLoss(weight=np.array([1.0, 2.0, 0.5, 1.5]), label_smoothing=0.1), logits, target)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_gradcheck(reduction, weighted):
    rng = np.random.default_rng(7)
    weight = rng.uniform(0.5, 2.0, 5) if weighted else None
    check_gradient(NLLLoss(weight, reduction=reduction), rng.standard_normal((6, 5)), np.array([0, 4, -100, 2, 2, 1]))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_gradcheck(reduction):
    rng = np.random.default_rng(8)
    check_gradient(MSELoss(reduction), rng.standard_normal((4, 3)), rng.standard_normal((4, 3)))


# ---------------------------------------------------------------- closed forms and equivalences


@pytest.mark.parametrize("classes", [2, 10, 1000])
def test_uniform_logits_give_log_c(classes):
    logits = np.full((3, classes), 7.5)
    value = CrossEntropyLoss()(logits, np.array([0, 1, classes - 1]))
    assert float(value) == pytest.approx(math.log(classes), rel=1e-14)
    uniform = np.full((3, classes), 1.0 / classes)
    assert float(CrossEntropyLoss()(logits, uniform)) == pytest.approx(math.log(classes), rel=1e-12)


def test_closed_form_gradient_is_softmax_minus_onehot_over_n():
    logits = np.array([[0.0, math.log(3.0)], [0.0, 0.0]])
    loss = CrossEntropyLoss()
    assert float(loss(logits, np.array([0, 1]))) == pytest.approx((math.log(4.0) + math.log(2.0)) / 2)
    np.testing.assert_allclose(loss.backward(), [[(0.25 - 1) / 2, 0.75 / 2], [0.25, -0.25]], rtol=1e-14)


def test_weighted_mean_divides_by_the_targets_weights():
    logits, target, weight = np.zeros((3, 2)), np.array([0, 1, 1]), np.array([1.0, 3.0])
    per_sample = CrossEntropyLoss(weight, reduction="none")(logits, target)
    np.testing.assert_allclose(per_sample, [math.log(2), 3 * math.log(2), 3 * math.log(2)])
    assert float(CrossEntropyLoss(weight)(logits, target)) == pytest.approx(7 * math.log(2) / 7)


def test_label_smoothing_with_weight_follows_torchs_formula():
    """(1 - eps) w_y (-log p_y) + (eps / C) sum_c w_c (-log p_c), mean over sum of w_y."""
    rng = np.random.default_rng(9)
    logits, target, weight, eps = rng.standard_normal((4, 3)), np.array([0, 2, 1, 2]), np.array([0.5, 1.0, 2.0]), 0.3
    log_p = log_softmax(logits)
    per_sample = (1 - eps) * weight[target] * -log_p[np.arange(4), target] + eps / 3 * np.sum(weight * -log_p, axis=1)
    assert float(CrossEntropyLoss(weight, label_smoothing=eps)(logits, target)) == pytest.approx(
        per_sample.sum() / weight[target].sum(), rel=1e-14)


def test_cross_entropy_is_nll_of_log_softmax():
    rng = np.random.default_rng(10)
    logits, target, weight = rng.standard_normal((5, 4)), np.array([3, 0, -100, 1, 1]), rng.uniform(0.5, 2, 4)
    ce, nll = CrossEntropyLoss(weight), NLLLoss(weight)
    np.testing.assert_allclose(ce(logits, target), nll(log_softmax(logits), target), rtol=1e-14)
    from recgrad.activations import log_softmax_backward
    np.testing.assert_allclose(ce.backward(), log_softmax_backward(nll.backward(), log_softmax(logits)), atol=1e-15)


def test_one_hot_probabilities_equal_class_indices():
    rng = np.random.default_rng(11)
    logits, target = rng.standard_normal((5, 4)), np.array([3, 0, 2, 1, 1])
    by_index, by_probability = CrossEntropyLoss(reduction="sum"), CrossEntropyLoss(reduction="sum")
    np.testing.assert_allclose(by_index(logits, target), by_probability(logits, np.eye(4)[target]), rtol=1e-14)
    np.testing.assert_allclose(by_index.backward(), by_probability.backward(), atol=1e-15)


def test_ignored_samples_count_nowhere():
    rng = np.random.default_rng(12)
    logits = rng.standard_normal((5, 3))
    kept = CrossEntropyLoss(label_smoothing=0.2)
    ignored = CrossEntropyLoss(label_smoothing=0.2, ignore_index=7)
    value = ignored(logits, np.array([0, 7, 2, 7, 1]))
    np.testing.assert_allclose(value, kept(logits[[0, 2, 4]], np.array([0, 2, 1])), rtol=1e-14)
    grad = ignored.backward()
    np.testing.assert_array_equal(grad[[1, 3]], 0.0)
    np.testing.assert_allclose(grad[[0, 2, 4]], kept.backward(), atol=1e-16)


def test_mse_closed_form():
    loss = MSELoss()
    assert float(loss(np.array([1.0, 2.0]), np.array([0.0, 4.0]))) == 2.5
    np.testing.assert_array_equal(loss.backward(), [1.0, -2.0])


# ---------------------------------------------------------------- extremes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_logits_are_exact(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype=dtype)
    loss = CrossEntropyLoss(reduction="none")
    np.testing.assert_array_equal(loss(logits, np.array([1, 2])), np.array([2e4, 0.0], dtype=dtype))
    np.testing.assert_array_equal(loss.backward(np.ones(2, dtype=dtype)), [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])


def test_minus_inf_logits():
    logits = np.array([[0.0, -np.inf, 0.0], [-np.inf, 0.0, 0.0]])
    loss = CrossEntropyLoss(reduction="none")
    value = loss(logits, np.array([0, 0]))  # the second target's logit is -inf: an infinite loss
    assert value[0] == pytest.approx(math.log(2)) and value[1] == np.inf
    np.testing.assert_allclose(loss.backward(np.ones(2)), [[-0.5, 0.0, 0.5], [-1.0, 0.5, 0.5]])
    smoothed = CrossEntropyLoss(label_smoothing=0.1)  # smoothing puts mass on the -inf class: inf, as torch
    assert smoothed(logits[:1], np.array([0])) == np.inf
    assert np.all(np.isfinite(smoothed.backward()))


def test_every_target_ignored_gives_nan_mean_and_zero_gradient():
    for loss in (CrossEntropyLoss(label_smoothing=0.1), NLLLoss()):
        assert np.isnan(loss(np.zeros((2, 3)), np.array([-100, -100])))
        np.testing.assert_array_equal(loss.backward(), 0.0)
    summed = CrossEntropyLoss(reduction="sum")
    assert summed(np.zeros((2, 3)), np.array([-100, -100])) == 0.0


def test_dtype_is_kept_and_targets_are_not_promoted():
    logits = np.random.default_rng(13).standard_normal((4, 3)).astype(np.float32)
    loss = CrossEntropyLoss(weight=np.array([1.0, 2.0, 3.0]), label_smoothing=0.1)
    assert loss(logits, np.array([0, 1, 2, 1])).dtype == np.float32
    assert loss.backward().dtype == np.float32
    assert loss(logits, np.full((4, 3), 1 / 3)).dtype == np.float32


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("factory", [CrossEntropyLoss, NLLLoss, MSELoss])
def test_bad_reduction_and_backward_before_forward(factory):
    with pytest.raises(ValueError, match="reduction"):
        factory(reduction="avg")
    with pytest.raises(RuntimeError, match="before forward"):
        factory().backward()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"label_smoothing": 1.5}, ValueError, "label_smoothing: must lie in \\[0, 1\\], got 1.5"),
    ({"label_smoothing": "0.1"}, TypeError, "label_smoothing"),
    ({"ignore_index": 1.0}, TypeError, "ignore_index"),
    ({"weight": np.ones((2, 2))}, ValueError, "weight: expected a 1-D"),
])
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        CrossEntropyLoss(**kwargs)


@pytest.mark.parametrize("loss, logits, target, match", [
    (CrossEntropyLoss(), np.zeros(3), np.array(0), "input: expected shape \\(N, C\\)"),
    (CrossEntropyLoss(), np.zeros((2, 3)), np.array([0, 3]), "target: class index 3 is outside \\[0, 3\\)"),
    (CrossEntropyLoss(), np.zeros((2, 3)), np.array([0, 1, 2]), "target: expected class indices of shape \\(2,\\)"),
    (CrossEntropyLoss(), np.zeros((2, 3)), np.array([0.0, 1.0]), "floating targets are class probabilities"),
    (CrossEntropyLoss(), np.zeros((2, 3)), np.array([True, False]), "got dtype bool"),
    (CrossEntropyLoss(weight=np.ones(4)), np.zeros((2, 3)), np.array([0, 1]), "weight: expected shape \\(3,\\)"),
    (NLLLoss(), np.zeros((2, 3)), np.zeros((2, 3)), "target: expected integer class indices"),
    (MSELoss(), np.zeros((2, 3)), np.zeros(3), "input has shape \\(2, 3\\) but target has shape \\(3,\\)"),
])
def test_forward_errors_name_the_argument(loss, logits, target, match):
    with pytest.raises(ValueError, match=match):
        loss(logits, target)
