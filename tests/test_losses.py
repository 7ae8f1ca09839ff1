"""Recommender losses: finite differences, closed forms, edge scores, PyTorch parity, errors."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from recgrad import gradcheck
from recgrad.losses import BCEWithLogitsLoss, BPRLoss, InfoNCELoss

REDUCTIONS = ("mean", "sum", "none")
ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "losses.npz"
TOLERANCE = {"float64": 1e-6, "float32": 1e-5}


def check_gradient(loss, *inputs, differentiable=None, eps=1e-6):
    """gradcheck of loss.forward against loss.backward; `differentiable` picks the inputs to perturb."""
    differentiable = tuple(range(len(inputs))) if differentiable is None else differentiable

    def call(*perturbed):
        arguments = list(inputs)
        for index, value in zip(differentiable, perturbed):
            arguments[index] = value
        return arguments

    def fn(*perturbed):
        return loss.forward(*call(*perturbed))

    def grad_fn(perturbed, grad_output):
        loss.forward(*call(*perturbed))
        grads = loss.backward(grad_output)
        return grads if isinstance(grads, tuple) else (grads,)

    ok, max_abs, max_rel = gradcheck(fn, tuple(inputs[i] for i in differentiable), grad_fn, eps=eps)
    assert ok, f"gradcheck failed: max abs err {max_abs:.3e}, max rel err {max_rel:.3e}"


def embeddings(seed, batch=4, num_neg=3, dim=3):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((batch, dim)),
        rng.standard_normal((batch, dim)),
        {"per-anchor": rng.standard_normal((batch, num_neg, dim)), "shared": rng.standard_normal((num_neg, dim))},
    )


# ---------------------------------------------------------------- finite differences (float64)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("neg_shape", [(6,), (6, 4)])
def test_bpr_gradcheck(reduction, neg_shape):
    rng = np.random.default_rng(1)
    check_gradient(BPRLoss(reduction), 2 * rng.standard_normal(6), 2 * rng.standard_normal(neg_shape))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [None, np.array([0.5, 1.0, 2.0, 4.0]), 3.0])
def test_bce_gradcheck(reduction, pos_weight):
    rng = np.random.default_rng(2)
    logits = 3 * rng.standard_normal((5, 4))
    labels = rng.uniform(0, 1, (5, 4))
    labels[:, :2] = rng.integers(0, 2, (5, 2))
    check_gradient(BCEWithLogitsLoss(pos_weight, reduction), logits, labels, differentiable=(0,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("similarity", ["dot", "cosine"])
@pytest.mark.parametrize("layout", ["per-anchor", "shared", "in-batch"])
def test_infonce_gradcheck(reduction, similarity, layout):
    anchor, positive, negatives = embeddings(3)
    inputs = (anchor, positive) if layout == "in-batch" else (anchor, positive, negatives[layout])
    check_gradient(InfoNCELoss(0.5, similarity, reduction), *inputs)


def test_cosine_gradient_through_a_clamped_norm():
    """Rows shorter than eps = 1e-12 are divided by eps (a constant): the gradient is g / eps there."""
    anchor, positive, negatives = embeddings(4)
    anchor[0] = [1e-14, -2e-14, 0.5e-14]
    loss = InfoNCELoss(0.5, "cosine", "sum")
    loss(anchor, positive, negatives["shared"])
    d_anchor = loss.backward()[0]
    # cosine logits of row 0 equal the dot logits of anchor / eps against unit-length positives and negatives
    probe = InfoNCELoss(0.5, "dot", "sum")
    unit_positive = positive / np.linalg.norm(positive, axis=-1, keepdims=True)
    unit_negatives = negatives["shared"] / np.linalg.norm(negatives["shared"], axis=-1, keepdims=True)
    probe(anchor / 1e-12, unit_positive, unit_negatives)
    np.testing.assert_allclose(d_anchor[0], probe.backward()[0][0] / 1e-12, rtol=1e-10)


# ---------------------------------------------------------------- edge scores: finite, exact, no warnings


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bpr_edge_scores_are_exact_and_finite(dtype):
    pos = np.zeros(5, dtype=dtype)
    neg = np.array([0.0, 20.0, -20.0, 1e4, -1e4], dtype=dtype)  # pos - neg = 0, -20, 20, -1e4, 1e4
    loss = BPRLoss("none")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss(pos, neg)
        d_pos, d_neg = loss.backward(np.ones(5, dtype=dtype))
    expected = [math.log(2), 20 + math.log1p(math.exp(-20)), math.log1p(math.exp(-20)), 1e4, 0.0]
    np.testing.assert_allclose(value, expected, rtol=TOLERANCE[np.dtype(dtype).name], atol=1e-30)
    np.testing.assert_allclose(d_neg, [0.5, 1.0, 0.0, 1.0, 0.0], atol=1e-7)
    np.testing.assert_array_equal(d_pos, -d_neg)
    assert value[3] == 1e4 and abs(d_neg[3]) == 1.0  # the worst-ranked pair keeps loss 1e4 and gradient 1


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bpr_edge_gradcheck(reduction):
    pos = np.array([0.0, 1.0, -3.0, 5.0, 2.0])
    neg = pos[:, None] + np.array([[0.0, 20.0, -20.0, 1e4, -1e4]])
    check_gradient(BPRLoss(reduction), pos, neg)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [None, 2.5])
def test_bce_edge_logits(reduction, pos_weight):
    logits = np.array([[0.0, 20.0, -20.0, 1e4, -1e4, 1e-8, -1e-8]] * 3)
    labels = np.array([[0.0] * 7, [1.0] * 7, [0.5] * 7])
    loss = BCEWithLogitsLoss(pos_weight, "none")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss(logits, labels)
        grad = loss.backward(np.ones_like(logits))
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    p = 1.0 if pos_weight is None else pos_weight
    assert value[0, 3] == 1e4 and value[1, 4] == p * 1e4  # confidently wrong: loss |x| (times p for positives)
    check_gradient(BCEWithLogitsLoss(pos_weight, reduction), logits, labels, differentiable=(0,))


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
@pytest.mark.parametrize("layout", ["per-anchor", "shared", "in-batch"])
def test_infonce_large_logits(similarity, layout):
    """Logit gaps in the thousands: log-sum-exp keeps loss and gradient finite and exact."""
    anchor, positive, negatives = embeddings(5)
    scale = 100.0 if similarity == "dot" else 1.0
    temperature = 0.1 if similarity == "dot" else 1e-3  # cosine logits up to 1e3
    inputs = (scale * anchor, scale * positive) + (() if layout == "in-batch" else (scale * negatives[layout],))
    loss = InfoNCELoss(temperature, similarity, "sum")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss(*inputs)
        grads = loss.backward()
    assert np.isfinite(value) and value > 100.0
    assert all(np.all(np.isfinite(g)) for g in grads)
    check_gradient(InfoNCELoss(temperature, similarity, "none"), *inputs, eps=1e-7 if similarity == "dot" else 1e-9)


# ---------------------------------------------------------------- closed forms and identities


def test_closed_forms_log2():
    scores = np.array([0.3, -1.0, 2.0])
    assert BPRLoss()(scores, scores) == pytest.approx(math.log(2), rel=1e-15)
    assert BPRLoss("sum")(scores, np.stack([scores] * 4, axis=1)) == pytest.approx(12 * math.log(2), rel=1e-15)
    labels = np.array([0.0, 1.0, 0.25])
    assert BCEWithLogitsLoss()(np.zeros(3), labels) == pytest.approx(math.log(2), rel=1e-15)
    weighted = BCEWithLogitsLoss(pos_weight=3.0, reduction="none")(np.zeros(3), labels)
    np.testing.assert_allclose(weighted, (3.0 * labels + 1 - labels) * math.log(2), rtol=1e-15)


def test_closed_form_gradients():
    loss = BPRLoss()
    loss(np.zeros(4), np.zeros(4))
    d_pos, d_neg = loss.backward()
    np.testing.assert_allclose(d_neg, np.full(4, 0.5 / 4), rtol=1e-15)  # sigmoid(0) / N
    np.testing.assert_allclose(d_pos, -d_neg, rtol=1e-15)
    bce = BCEWithLogitsLoss(reduction="sum")
    bce(np.zeros(3), np.array([0.0, 1.0, 0.25]))
    np.testing.assert_allclose(bce.backward(2.0), 2.0 * (0.5 - np.array([0.0, 1.0, 0.25])), rtol=1e-15)


@pytest.mark.parametrize("layout", ["per-anchor", "shared", "in-batch"])
def test_infonce_uniform_logits(layout):
    """All-zero anchors give equal logits: loss log(number of candidates)."""
    _, positive, negatives = embeddings(6, batch=4, num_neg=3)
    inputs = (np.zeros((4, 3)), positive) + (() if layout == "in-batch" else (negatives[layout],))
    candidates = 4 if layout == "in-batch" else 1 + 3
    assert InfoNCELoss(0.2)(*inputs) == pytest.approx(math.log(candidates), rel=1e-15)


@pytest.mark.parametrize("layout", ["per-anchor", "shared"])
def test_infonce_with_one_negative_is_bpr(layout):
    anchor, positive, _ = embeddings(7, batch=6)
    rng = np.random.default_rng(8)
    negatives = rng.standard_normal((6, 1, 3)) if layout == "per-anchor" else rng.standard_normal((1, 3))
    per_anchor_neg = negatives[:, 0] if layout == "per-anchor" else np.broadcast_to(negatives, (6, 3))
    pos_scores = np.sum(anchor * positive, axis=1)
    neg_scores = np.sum(anchor * per_anchor_neg, axis=1)
    info, bpr = InfoNCELoss(1.0, "dot", "none"), BPRLoss("none")
    np.testing.assert_allclose(info(anchor, positive, negatives), bpr(pos_scores, neg_scores), rtol=0, atol=1e-12)
    grad_output = rng.standard_normal(6)
    d_anchor, d_positive, _ = info.backward(grad_output)
    d_pos_scores, d_neg_scores = bpr.backward(grad_output)
    # chain rule through s_p = <a, p>, s_n = <a, n>
    np.testing.assert_allclose(d_positive, d_pos_scores[:, None] * anchor, atol=1e-12)
    np.testing.assert_allclose(
        d_anchor, d_pos_scores[:, None] * positive + d_neg_scores[:, None] * per_anchor_neg, atol=1e-12
    )


def test_infonce_shared_equals_per_anchor_copies():
    anchor, positive, negatives = embeddings(9)
    shared = negatives["shared"]
    per_anchor = np.broadcast_to(shared, (4,) + shared.shape).copy()
    for similarity in ("dot", "cosine"):
        a, b = InfoNCELoss(0.3, similarity), InfoNCELoss(0.3, similarity)
        np.testing.assert_allclose(a(anchor, positive, shared), b(anchor, positive, per_anchor), rtol=1e-14)
        grads_a, grads_b = a.backward(), b.backward()
        np.testing.assert_allclose(grads_a[0], grads_b[0], rtol=1e-12)
        np.testing.assert_allclose(grads_a[2], grads_b[2].sum(axis=0), rtol=1e-12)


def test_cosine_is_scale_invariant():
    anchor, positive, negatives = embeddings(10)
    loss = InfoNCELoss(0.1, "cosine")
    base = loss(anchor, positive, negatives["per-anchor"])
    d_anchor = loss.backward()[0]
    assert loss(7.0 * anchor, positive, negatives["per-anchor"]) == pytest.approx(base, rel=1e-13)
    np.testing.assert_allclose(loss.backward()[0], d_anchor / 7.0, rtol=1e-12)
    np.testing.assert_allclose(np.sum(d_anchor * anchor, axis=1), 0.0, atol=1e-12)  # no radial gradient


# ---------------------------------------------------------------- dtypes and reductions


def make_all(dtype):
    rng = np.random.default_rng(11)
    anchor, positive, negatives = embeddings(11)
    anchor, positive, negatives = anchor.astype(dtype), positive.astype(dtype), negatives["per-anchor"].astype(dtype)
    return [
        (BPRLoss, {}, (rng.standard_normal(4).astype(dtype), rng.standard_normal((4, 2)).astype(dtype))),
        (BCEWithLogitsLoss, {"pos_weight": np.array([1.0, 2.0, 0.5])}, (anchor, (positive > 0).astype(dtype))),
        (InfoNCELoss, {"similarity": "cosine"}, (anchor, positive, negatives)),
        (InfoNCELoss, {}, (anchor, positive)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_dtype_is_kept(dtype, reduction):
    for cls, options, inputs in make_all(dtype):
        loss = cls(reduction=reduction, **options)
        value = loss(*inputs)
        assert isinstance(value, (np.ndarray, np.generic)) and value.dtype == dtype, cls.__name__
        grad_output = None if reduction != "none" else np.ones(value.shape, dtype=np.float64)
        grads = loss.backward(grad_output)
        for grad in grads if isinstance(grads, tuple) else (grads,):
            assert grad.dtype == dtype, cls.__name__


def test_reductions_agree():
    for cls, options, inputs in make_all(np.float64):
        none = cls(reduction="none", **options)
        elementwise = none(*inputs)
        assert cls(reduction="sum", **options)(*inputs) == pytest.approx(elementwise.sum(), rel=1e-14)
        mean = cls(reduction="mean", **options)
        assert mean(*inputs) == pytest.approx(elementwise.mean(), rel=1e-14)
        grads_none = none.backward(np.full(elementwise.shape, 3.0 / elementwise.size))
        grads_mean = mean.backward(3.0)
        for a, b in zip(*(g if isinstance(g, tuple) else (g,) for g in (grads_none, grads_mean))):
            np.testing.assert_allclose(a, b, rtol=1e-14)


def test_integer_input_is_promoted_to_float64():
    loss = BPRLoss()
    assert loss(np.array([1, 2]), np.array([2, 2])).dtype == np.float64
    assert all(g.dtype == np.float64 for g in loss.backward())


def test_nan_propagates():
    assert np.isnan(BPRLoss()(np.array([np.nan, 0.0]), np.zeros(2)))
    assert np.isnan(BCEWithLogitsLoss()(np.array([np.nan]), np.array([1.0])))


# ---------------------------------------------------------------- PyTorch parity


def assert_close(actual, expected, dtype, what):
    """Relative tolerance per element, with an absolute floor at that tolerance times the array's scale."""
    tolerance = TOLERANCE[dtype]
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    assert actual.dtype == np.dtype(dtype), what
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * scale, err_msg=what)


def run_recgrad(spec, inputs, pos_weight, grad_output):
    if spec["loss"] == "bpr":
        loss = BPRLoss(spec["reduction"])
    elif spec["loss"] == "bce":
        loss = BCEWithLogitsLoss(pos_weight, spec["reduction"])
    else:
        loss = InfoNCELoss(spec["temperature"], spec["similarity"], spec["reduction"])
    value = loss(*inputs)
    grads = loss.backward(grad_output)
    return value, grads if isinstance(grads, tuple) else (grads,)


def recorded_cases():
    with np.load(FIXTURE, allow_pickle=False) as data:
        names = sorted(key[: -len("/spec")] for key in data.files if key.endswith("/spec"))
        for name in names:
            spec = json.loads(str(data[f"{name}/spec"]))
            inputs = tuple(data[f"{name}/in{i}"] for i in range(3) if f"{name}/in{i}" in data.files)
            grads = tuple(data[f"{name}/grad{i}"] for i in range(3) if f"{name}/grad{i}" in data.files)
            pos_weight = data[f"{name}/pos_weight"] if f"{name}/pos_weight" in data.files else None
            yield spec, inputs, pos_weight, data[f"{name}/grad_output"], data[f"{name}/loss"], grads


def test_recorded_pytorch_parity():
    count = 0
    for spec, inputs, pos_weight, grad_output, expected_loss, expected_grads in recorded_cases():
        value, grads = run_recgrad(spec, inputs, pos_weight, grad_output)
        assert_close(value, expected_loss, spec["dtype"], f"{spec['name']} loss")
        assert len(grads) == len(expected_grads), spec["name"]
        for index, (grad, expected) in enumerate(zip(grads, expected_grads)):
            assert_close(grad, expected, spec["dtype"], f"{spec['name']} grad {index}")
        count += 1
    assert count == 114


def load_generator():
    path = ROOT / "scripts" / "fixtures" / "make_losses.py"
    module_spec = importlib.util.spec_from_file_location("make_losses", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_fixture_matches_its_generator_inputs():
    """The recorded inputs are the ones the generator draws, so the live test covers the same cases."""
    generator = load_generator()
    specs = {spec["name"]: spec for spec in generator.case_specs()}
    for spec, inputs, pos_weight, grad_output, _, _ in recorded_cases():
        arrays = generator.make_inputs(specs[spec["name"]])
        for recorded, drawn in zip(inputs, arrays["inputs"]):
            np.testing.assert_array_equal(recorded, drawn)
        np.testing.assert_array_equal(grad_output, arrays["grad_output"])
        assert (pos_weight is None) == ("pos_weight" not in arrays), spec["name"]
        if pos_weight is not None:
            np.testing.assert_array_equal(pos_weight, arrays["pos_weight"])


@pytest.mark.torch
def test_live_pytorch_parity():
    pytest.importorskip("torch")
    generator = load_generator()
    for spec in generator.case_specs():
        arrays = generator.make_inputs(spec)
        expected_loss, expected_grads = generator.torch_reference(spec, arrays)
        value, grads = run_recgrad(spec, arrays["inputs"], arrays.get("pos_weight"), arrays["grad_output"])
        assert_close(value, expected_loss, spec["dtype"], f"{spec['name']} loss")
        for index, (grad, expected) in enumerate(zip(grads, expected_grads)):
            assert_close(grad, expected, spec["dtype"], f"{spec['name']} grad {index}")


@pytest.mark.torch
def test_live_pytorch_default_grad_output():
    """backward() with no argument is backward of the scalar with gradient 1, as loss.backward() in torch."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    logits, labels = rng.standard_normal((3, 4)), rng.uniform(0, 1, (3, 4))
    loss = BCEWithLogitsLoss()
    loss(logits, labels)
    t_logits = torch.tensor(logits, requires_grad=True)
    torch.nn.BCEWithLogitsLoss()(t_logits, torch.tensor(labels)).backward()
    np.testing.assert_allclose(loss.backward(), t_logits.grad.numpy(), rtol=1e-12)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("factory", [BPRLoss, BCEWithLogitsLoss, InfoNCELoss])
def test_bad_reduction(factory):
    with pytest.raises(ValueError, match="reduction"):
        factory(reduction="avg")


@pytest.mark.parametrize("factory", [BPRLoss, BCEWithLogitsLoss, InfoNCELoss])
def test_backward_before_forward(factory):
    with pytest.raises(RuntimeError, match="before forward"):
        factory().backward()


def test_grad_output_validation():
    loss = BPRLoss("none")
    loss(np.zeros(3), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="grad_output"):
        loss.backward()
    with pytest.raises(ValueError, match="grad_output"):
        loss.backward(np.ones(3))
    mean = BPRLoss()
    mean(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="grad_output"):
        mean.backward(np.ones(3))


@pytest.mark.parametrize(
    "pos, neg, name",
    [
        (np.zeros((3, 1)), np.zeros((3, 1)), "pos_scores"),
        (np.zeros(3), np.zeros(4), "neg_scores"),
        (np.zeros(3), np.zeros((4, 2)), "neg_scores"),
        (np.zeros(3), np.zeros((3, 2, 1)), "neg_scores"),
    ],
)
def test_bpr_shape_errors(pos, neg, name):
    with pytest.raises(ValueError, match=name):
        BPRLoss()(pos, neg)


def test_bce_errors():
    with pytest.raises(ValueError, match="labels"):
        BCEWithLogitsLoss()(np.zeros(3), np.array([0.0, 1.5, 1.0]))
    with pytest.raises(ValueError, match="labels"):
        BCEWithLogitsLoss()(np.zeros(3), np.array([0.0, -0.1, 1.0]))
    with pytest.raises(ValueError, match="labels"):
        BCEWithLogitsLoss()(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="pos_weight"):
        BCEWithLogitsLoss(pos_weight=np.ones(3))(np.zeros((2, 4)), np.zeros((2, 4)))


def test_infonce_errors():
    for temperature in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            InfoNCELoss(temperature)
    with pytest.raises(TypeError, match="temperature"):
        InfoNCELoss("0.1")
    with pytest.raises(ValueError, match="similarity"):
        InfoNCELoss(similarity="euclidean")
    loss = InfoNCELoss()
    with pytest.raises(ValueError, match="anchor"):
        loss(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="positive"):
        loss(np.zeros((2, 3)), np.zeros((2, 4)))
    for negatives in (np.zeros((3, 5, 3)), np.zeros((2, 5, 4)), np.zeros((5, 4)), np.zeros(3)):
        with pytest.raises(ValueError, match="negatives"):
            loss(np.zeros((2, 3)), np.zeros((2, 3)), negatives)
