"""The cosine contrastive loss: finite differences (float64), a direct NumPy formula, edge cases."""

import numpy as np
import pytest
from test_losses import check_gradient

from recgrad.losses import CosineContrastiveLoss


def direct(anchor, positive, negatives, margin, weight):
    """(B,) losses written out from the formula, one anchor and one negative at a time."""
    def cos(u, v):
        return float(u @ v) / (max(np.linalg.norm(u), 1e-12) * max(np.linalg.norm(v), 1e-12))

    out = []
    for b in range(anchor.shape[0]):
        rows = negatives if negatives.ndim == 2 else negatives[b]
        push = sum(max(0.0, cos(anchor[b], n) - margin) for n in rows)
        out.append(1.0 - cos(anchor[b], positive[b]) + weight / len(rows) * push)
    return np.array(out)


def vectors(seed, batch=5, k=7, dim=4):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, dim)), rng.standard_normal((batch, dim)),
            {"per-anchor": rng.standard_normal((batch, k, dim)), "shared": rng.standard_normal((k, dim))})


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("layout", ["per-anchor", "shared"])
def test_gradcheck(reduction, layout):
    anchor, positive, negatives = vectors(0)
    loss = CosineContrastiveLoss(margin=0.1, negative_weight=4.0, reduction=reduction)
    loss(anchor, positive, negatives[layout])
    active = loss.cache["active"]
    assert active.any() and not active.all()  # both sides of the hinge are exercised
    check_gradient(loss, anchor, positive, negatives[layout])


@pytest.mark.parametrize("layout", ["per-anchor", "shared"])
@pytest.mark.parametrize("margin, weight", [(0.0, 1.0), (0.5, 150.0), (-0.3, 0.0)])
def test_value_is_the_direct_formula(layout, margin, weight):
    anchor, positive, negatives = vectors(1)
    loss = CosineContrastiveLoss(margin, weight, "none")
    np.testing.assert_allclose(loss(anchor, positive, negatives[layout]),
                               direct(anchor, positive, negatives[layout], margin, weight), rtol=1e-12, atol=1e-14)
    mean = CosineContrastiveLoss(margin, weight)(anchor, positive, negatives[layout])
    assert float(mean) == pytest.approx(direct(anchor, positive, negatives[layout], margin, weight).mean(), rel=1e-12)


def test_margin_above_every_cosine_leaves_only_the_positive_term():
    anchor, positive, negatives = vectors(2)
    cosine = np.sum(anchor * positive, 1) / np.linalg.norm(anchor, axis=1) / np.linalg.norm(positive, axis=1)
    loss = CosineContrastiveLoss(margin=0.999999, negative_weight=1000.0, reduction="none")
    np.testing.assert_allclose(loss(anchor, positive, negatives["per-anchor"]), 1.0 - cosine, rtol=1e-12)
    _, _, d_negatives = loss.backward(np.ones(5))
    assert not np.any(d_negatives)
    # the positive's gradient is that of -cos: -(v_hat - u_hat cos) / |u| for the anchor
    d_anchor = loss.backward(np.ones(5))[0]
    unit_a = anchor / np.linalg.norm(anchor, axis=1, keepdims=True)
    unit_p = positive / np.linalg.norm(positive, axis=1, keepdims=True)
    expected = -(unit_p - unit_a * cosine[:, None]) / np.linalg.norm(anchor, axis=1, keepdims=True)
    np.testing.assert_allclose(d_anchor, expected, rtol=1e-10)


def test_negatives_above_the_margin_are_pushed_with_weight_over_k():
    """One negative equal to the anchor (cosine 1 > m): its term is w / K (1 - m) exactly."""
    anchor = np.array([[1.0, 0.0, 0.0]])
    positive = np.array([[0.0, 1.0, 0.0]])  # cosine 0: positive term 1
    negatives = np.array([[[2.0, 0.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 3.0, 0.0]]])
    loss = CosineContrastiveLoss(margin=0.9, negative_weight=8.0)
    assert float(loss(anchor, positive, negatives)) == pytest.approx(1.0 + 8.0 / 4 * 0.1, rel=1e-14)


def test_zero_vectors_have_cosine_zero_and_the_clamped_gradient():
    anchor, positive, negatives = vectors(3)
    anchor[0] = 0.0
    negatives["shared"][2] = 0.0
    margin, weight = -0.5, 2.0  # cosine 0 of the zero rows lies above the margin: they are pushed
    loss = CosineContrastiveLoss(margin, weight, "none")
    value = loss(anchor, positive, negatives["shared"])
    np.testing.assert_allclose(value, direct(anchor, positive, negatives["shared"], margin, weight), rtol=1e-12)
    assert value[0] == pytest.approx(1.0 + weight * (0.0 - margin))  # every cosine of the zero anchor is 0
    d_anchor, _, d_negatives = loss.backward(np.ones(5))
    # where the norm is clamped, x_hat = x / 1e-12 is linear in x: dL/dx = (dL/dx_hat) / 1e-12, no projection
    unit_p = positive[0] / np.linalg.norm(positive[0])
    units_n = negatives["shared"] / np.maximum(np.linalg.norm(negatives["shared"], axis=1, keepdims=True), 1e-12)
    d_unit = -unit_p + weight / 7 * units_n.sum(0)
    np.testing.assert_allclose(d_anchor[0], d_unit / 1e-12, rtol=1e-10)
    assert np.all(np.isfinite(d_negatives))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype):
    anchor, positive, negatives = vectors(4)
    loss = CosineContrastiveLoss(0.2, 3.0)
    value = loss(anchor.astype(dtype), positive.astype(dtype), negatives["shared"].astype(dtype))
    assert value.dtype == dtype
    assert all(grad.dtype == dtype for grad in loss.backward())


def test_errors():
    with pytest.raises(ValueError, match="margin"):
        CosineContrastiveLoss(margin=1.0)
    with pytest.raises(ValueError, match="negative_weight"):
        CosineContrastiveLoss(negative_weight=-1.0)
    with pytest.raises(TypeError, match="margin"):
        CosineContrastiveLoss(margin="0.9")
    anchor, positive, negatives = vectors(5)
    with pytest.raises(ValueError, match="negatives"):
        CosineContrastiveLoss()(anchor, positive, negatives["shared"][:, :2])
    with pytest.raises(ValueError, match="negatives"):
        CosineContrastiveLoss()(anchor, positive, np.zeros((0, 4)))
