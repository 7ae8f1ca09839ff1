"""The fused mask-and-top-K kernel against its reference: evaluation.top_k on the masked scores.

Reference for a block: set the masked entries to -inf, ``top_k``, then ``ids[score == -inf] = -1``
(the full-ranking rule). The kernel must return the same ids and scores bit for bit, on ties,
short rows (padding), float32 and float64, any thread count; and full_ranking must give the same
metrics with either engine.
"""

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from recgrad import evaluation
from recgrad.engine import default_engine_set
from recgrad.evaluation import evaluate_popularity, full_ranking, top_k
from recgrad.kernels.topk import _CHUNK, _bits_above, top_k_masked
from recgrad.metrics import hit_matrix


def reference(scores, k, mask=None):
    masked = np.array(scores, copy=True)
    if mask is not None:
        rows, cols = mask.nonzero()
        masked[rows, cols] = -np.inf
    ids, vals = top_k(masked, k)
    ids[np.isneginf(vals)] = -1
    return ids, vals


def random_mask(rng, shape, density):
    return sp.csr_matrix(rng.random(shape) < density)


def assert_same(scores, k, mask=None):
    ids, vals, _ = top_k_masked(scores, k, mask=mask)
    ref_ids, ref_vals = reference(scores, k, mask)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(vals, ref_vals)
    assert ids.dtype == np.int64 and vals.dtype == scores.dtype
    return ids, vals


# sizes around the chunk length (whole chunks, tails, runs shorter than a chunk) and larger
ODD_SIZES = [1, 2, 7, _CHUNK - 1, _CHUNK, _CHUNK + 1, 3 * _CHUNK + 5, 1001, 4099]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_items", ODD_SIZES)
def test_random_scores_with_masks_match_reference(dtype, n_items):
    rng = np.random.default_rng(n_items)
    scores = rng.standard_normal((11, n_items)).astype(dtype)
    for k in (1, 5, 20):
        for density in (0.0, 0.05, 0.5):
            assert_same(scores, k, random_mask(rng, scores.shape, density))
        assert_same(scores, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_items", [3, _CHUNK + 3, 700, 5000])
def test_tie_heavy_integer_scores_break_ties_by_lower_id(dtype, n_items):
    # few distinct values: ties at the K boundary in almost every row; -inf entries too
    rng = np.random.default_rng(7 + n_items)
    scores = rng.integers(0, 4, size=(13, n_items)).astype(dtype)
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    for k in (1, 4, 20, 64):
        ids, _ = assert_same(scores, k, random_mask(rng, scores.shape, 0.2))
    # the rule itself, by hand: 1, 3, 3, 2, 3 with item 2 masked -> 1, 4, 3 then padding
    ids, vals, _ = top_k_masked(np.array([[1.0, 3.0, 3.0, 2.0, 3.0]], dtype), 5, mask=sp.csr_matrix([[0, 0, 1, 0, 0]]))
    assert ids.tolist() == [[1, 4, 3, 0, -1]]
    assert vals.tolist() == [[3.0, 3.0, 2.0, 1.0, -np.inf]]


def test_constant_rows_and_sorted_rows():
    # a constant model: the k lowest unmasked ids; ascending scores: every item enters the buffer
    constant = np.zeros((3, 500), np.float32)
    mask = sp.csr_matrix(([1, 1], ([0, 0], [0, 2])), shape=(3, 500))
    ids, _ = assert_same(constant, 4, mask)
    assert ids[0].tolist() == [1, 3, 4, 5]
    ascending = np.tile(np.arange(300, dtype=np.float64), (2, 1))
    descending = ascending[:, ::-1].copy()
    assert_same(ascending, 20)
    assert_same(descending, 20)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bits_above_marks_each_score_not_below_the_threshold(dtype):
    # bit t <=> not (chunk[t] <= threshold): above it or NaN; equal and -inf scores are clear
    rng = np.random.default_rng(13)
    chunk = rng.integers(-3, 4, _CHUNK).astype(dtype)
    chunk[[0, 17, _CHUNK - 1]] = [np.nan, np.inf, 2.0]
    chunk[5] = -np.inf
    for threshold in (-np.inf, -1.0, 0.0, 1.0, 3.0):
        with np.errstate(invalid="ignore"):
            above = ~(chunk <= threshold)
        expected = sum(1 << int(t) for t in np.flatnonzero(above))
        assert int(_bits_above(chunk, dtype(threshold))) == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_excluded_candidates_at_chunk_edges(dtype):
    # ascending scores: every item is a candidate when offered, so each excluded id is reached
    # by the pointer walk; excluded ids on the first/last bit of a chunk and in the tail
    n_items = 3 * _CHUNK + 9
    scores = np.tile(np.arange(n_items, dtype=dtype), (4, 1))
    scores[1] = scores[1, ::-1]
    scores[2, :: _CHUNK // 2] = np.nan  # each NaN sits on an excluded position
    edges = [0, 1, _CHUNK - 1, _CHUNK, 2 * _CHUNK - 1, 3 * _CHUNK, n_items - 2, n_items - 1]
    excluded = sorted(set(edges) | set(range(0, n_items, _CHUNK // 2)))
    mask = sp.csr_matrix((np.ones(4 * len(excluded)), (np.repeat(np.arange(4), len(excluded)), excluded * 4)),
                         shape=scores.shape)
    for k in (1, 3, 20, n_items):
        ids, _ = assert_same(scores, k, mask)
        assert not np.isin(ids, excluded).any()


def test_k_larger_than_candidates_pads_with_minus_one():
    scores = np.array([[0.5, 2.0, -1.0], [1.0, 1.0, 1.0], [np.inf, -np.inf, 3.0]], np.float32)
    mask = sp.csr_matrix([[1, 0, 0], [1, 1, 1], [0, 0, 0]])
    ids, vals = assert_same(scores, 5, mask)
    assert ids.tolist() == [[1, 2, -1, -1, -1], [-1] * 5, [0, 2, -1, -1, -1]]
    assert vals[2, :2].tolist() == [np.inf, 3.0]
    assert np.isneginf(vals[0, 2:]).all() and np.isneginf(vals[1]).all()


def test_nan_raises_like_the_reference_but_not_under_the_mask():
    for n_items, where in ((5, 3), (3 * _CHUNK, _CHUNK + 2), (3 * _CHUNK + 7, 3 * _CHUNK + 5)):
        scores = np.zeros((2, n_items))
        scores[1, where] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            reference(scores, 3)
        with pytest.raises(ValueError, match=r"NaN outside the mask \(row 1\)"):
            top_k_masked(scores, 3)
        # masked NaN: the reference overwrites it with -inf, the kernel never reads it
        mask = sp.csr_matrix(([1], ([1], [where])), shape=scores.shape)
        assert_same(scores, 3, mask)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hits_equal_metrics_hit_matrix(dtype):
    rng = np.random.default_rng(11)
    scores = rng.integers(0, 6, size=(17, 333)).astype(dtype)
    mask = random_mask(rng, scores.shape, 0.1)
    relevant = random_mask(rng, scores.shape, 0.05)
    ids, _, hits = top_k_masked(scores, 30, mask=mask, relevant=relevant)
    expected, _ = hit_matrix(ids, relevant)
    np.testing.assert_array_equal(hits, expected)
    assert hits.any() and not hits[ids < 0].any()
    assert top_k_masked(scores, 3)[2] is None


def test_thread_count_does_not_change_the_result(kernel_threads):
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 3, size=(64, 2000)).astype(np.float32)
    mask = random_mask(rng, scores.shape, 0.1)
    kernel_threads(1)
    one = top_k_masked(scores, 20, mask=mask)
    again = top_k_masked(scores, 20, mask=mask)
    kernel_threads(numba.config.NUMBA_NUM_THREADS)
    many = top_k_masked(scores, 20, mask=mask)
    for a, b, c in zip(one[:2], again[:2], many[:2]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_layouts_empty_shapes_and_errors():
    rng = np.random.default_rng(2)
    wide = rng.standard_normal((9, 400))
    assert_same(wide[:, ::3], 7)  # non-contiguous: copied
    assert_same(np.asfortranarray(wide), 7)
    ids, vals, _ = top_k_masked(np.zeros((0, 10), np.float32), 3)
    assert ids.shape == (0, 3) and vals.shape == (0, 3)
    ids, _, _ = top_k_masked(np.zeros((2, 0)), 3)
    assert ids.tolist() == [[-1] * 3] * 2
    # an unsorted CSR mask is canonicalised, not misread
    unsorted = sp.csr_matrix((np.ones(2), np.array([9, 1]), np.array([0, 2])), shape=(1, 10))
    assert not unsorted.has_canonical_format
    ids, _, _ = top_k_masked(np.arange(10.0)[None, :], 3, mask=unsorted)
    assert ids.tolist() == [[8, 7, 6]]
    with pytest.raises(TypeError, match="scores"):
        top_k_masked(np.zeros((2, 3), np.int64), 1)
    with pytest.raises(TypeError, match="scores"):
        top_k_masked(np.zeros(3), 1)
    with pytest.raises(ValueError, match="k must"):
        top_k_masked(np.zeros((2, 3)), 0)
    with pytest.raises(ValueError, match="mask has 3 rows"):
        top_k_masked(np.zeros((2, 3)), 1, mask=sp.csr_matrix((3, 3)))
    with pytest.raises(TypeError, match="relevant"):
        top_k_masked(np.zeros((2, 3)), 1, relevant=np.zeros((2, 3)))


# ---------------------------------------------------------------- full_ranking, both engines


def synthetic_case(seed, n_users=41, n_items=90, dtype=np.float64):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, size=(n_users, n_items)).astype(dtype)  # exact and tie-heavy
    train = rng.random((n_users, n_items)) < 0.15
    test = (rng.random((n_users, n_items)) < 0.1) & ~train
    test[3] = False  # a user without test items is not evaluated
    return scores, sp.csr_matrix(train), sp.csr_matrix(test)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_full_ranking_engines_give_identical_metrics_for_any_block_size(dtype):
    scores, train, test = synthetic_case(1, dtype=dtype)
    kwargs = dict(ks=(1, 5, 20), metrics=("recall", "ndcg", "hr", "precision", "mrr", "map"))
    expected = full_ranking(lambda u: scores[u], train, test, engine="numpy", **kwargs)
    for block_size in (1, 7, scores.shape[0], None):
        for engine in ("compiled", "numpy"):
            got = full_ranking(lambda u: scores[u], train, test, block_size=block_size, engine=engine, **kwargs)
            assert got == expected, (block_size, engine)
    unmasked = [full_ranking(lambda u: scores[u], train, test, exclude_train=False, engine=e, **kwargs)
                for e in ("compiled", "numpy")]
    assert unmasked[0] == unmasked[1] != expected


def test_full_ranking_engines_on_factor_scores_and_popularity():
    rng = np.random.default_rng(3)
    _, train, test = synthetic_case(4, n_users=60, n_items=150)
    users, items = rng.standard_normal((60, 8)).astype(np.float32), rng.standard_normal((150, 8)).astype(np.float32)
    results = [full_ranking(lambda u: users[u] @ items.T, train, test, ks=(10,), block_size=None, engine=e)
               for e in ("compiled", "numpy")]
    assert results[0] == results[1]
    # popularity: a read-only broadcast block (the reference copies it, the kernel only reads it)
    assert evaluate_popularity(train, test, ks=(5,)) == full_ranking(
        lambda u: np.broadcast_to(np.bincount(train.indices, minlength=150).astype(np.float32), (u.size, 150)),
        train, test, ks=(5,), engine="numpy")


def test_full_ranking_engine_errors():
    scores, train, test = synthetic_case(2)
    with pytest.raises(ValueError, match="^engine: expected one of auto, compiled, numpy, got 'torch'$"):
        full_ranking(lambda u: scores[u], train, test, engine="torch")
    bad = scores.copy()
    bad[5, 7] = np.nan
    for engine in ("compiled", "numpy"):
        with pytest.raises(ValueError, match="NaN"):
            full_ranking(lambda u: bad[u], train, test, engine=engine, exclude_train=False)


def test_full_ranking_runs_the_kernel_by_default_and_the_reference_when_switched(monkeypatch):
    scores, train, test = synthetic_case(5)
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return top_k_masked(*args, **kwargs)

    monkeypatch.setattr(evaluation, "top_k_masked", counted)
    default = full_ranking(lambda u: scores[u], train, test, block_size=10)
    assert len(calls) == 4  # 40 evaluated users in blocks of 10
    with default_engine_set("numpy"):
        forced = full_ranking(lambda u: scores[u], train, test, block_size=10)
        assert len(calls) == 4
        full_ranking(lambda u: scores[u], train, test, block_size=10, engine="compiled")
        assert len(calls) == 8
    assert forced == default
