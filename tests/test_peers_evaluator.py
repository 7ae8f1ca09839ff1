"""scripts/peers.py scores the peers with its own evaluator; it must give recgrad's numbers exactly, or the
percentages it prints compare different quantities."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recgrad.evaluation import full_ranking
from recgrad.metrics import compute_metrics


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("peers", Path(__file__).parents[1] / "scripts" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hand_computed_case(peers):
    # Relevant {1, 2} (R = 2), ranking 3, 1, 0: one hit, at rank 2. Recall@2 = 1/2;
    # NDCG@2 = (1 / log2 3) / (1 + 1 / log2 3). The second row has no relevant item and is not averaged.
    heldout = sp.csr_matrix(np.array([[0, 1, 1, 0], [0, 0, 0, 0]], dtype=np.float32))
    recall, ndcg, users = peers.recall_ndcg(np.array([[3, 1, 0], [0, 1, 2]]), heldout, k=2)
    assert users == 1
    assert recall == pytest.approx(0.5)
    assert ndcg == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_rankings_agree_with_recgrad_metrics(peers):
    rng = np.random.default_rng(0)
    n_users, n_items, k = 60, 100, 20
    # R from 0 (not averaged) to 35 (> k: Recall divides by R, NDCG's ideal stops at k)
    sizes = rng.integers(0, 36, size=n_users)
    sizes[:3] = 0
    items = np.concatenate([np.sort(rng.choice(n_items, s, replace=False)) for s in sizes])
    heldout = sp.csr_matrix((np.ones(items.size, np.float32), items, np.concatenate([[0], np.cumsum(sizes)])),
                            shape=(n_users, n_items))
    ranked = np.array([rng.permutation(n_items)[:k] for _ in range(n_users)])
    ranked[::7, 15:] = -1  # padding keeps its rank and is never a hit
    recall, ndcg, users = peers.recall_ndcg(ranked, heldout, k)
    expected = compute_metrics(ranked, heldout, ks=(k,), metrics=("recall", "ndcg"))
    assert users == expected["users"]
    assert recall == pytest.approx(expected["recall@20"], rel=1e-12)
    assert ndcg == pytest.approx(expected["ndcg@20"], rel=1e-12)


def test_full_ranking_agrees_with_recgrad(peers):
    rng = np.random.default_rng(1)
    n_users, n_items = 80, 300
    user_factors, item_factors = rng.normal(size=(n_users, 8)), rng.normal(size=(n_items, 8))
    interactions = sp.random(n_users, n_items, density=0.1, format="csr", random_state=rng, dtype=np.float32)
    interactions.data[:] = 1
    held = rng.random(interactions.nnz) < 0.3
    rows = np.repeat(np.arange(n_users), np.diff(interactions.indptr))
    train = sp.csr_matrix((interactions.data[~held], (rows[~held], interactions.indices[~held])),
                          shape=interactions.shape)
    test = sp.csr_matrix((interactions.data[held], (rows[held], interactions.indices[held])), shape=interactions.shape)
    ours = peers.evaluate_factors(user_factors, item_factors, train, test, k=20, block=7)
    theirs = full_ranking(lambda u: user_factors[u] @ item_factors.T, train, test, ks=(20,))
    assert ours["users"] == theirs["users"]
    assert ours["recall"] == pytest.approx(theirs["recall@20"], rel=1e-12)
    assert ours["ndcg"] == pytest.approx(theirs["ndcg@20"], rel=1e-12)
    # masking matters: scoring without it lists training items and changes the figure
    unmasked = peers.evaluate_factors(user_factors, item_factors, sp.csr_matrix(train.shape), test, k=20)
    assert unmasked["recall"] != pytest.approx(ours["recall"])
