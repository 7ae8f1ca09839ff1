"""Metrics against hand-computed values; every number below is worked out in the comment beside it."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recgrad.metrics import (
    auc,
    compute_metrics,
    has_relevant,
    hit_matrix,
    hit_rate_at_k,
    map_at_k,
    mean_over_users,
    mrr_at_k,
    ndcg_at_k,
    per_user_metrics,
    precision_at_k,
    recall_at_k,
)

LOG3 = math.log2(3.0)


def csr(rows, n_items):
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]) if rows else []
    return sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(rows), n_items))


def test_ndcg_at_2_on_a_three_item_ranking():
    # ranking [3, 1, 2], relevant {1, 2}: hits (0, 1, 1).
    # DCG@2 = 1/log2(3); IDCG@2 = 1 + 1/log2(3) (min(K, R) = 2 ideal hits).
    ranked = np.array([[3, 1, 2]])
    got = ndcg_at_k(ranked, [np.array([1, 2])], 2)
    expected = (1 / LOG3) / (1 + 1 / LOG3)
    np.testing.assert_allclose(got, [expected], rtol=1e-12)
    # NDCG@3 = (1/log2 3 + 1/log2 4) / (1 + 1/log2 3)
    np.testing.assert_allclose(ndcg_at_k(ranked, [np.array([1, 2])], 3), [(1 / LOG3 + 0.5) / (1 + 1 / LOG3)])


def test_ndcg_ideal_uses_min_k_r():
    # R = 5 > K = 2 and both top items relevant: IDCG over min(2, 5) = 2 positions, NDCG = 1.
    got = ndcg_at_k(np.array([[0, 1, 9]]), [np.arange(5)], 2)
    np.testing.assert_allclose(got, [1.0])


def test_recall_and_precision_with_three_relevant_items():
    # relevant {2, 5, 7}; ranking [5, 0, 7, 1]: hits (1, 0, 1, 0).
    ranked = np.array([[5, 0, 7, 1]])
    rel = csr([[2, 5, 7]], 10)
    np.testing.assert_allclose(recall_at_k(ranked, rel, 1), [1 / 3])
    np.testing.assert_allclose(recall_at_k(ranked, rel, 4), [2 / 3])
    np.testing.assert_allclose(precision_at_k(ranked, rel, 2), [1 / 2])
    np.testing.assert_allclose(precision_at_k(ranked, rel, 4), [2 / 4])
    np.testing.assert_allclose(hit_rate_at_k(ranked, rel, 1), [1.0])


def test_mrr_first_hit_position():
    ranked = np.array([[9, 8, 3, 1], [1, 2, 3, 4], [5, 6, 7, 8]])
    rel = [np.array([3, 1]), np.array([1]), np.array([0])]
    # first hits at rank 3, rank 1, none.
    np.testing.assert_allclose(mrr_at_k(ranked, rel, 4), [1 / 3, 1.0, 0.0])
    # the first hit at rank 3 is outside K = 2.
    np.testing.assert_allclose(mrr_at_k(ranked, rel, 2), [0.0, 1.0, 0.0])


def test_map_normalised_by_min_k_r():
    # relevant {1, 3, 6}, ranking [1, 2, 3, 4, 5]: hits (1, 0, 1, 0, 0)
    # AP@5 = (P@1 + P@3) / min(5, 3) = (1 + 2/3) / 3
    ranked = np.array([[1, 2, 3, 4, 5]])
    rel = [np.array([1, 3, 6])]
    np.testing.assert_allclose(map_at_k(ranked, rel, 5), [(1 + 2 / 3) / 3])
    # AP@2 = P@1 / min(2, 3) = 1 / 2
    np.testing.assert_allclose(map_at_k(ranked, rel, 2), [0.5])
    # a perfect top-2 with R = 3 > K scores 1
    np.testing.assert_allclose(map_at_k(np.array([[6, 1]]), rel, 2), [1.0])


def test_padding_is_never_a_hit_but_keeps_its_position():
    # relevant {0}: the row [-1, 0] has its hit at rank 2; -1 never matches anything.
    ranked = np.array([[-1, 0], [-1, -1]])
    rel = [np.array([0]), np.array([0])]
    hits, n_rel = hit_matrix(ranked, rel)
    assert hits.tolist() == [[False, True], [False, False]]
    assert n_rel.tolist() == [1, 1]
    np.testing.assert_allclose(ndcg_at_k(ranked, rel, 2), [1 / LOG3, 0.0])
    np.testing.assert_allclose(precision_at_k(ranked, rel, 2), [0.5, 0.0])


def test_padding_cannot_collide_with_last_item_of_previous_row():
    # key encoding row * n_items + item: -1 in row 1 would equal item n_items-1 of row 0
    rel = csr([[4], []], 5)
    hits, _ = hit_matrix(np.array([[0], [-1]]), rel)
    assert not hits.any()


def test_users_without_relevant_items_are_nan_and_excluded():
    ranked = np.array([[1, 2], [1, 2]])
    rel = csr([[1], []], 4)
    for fn in (recall_at_k, precision_at_k, ndcg_at_k, hit_rate_at_k, mrr_at_k, map_at_k):
        values = fn(ranked, rel, 2)
        assert values[0] > 0 and np.isnan(values[1]), fn.__name__
    assert has_relevant(rel).tolist() == [True, False]
    assert mean_over_users(recall_at_k(ranked, rel, 2)) == 1.0
    result = compute_metrics(ranked, rel, ks=(1, 2))
    assert result["users"] == 1
    assert result["recall@1"] == 1.0 and result["precision@2"] == 0.5


def test_compute_metrics_keys_and_averages():
    ranked = np.array([[3, 1, 2], [0, -1, 5]])
    rel = [np.array([1, 2]), np.array([5, 7])]
    out = compute_metrics(ranked, rel, ks=(2, 3), metrics=("recall", "ndcg", "hr", "precision", "mrr", "map"))
    expected_keys = {f"{m}@{k}" for m in ("recall", "ndcg", "hr", "precision", "mrr", "map") for k in (2, 3)}
    assert set(out) == expected_keys | {"users"}
    # user 0 hits (0,1,1); user 1 hits (0,0,1), R = 2 each
    assert out["recall@3"] == pytest.approx((1.0 + 0.5) / 2)
    assert out["hr@2"] == pytest.approx(0.5)
    assert out["mrr@3"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert out["map@3"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + (1 / 3) / 2) / 2)
    assert out["ndcg@3"] == pytest.approx(((1 / LOG3 + 0.5) + 0.5) / (1 + 1 / LOG3) / 2)


def test_csr_and_list_inputs_agree_and_values_ignored():
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 30
    dense = rng.random((n_users, n_items)) < 0.2
    ranked = np.stack([rng.permutation(n_items)[:8] for _ in range(n_users)])
    as_list = [np.nonzero(row)[0] for row in dense]
    weighted = sp.csr_matrix(dense * rng.integers(1, 5, dense.shape))  # ratings: value ignored
    a = per_user_metrics(ranked, as_list, ks=(3, 8))
    b = per_user_metrics(ranked, weighted, ks=(3, 8))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_vectorised_metrics_match_a_direct_loop():
    rng = np.random.default_rng(1)
    n_users, n_items, k = 60, 25, 6
    ranked = np.stack([rng.permutation(n_items)[:k] for _ in range(n_users)])
    ranked[rng.random(ranked.shape) < 0.1] = -1
    ranked.sort(axis=1)  # padding first in some rows: still valid, -1 sits at its rank
    rel = [rng.choice(n_items, size=rng.integers(1, 8), replace=False) for _ in range(n_users)]
    got = per_user_metrics(ranked, rel, ks=(k,))
    for u in range(n_users):
        h = np.array([x in set(rel[u]) for x in ranked[u]], dtype=float)
        R = len(rel[u])
        disc = 1 / np.log2(np.arange(2, k + 2))
        assert got[f"recall@{k}"][u] == pytest.approx(h.sum() / R)
        assert got[f"ndcg@{k}"][u] == pytest.approx((h @ disc) / disc[: min(k, R)].sum())
        first = np.nonzero(h)[0]
        assert got[f"mrr@{k}"][u] == pytest.approx(1 / (first[0] + 1) if first.size else 0.0)
        ap = sum(h[: j + 1].sum() / (j + 1) for j in range(k) if h[j]) / min(k, R)
        assert got[f"map@{k}"][u] == pytest.approx(ap)


def test_auc_with_ties_counts_one_half():
    # pairs: (1>0)=1, (1 vs 2)=0, (2 vs 2)=1/2, (2>0)=1  -> 2.5 / 4
    assert auc(np.array([1.0, 2.0]), np.array([2.0, 0.0])) == pytest.approx(0.625)
    assert auc([3.0], [3.0, 3.0]) == pytest.approx(0.5)
    assert auc([5.0], [1.0, 2.0]) == 1.0
    # row-wise (sampled): one positive against its own negatives
    rows = auc(np.array([[1.0], [0.0]]), np.array([[0.0, 1.0, 2.0], [0.0, -1.0, 5.0]]))
    np.testing.assert_allclose(rows, [(1 + 0.5) / 3, (0.5 + 1) / 3])


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(2)
    pos = rng.integers(0, 5, 17).astype(float)
    neg = rng.integers(0, 5, 23).astype(float)
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert auc(pos, neg) == pytest.approx(pairwise, rel=1e-12)


def test_errors_name_the_problem():
    rel = [np.array([0])]
    with pytest.raises(ValueError, match="repeats"):
        recall_at_k(np.array([[0, 0]]), rel, 2)
    with pytest.raises(ValueError, match="k=3 exceeds"):
        recall_at_k(np.array([[0, 1]]), rel, 3)
    with pytest.raises(ValueError, match="< -1"):
        recall_at_k(np.array([[-2, 1]]), rel, 1)
    with pytest.raises(ValueError, match="rows"):
        recall_at_k(np.array([[0, 1], [1, 2]]), rel, 1)
    with pytest.raises(ValueError, match="columns"):
        recall_at_k(np.array([[7]]), csr([[0]], 3), 1)
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        compute_metrics(np.array([[0]]), rel, ks=(1,), metrics=("auc",))
    with pytest.raises(TypeError, match="int item ids"):
        recall_at_k(np.array([[0.0]]), rel, 1)
    with pytest.raises(ValueError, match="NaN"):
        auc([np.nan], [1.0])
