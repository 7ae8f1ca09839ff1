"""Protocols on tiny cases with known answers: top_k order and ties, full ranking, NCF sampled, popularity."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recgrad.evaluation import (
    default_block_size,
    evaluate_popularity,
    evaluate_popularity_sampled,
    format_metrics_table,
    full_ranking,
    popularity_scores,
    sampled_ranking,
    top_k,
)
from recgrad.kernels import get_num_threads
from recgrad.metrics import compute_metrics


def csr(rows, n_items):
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows])
    return sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(len(rows), n_items))


# ---------------------------------------------------------------- top_k


def test_top_k_tie_rule_hand_case():
    # scores 1, 3, 3, 2, 3: the three 3s tie; lower id first; top-2 keeps ids 1 and 2 (not 4)
    ids, vals = top_k(np.array([1.0, 3.0, 3.0, 2.0, 3.0]), 2)
    assert ids.tolist() == [1, 2]
    assert vals.tolist() == [3.0, 3.0]
    ids, _ = top_k(np.array([1.0, 3.0, 3.0, 2.0, 3.0]), 4)
    assert ids.tolist() == [1, 2, 4, 3]


@pytest.mark.parametrize("n_items", [6, 300, 20000])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_top_k_equals_stable_full_argsort_with_many_ties(n_items, k):
    # integer scores make ties at the K boundary the rule, not the exception; -inf like masked items
    rng = np.random.default_rng(n_items + k)
    scores = rng.integers(0, 5, size=(9, n_items)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    ids, vals = top_k(scores, k)
    kk = min(k, n_items)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
    np.testing.assert_array_equal(ids[:, :kk], expected)
    np.testing.assert_array_equal(vals[:, :kk], np.take_along_axis(scores, expected, axis=1))
    assert vals.dtype == np.float32 and ids.dtype == np.int64


def test_top_k_continuous_scores_match_argsort():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(20, 9000))
    ids, _ = top_k(scores, 20)
    np.testing.assert_array_equal(ids, np.argsort(-scores, axis=1, kind="stable")[:, :20])


def test_top_k_pads_when_k_exceeds_items_and_rejects_nan():
    ids, vals = top_k(np.array([[0.5, 2.0]]), 4)
    assert ids.tolist() == [[1, 0, -1, -1]]
    assert vals[0, 2:].tolist() == [-np.inf, -np.inf]
    bad = np.zeros((2, 5000))
    bad[1, 4321] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        top_k(bad, 3)
    with pytest.raises(ValueError, match="positive int"):
        top_k(np.zeros((1, 3)), 0)


# ---------------------------------------------------------------- full ranking


def tiny_case():
    # 3 users x 5 items. scores rank items 4 > 3 > 2 > 1 > 0 for everyone.
    scores = np.tile(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), (3, 1))
    train = csr([[4], [0], [1]], 5)
    test = csr([[3, 0], [4], [0]], 5)  # user 2's test item 0 scores lowest
    return scores, train, test


def test_full_ranking_known_answer_with_train_masked():
    scores, train, test = tiny_case()
    out = full_ranking(lambda u: scores[u].copy(), train, test, ks=(1, 2), metrics=("recall", "ndcg", "hr"))
    # masked rankings: user0 (4 masked) 3,2,1,0 -> test {3,0}: top1 hit, top2 1 hit
    #                  user1 (0 masked) 4,3,2,1 -> test {4}: hit at rank 1
    #                  user2 (1 masked) 4,3,2,0 -> test {0}: no hit in top 2
    assert out["users"] == 3
    assert out["recall@1"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert out["recall@2"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert out["hr@2"] == pytest.approx(2 / 3)
    idcg2 = 1 + 1 / math.log2(3)
    assert out["ndcg@2"] == pytest.approx((1 / idcg2 + 1 + 0) / 3)


def test_train_items_are_masked_even_if_they_would_be_hits():
    # the user's train item also appears in test (overlapping split): masked, so never a hit
    scores = np.array([[5.0, 1.0, 0.0]])
    train, test = csr([[0]], 3), csr([[0, 2]], 3)
    masked = full_ranking(lambda u: scores[u].copy(), train, test, ks=(3,), metrics=("recall",))
    unmasked = full_ranking(
        lambda u: scores[u].copy(), train, test, ks=(3,), metrics=("recall",), exclude_train=False
    )
    assert masked["recall@3"] == pytest.approx(0.5)  # only item 2 can hit; item 0 is never listed
    assert unmasked["recall@3"] == pytest.approx(1.0)


def test_masked_items_never_fill_a_short_list():
    # 2 items, 1 trained: top-2 holds one real item and the padding -1, not the masked item
    scores = np.array([[9.0, 1.0]])
    out = full_ranking(lambda u: scores[u].copy(), csr([[0]], 2), csr([[0, 1]], 2), ks=(2,), metrics=("precision",))
    assert out["precision@2"] == pytest.approx(0.5)


def test_full_ranking_block_size_invariance_and_equals_compute_metrics():
    rng = np.random.default_rng(4)
    n_users, n_items = 37, 60
    scores = rng.integers(0, 6, size=(n_users, n_items)).astype(np.float64)  # exact, tie-heavy
    dense_train = rng.random((n_users, n_items)) < 0.15
    dense_test = (rng.random((n_users, n_items)) < 0.1) & ~dense_train
    dense_test[5] = False  # a user with no test item: not evaluated
    train, test = sp.csr_matrix(dense_train), sp.csr_matrix(dense_test)
    kwargs = dict(ks=(5, 10), metrics=("recall", "ndcg", "hr", "precision", "mrr", "map"))
    results = [full_ranking(lambda u: scores[u], train, test, block_size=b, **kwargs) for b in (1, 7, n_users, None)]
    kernel_threads = get_num_threads()
    for threads in (2, 3):  # worker threads over blocks of 7 users, then over blocks of 1
        results.append(full_ranking(lambda u: scores[u], train, test, block_size=7, threads=threads, **kwargs))
        results.append(full_ranking(lambda u: scores[u], train, test, block_size=1, threads=threads, **kwargs))
    results.append(full_ranking(lambda u: scores[u].copy(), train, test, block_size=7, threads=2, engine="numpy",
                                **kwargs))
    assert get_num_threads() == kernel_threads  # the scan's thread count is restored
    for r in results[1:]:
        assert r == results[0]
    assert results[0]["users"] == int((dense_test.sum(1) > 0).sum())
    masked = np.where(dense_train, -np.inf, scores)
    ranked = np.argsort(-masked, axis=1, kind="stable")[:, :10]
    ranked[np.take_along_axis(masked, ranked, axis=1) == -np.inf] = -1
    reference = compute_metrics(ranked, test, **kwargs)
    for key, value in results[0].items():
        assert value == pytest.approx(reference[key], rel=1e-12), key


def test_full_ranking_users_subset_and_errors():
    scores, train, test = tiny_case()
    out = full_ranking(lambda u: scores[u].copy(), train, test, ks=(1,), metrics=("hr",), users=[1])
    assert out == {"hr@1": 1.0, "users": 1}
    with pytest.raises(ValueError, match="score_fn returned shape"):
        full_ranking(lambda u: scores[u][:, :3], train, test)
    with pytest.raises(ValueError, match="shape"):
        full_ranking(lambda u: scores[u], train, csr([[0]], 5))
    with pytest.raises(TypeError, match="train"):
        full_ranking(lambda u: scores[u], scores, test)
    with pytest.raises(ValueError, match="block_size"):
        full_ranking(lambda u: scores[u], train, test, block_size=0)
    with pytest.raises(ValueError, match="threads"):
        full_ranking(lambda u: scores[u], train, test, threads=0)


def test_full_ranking_copies_views_and_read_only_scores_before_masking():
    scores, train, test = tiny_case()
    before = scores.copy()
    full_ranking(lambda u: scores[:3], train, test, block_size=3)  # a view of the caller's array
    readonly = scores.copy()
    readonly.flags.writeable = False
    full_ranking(lambda u: readonly, train, test, block_size=3)
    np.testing.assert_array_equal(scores, before)
    np.testing.assert_array_equal(readonly, before)


def test_default_block_size_from_memory_budget():
    assert default_block_size(40981) == 409  # 64 MiB of float32 rows
    assert default_block_size(10**9) == 1


# ---------------------------------------------------------------- sampled (NCF) protocol


def test_sampled_ranking_hand_case_with_tie_is_pessimistic():
    # item scores: item i scores table[i]. user 0's positive (item 0, score 5) ties with negative 3.
    table = np.array([5.0, 9.0, 1.0, 5.0, 0.0, 2.0])

    def score_pairs(users, items):
        return table[items]

    users = np.array([0, 1])
    items = np.array([0, 5])
    negatives = np.array([[1, 2, 3], [2, 4, 5]])  # user 1 lists its own positive (5) as a negative
    out = sampled_ranking(score_pairs, users, items, negatives, ks=(1, 2))
    # user 0: negatives >= 5: item 1 (9) and item 3 (5, tie counts against) -> rank 2 (0-based)
    # user 1: positive 5 scores 2; negatives 2 (1), 4 (0); item 5 itself ignored -> rank 0
    assert out["users"] == 2
    assert out["hr@1"] == pytest.approx(0.5)
    assert out["hr@2"] == pytest.approx(0.5)
    assert out["ndcg@1"] == pytest.approx(0.5)
    out3 = sampled_ranking(score_pairs, users, items, negatives, ks=(3,))
    assert out3["hr@3"] == 1.0
    assert out3["ndcg@3"] == pytest.approx((1 / math.log2(4) + 1.0) / 2)


def test_sampled_ranking_duplicate_negatives_count_once_and_blocks_agree():
    rng = np.random.default_rng(5)
    table = rng.integers(0, 4, size=(50, 40)).astype(float)
    users = np.arange(50)
    items = rng.integers(0, 40, 50)
    negatives = rng.integers(0, 40, size=(50, 99))  # many repeats and collisions with positives
    fn = lambda u, i: table[u, i]  # noqa: E731
    a = sampled_ranking(fn, users, items, negatives, ks=(5, 10), block_size=7)
    b = sampled_ranking(fn, users, items, negatives, ks=(5, 10))
    assert a == b
    ranks = []
    for u in range(50):
        negs = set(negatives[u].tolist()) - {items[u]}
        ranks.append(sum(table[u, j] >= table[u, items[u]] for j in negs))
    ranks = np.array(ranks)
    assert a["hr@10"] == pytest.approx((ranks < 10).mean())
    assert a["ndcg@5"] == pytest.approx(np.where(ranks < 5, 1 / np.log2(ranks + 2), 0).mean())


def test_sampled_ranking_errors():
    fn = lambda u, i: np.zeros(u.size)  # noqa: E731
    with pytest.raises(ValueError, match="negatives"):
        sampled_ranking(fn, np.arange(2), np.arange(2), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="NaN"):
        sampled_ranking(lambda u, i: np.full(u.size, np.nan), np.arange(2), np.arange(2), np.zeros((2, 4), int))
    with pytest.raises(ValueError, match="score_fn_pairs returned shape"):
        sampled_ranking(lambda u, i: np.zeros(3), np.arange(2), np.arange(2), np.zeros((2, 4), int))


# ---------------------------------------------------------------- popularity baseline


def test_popularity_baseline_tiny_case():
    # train counts: item0 3, item1 2, item2 2, item3 0
    train = csr([[0, 1], [0, 2], [0, 1, 2]], 4)
    np.testing.assert_array_equal(popularity_scores(train), [3, 2, 2, 0])
    test = csr([[2], [1], [3]], 4)
    out = evaluate_popularity(train, test, ks=(1,), metrics=("hr",))
    # user0: 0,1 masked -> 2 first (hit); user1: 0,2 masked -> 1 (hit); user2: only 3 left (hit)
    assert out == {"hr@1": 1.0, "users": 3}
    sampled = evaluate_popularity_sampled(train, np.array([0, 1]), np.array([1, 3]), np.array([[2, 3], [0, 2]]),
                                          ks=(1,))
    # user 0: item 1 (2) ties item 2 (2) -> pessimistic rank 1; user 1: item 3 (0) below both -> rank 2
    assert sampled == {"hr@1": 0.0, "ndcg@1": 0.0, "users": 2}


# ---------------------------------------------------------------- table


def test_format_metrics_table():
    text = format_metrics_table(
        {"MF": {"recall@20": 0.12345, "ndcg@20": 0.1, "users": 3}, "popularity": {"recall@20": 0.05}}
    )
    lines = text.splitlines()
    assert lines[0].split() == ["model", "recall@20", "ndcg@20", "users"]
    assert lines[2].split() == ["MF", "0.1235", "0.1000", "3"]
    assert lines[3].split() == ["popularity", "0.0500", "-", "-"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
