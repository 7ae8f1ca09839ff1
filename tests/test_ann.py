"""The HNSW index (faiss) against the exact scan: recall, and exact exclusion."""

import numpy as np
import pytest

from recgrad.engine import default_engine_set
from recgrad.serving.index import ExactIndex, HNSWIndex

faiss = pytest.importorskip("faiss", reason="faiss-cpu is not installed (the ann extra)")


def _catalogue(n=5000, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32), rng.normal(size=(100, dim)).astype(np.float32)


def test_the_exact_scan_compiled_equals_the_numpy_reference():
    """Same ids and scores from the compiled masked scan and the reference, with excluded ids given
    unsorted, repeated or absent from the table, and padding where too few rows are left."""
    vectors, queries = _catalogue(n=30)
    index = ExactIndex(vectors, ids=np.arange(30) * 3)
    exclude = [np.array([9, 3, 9, 4]), np.zeros(0, dtype=np.int64), np.arange(0, 90, 3)[:25], np.array([87])]
    compiled = index.search(queries[:4], 8, exclude)
    with default_engine_set("numpy"):
        reference = index.search(queries[:4], 8, exclude)
    np.testing.assert_array_equal(compiled[0], reference[0])
    np.testing.assert_array_equal(compiled[1], reference[1])
    assert (compiled[0][2] == -1).sum() == 3 and not np.isin(compiled[0][0], [3, 9]).any()


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


def _recall(index, vectors, queries):
    exclude = [np.zeros(0, dtype=np.int64)] * len(queries)
    exact, _ = ExactIndex(vectors).search(queries, 20, exclude)
    approx, _ = index.search(queries, 20, exclude)
    return np.mean([len(set(a) & set(e)) / 20 for a, e in zip(approx, exact)])


def test_auto_ef_search_reaches_the_target_recall_on_new_queries():
    vectors, queries = _catalogue()
    index = HNSWIndex(vectors, threads=1, target_recall=0.97)
    assert index.calibration_recall >= 0.97 and index.ef_search in (32, 64, 128, 256, 512, 1024, 2048, 4096)
    assert _recall(index, vectors, queries) >= 0.95  # queries it was not calibrated on
    fixed = HNSWIndex(vectors, threads=1, ef_search=40)
    assert fixed.ef_search == 40 and fixed.calibration_recall is None


def test_auto_ef_search_is_smaller_on_an_easier_table():
    """Gaussian rows in 16 dimensions are easier for a graph than in 64: a shorter search list
    reaches the same recall."""
    rng = np.random.default_rng(1)
    easy = HNSWIndex(rng.normal(size=(5000, 16)).astype(np.float32), threads=1, target_recall=0.99)
    hard = HNSWIndex(rng.normal(size=(5000, 64)).astype(np.float32), threads=1, target_recall=0.99)
    assert easy.calibration_recall >= 0.99 and hard.calibration_recall >= 0.99
    assert easy.ef_search < hard.ef_search


def test_calibration_uses_the_given_queries():
    vectors, queries = _catalogue()
    index = HNSWIndex(vectors, threads=1, calibration_queries=queries, calibration_N=10, target_recall=0.9)
    exclude = [np.zeros(0, dtype=np.int64)] * len(queries)
    exact, _ = ExactIndex(vectors).search(queries, 10, exclude)
    approx, _ = index.search(queries, 10, exclude)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert index.calibration_recall == pytest.approx(recall)  # measured on these queries, not on rows


@pytest.mark.parametrize("arguments, name", [
    ({"ef_search": "fast"}, "ef_search"), ({"ef_search": 0}, "ef_search"), ({"ef_search": True}, "ef_search"),
    ({"target_recall": 0}, "target_recall"), ({"target_recall": 1.5}, "target_recall"),
    ({"calibration_queries": np.zeros((3, 5), dtype=np.float32)}, "calibration_queries"),
    ({"calibration_queries": np.zeros((0, 16), dtype=np.float32)}, "calibration_queries"),
    ({"calibration_N": 0}, "calibration_N"),
])
def test_bad_arguments_name_themselves(arguments, name):
    vectors, _ = _catalogue(n=50)
    with pytest.raises(ValueError, match=name):
        HNSWIndex(vectors, threads=1, **arguments)
