"""The objectives and the batch negatives, each without a Trainer: closed forms, choices, gradients."""

import numpy as np
import pytest
import scipy.sparse as sp

from recgrad import gradcheck
from recgrad.activations import logsumexp, softplus
from recgrad.data import Dataset, synthetic
from recgrad.models import MF
from recgrad.objectives import BatchL2, BCEObjective, BPRObjective, CCLObjective, InfoNCEObjective
from recgrad.samplers import (
    DynamicNegatives,
    InBatchNegatives,
    PerUserNegatives,
    PopularitySampler,
    SharedNegatives,
    UniformSampler,
)


@pytest.fixture(scope="module")
def data():
    return synthetic(n_users=60, n_items=50, dim=4, interactions_per_user=8, seed=0)


def model_and_batch(data, seed=1):
    model = MF(data.n_users, data.n_items, dim=5, rng=seed, dtype=np.float64)
    users = np.arange(12)
    positives = data.train.indices[data.train.indptr[users]].astype(np.int64)
    return model, users, positives


def test_bpr_objective_is_softplus_of_the_score_difference(data):
    model, users, positives = model_and_batch(data)
    negatives = np.arange(36).reshape(12, 3) % data.n_items
    loss = BPRObjective()(model, users, positives, negatives)
    P, Q = model.user_factors(), model.item_factors()
    pos = np.sum(P[users] * Q[positives], axis=1)
    neg = np.einsum("bd,bkd->bk", P[users], Q[negatives])
    np.testing.assert_allclose(loss, np.mean(softplus(neg - pos[:, None])), rtol=1e-12)
    assert model.user_embedding.weight.grad is not None  # the gradients are left in the parameters


def test_shared_negatives_broadcast_to_every_user(data):
    model, users, positives = model_and_batch(data)
    shared = np.array([3, 7, 9])
    a = BCEObjective()(model, users, positives, shared)
    b = BCEObjective()(model, users, positives, np.broadcast_to(shared, (12, 3)).copy())
    assert a == b
    with pytest.raises(ValueError, match="negatives"):
        BPRObjective()(model, users, positives, None)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_logq_correction_gives_the_corrected_sampled_softmax(data, similarity):
    model, users, positives = model_and_batch(data)
    negatives = np.array([4, 8, 15, 16, 23, 42, 11])
    log_q = np.log(np.random.default_rng(0).dirichlet(np.ones(data.n_items)))
    loss = InfoNCEObjective(temperature=0.2, similarity=similarity, log_q=lambda items: log_q[items])(
        model, users, positives, negatives)
    anchor, items = model.user_factors()[users], model.item_factors()
    if similarity == "cosine":
        anchor = anchor / np.linalg.norm(anchor, axis=1, keepdims=True)
        items = items / np.linalg.norm(items, axis=1, keepdims=True)
    logits = np.concatenate([np.sum(anchor * items[positives], axis=1)[:, None], anchor @ items[negatives].T], 1)
    logits = logits / 0.2 - np.concatenate([log_q[positives, None], np.broadcast_to(log_q[negatives], (12, 7))], 1)
    np.testing.assert_allclose(loss, np.mean(logsumexp(logits, axis=1) - logits[:, 0]), rtol=1e-12)


def test_dynamic_negatives_keep_the_best_scoring_candidate_of_each_group(data):
    model = MF(data.n_users, data.n_items, dim=5, rng=1)
    sampler = UniformSampler(data.train, seed=np.random.default_rng(3))
    dynamic = DynamicNegatives(sampler, k=3, candidates=5, model=model)
    users = np.arange(40) % data.n_users
    state = sampler.state_dict()
    chosen = dynamic.draw(users, None)
    sampler.load_state_dict(state)
    drawn = sampler.sample(users, 15).reshape(40, 3, 5)
    scores = model.score(users, drawn.reshape(40, 15)).reshape(40, 3, 5)
    assert chosen.shape == (40, 3)
    np.testing.assert_array_equal(chosen, np.take_along_axis(drawn, np.argmax(scores, 2)[..., None], 2)[..., 0])
    assert not np.array_equal(chosen, drawn[:, :, 0])  # the choice is not simply the first draw
    with pytest.raises(ValueError, match="log_q"):
        dynamic.log_q(np.arange(3))


def test_batch_negatives_shapes_and_log_q(data):
    sampler = PopularitySampler(data.train, seed=np.random.default_rng(0))
    users = np.arange(6)
    assert PerUserNegatives(sampler, 4).draw(users, None).shape == (6, 4)
    assert SharedNegatives(sampler, 4).draw(users, None).shape == (4,)
    in_batch = InBatchNegatives(data.train)
    assert in_batch.draw(users, None) is None
    counts = np.bincount(data.train.indices, minlength=data.n_items)
    np.testing.assert_allclose(np.exp(in_batch.log_q(np.arange(5))), counts[:5] / counts.sum())
    np.testing.assert_allclose(PerUserNegatives(sampler, 4).log_q(np.arange(5)), sampler.log_q(np.arange(5)))


def test_batch_l2_is_lightgcn_formula_per_row_occurrence(data):
    model, users, positives = model_and_batch(data)
    negatives = positives[::-1].copy()[:, None]  # every item twice in the batch
    model.zero_grad()
    BPRObjective()(model, users, positives, negatives)
    plain = model.item_embedding.weight.grad.to_dense(model.item_embedding.weight.data.shape).copy()
    model.zero_grad()
    BPRObjective()(model, users, positives, negatives)
    penalty = BatchL2(0.3)(model, users.size)
    regularised = model.item_embedding.weight.grad.to_dense(model.item_embedding.weight.data.shape)
    Q = model.item_embedding.weight.data
    expected = np.zeros_like(Q)
    np.add.at(expected, positives, 0.3 * Q[positives] / 12)
    np.add.at(expected, negatives[:, 0], 0.3 * Q[negatives[:, 0]] / 12)
    np.testing.assert_allclose(regularised - plain, expected, atol=1e-14)
    P = model.user_embedding.weight.data
    total = np.sum(P[users] ** 2) + np.sum(Q[positives] ** 2) + np.sum(Q[negatives] ** 2)
    np.testing.assert_allclose(penalty, 0.5 * 0.3 * total / 12, rtol=1e-12)
    assert BatchL2(0.0)(model, 12) == 0.0


@pytest.mark.parametrize("mode, similarity, logq", [
    ("shared", "cosine", True), ("per_user", "dot", True), ("in_batch", "cosine", True), ("shared", "cosine", False),
])
def test_infonce_gradients_match_finite_differences(mode, similarity, logq):
    rng = np.random.default_rng(0)
    dense = (rng.random((6, 9)) < 0.4).astype(np.float32)
    dense[np.arange(6), np.arange(6)] = 1.0
    small = Dataset(train=sp.csr_matrix(dense), user_ids=np.arange(6), item_ids=np.arange(9))
    model = MF(6, 9, dim=3, rng=1, dtype=np.float64)
    sampler = PopularitySampler(small.train, seed=np.random.default_rng(2))
    negatives = {"shared": SharedNegatives(sampler, 4), "per_user": PerUserNegatives(sampler, 3),
                 "in_batch": InBatchNegatives(small.train)}[mode]
    users = positives = np.array([0, 1, 2, 4])
    drawn = negatives.draw(users, positives)
    objective = InfoNCEObjective(temperature=0.5, similarity=similarity, log_q=negatives.log_q if logq else None)
    check_objective_gradients(model, objective, users, positives, drawn)


def objective_with_l2(model, objective, users, positives, negatives):
    """loss_and_grads(P, Q): the objective plus BatchL2(0.3) and the tables' gradients at tables P, Q."""
    regularizer = BatchL2(0.3)

    def loss_and_grads(P, Q):
        model.load_state_dict({"user_embedding.weight": P, "item_embedding.weight": Q})
        model.zero_grad()
        loss = objective(model, users, positives, negatives) + regularizer(model, users.size)
        return loss, [p.grad.to_dense(p.data.shape) for p in model.parameters()]
    return loss_and_grads


def check_objective_gradients(model, objective, users, positives, negatives):
    """The objective's gradients (plus BatchL2) against central finite differences, in float64."""
    loss_and_grads = objective_with_l2(model, objective, users, positives, negatives)
    ok, max_abs, _ = gradcheck(
        lambda P, Q: np.array(loss_and_grads(P, Q)[0]),
        (model.user_embedding.weight.data.copy(), model.item_embedding.weight.data.copy()),
        lambda inputs, g: tuple(g * grad for grad in loss_and_grads(*inputs)[1]),
    )
    assert ok, max_abs


@pytest.mark.parametrize("mode, normalize", [("shared", True), ("per_user", False)])
def test_ccl_objective_gradients_match_finite_differences(mode, normalize):
    """CCL through MF's encode (plain or normalised rows) and LightGCN's L2, against central differences."""
    rng = np.random.default_rng(0)
    dense = (rng.random((6, 9)) < 0.4).astype(np.float32)
    dense[np.arange(6), np.arange(6)] = 1.0
    train = sp.csr_matrix(dense)
    model = MF(6, 9, dim=3, rng=1, normalize=normalize, dtype=np.float64)
    sampler = UniformSampler(train, seed=np.random.default_rng(2))
    negatives = {"shared": SharedNegatives(sampler, 5), "per_user": PerUserNegatives(sampler, 4)}[mode]
    users = positives = np.array([0, 1, 2, 4])
    drawn = negatives.draw(users, positives)
    objective = CCLObjective(margin=0.0, negative_weight=3.0)
    loss_and_grads = objective_with_l2(model, objective, users, positives, drawn)
    loss_and_grads(model.user_embedding.weight.data.copy(), model.item_embedding.weight.data.copy())
    active = objective.loss.cache["active"]
    assert active.any() and not active.all()  # both sides of the margin are checked
    check_objective_gradients(model, objective, users, positives, drawn)


def test_ccl_objective_is_the_formula_on_the_model_rows(data):
    model, users, positives = model_and_batch(data)
    negatives = np.arange(48).reshape(12, 4) % data.n_items
    loss = CCLObjective(margin=0.1, negative_weight=5.0)(model, users, positives, negatives)
    P, Q = model.user_factors(), model.item_factors()
    unit_u = P[users] / np.linalg.norm(P[users], axis=1, keepdims=True)
    unit_q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    pos = np.sum(unit_u * unit_q[positives], axis=1)
    neg = np.einsum("bd,bkd->bk", unit_u, unit_q[negatives])
    np.testing.assert_allclose(loss, np.mean(1 - pos + 5.0 / 4 * np.maximum(neg - 0.1, 0).sum(1)), rtol=1e-12)
    with pytest.raises(ValueError, match="in-batch"):
        CCLObjective()(model, users, positives, None)
