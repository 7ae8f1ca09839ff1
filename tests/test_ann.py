"""The HNSW index (faiss) against the exact scan: recall, and exact exclusion."""

import numpy as np
import pytest

from recgrad.serving.index import ExactIndex, HNSWIndex

faiss = pytest.importorskip("faiss", reason="faiss-cpu is not installed (the ann extra)")


def _catalogue(n=5000, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32), rng.normal(size=(100, dim)).astype(np.float32)


def test_hnsw_top20_recall_against_the_exact_scan():
    vectors, queries = _catalogue()
    exclude = [np.zeros(0, dtype=np.int64)] * len(queries)
    exact, exact_scores = ExactIndex(vectors).search(queries, 20, exclude)
    approx, approx_scores = HNSWIndex(vectors, threads=1).search(queries, 20, exclude)
    recall = np.mean([len(set(a) & set(e)) / 20 for a, e in zip(approx, exact)])
    assert recall >= 0.95
    assert np.all(np.diff(approx_scores, axis=1) <= 1e-6)
    np.testing.assert_allclose(approx_scores[:, 0], exact_scores[:, 0], rtol=1e-4)  # the best is found


def test_exclusion_is_exact_and_refetches_when_too_many_are_excluded():
    vectors, queries = _catalogue(n=400)
    index = HNSWIndex(vectors, threads=1)
    best, _ = ExactIndex(vectors).search(queries[:1], 300, [np.zeros(0, dtype=np.int64)])
    excluded = best[0][:250]  # the 250 best: the first fetch of 20 + 250 finds few others
    ids, scores = index.search(queries[:1], 20, [excluded])
    assert not np.isin(ids, excluded).any() and (ids >= 0).all()
    exact, _ = ExactIndex(vectors).search(queries[:1], 20, [excluded])
    assert len(set(ids[0]) & set(exact[0])) >= 18


def test_a_small_catalogue_pads_and_ids_name_the_rows():
    vectors = np.eye(3, dtype=np.float32)
    ids, scores = HNSWIndex(vectors, ids=[10, 20, 30]).search(np.array([[1.0, 0.5, 0.0]]), 5, [np.array([20])])
    np.testing.assert_array_equal(ids[0], [10, 30, -1, -1, -1])
    assert np.isneginf(scores[0, 2:]).all()
