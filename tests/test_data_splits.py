"""Splits, the synthetic generator and statistics."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as sla

from recgrad.data import (
    Dataset,
    format_statistics,
    leave_one_out,
    random_holdout,
    split_validation,
    statistics,
    synthetic,
    with_test_split,
    with_validation,
)
from recgrad.data.dataset import interactions_to_csr


def random_matrix(n_users=60, n_items=40, density=0.2, seed=1):
    matrix = sp.random(n_users, n_items, density=density, format="csr", random_state=seed, dtype=np.float32)
    matrix.data[:] = 1.0
    return matrix


def test_random_holdout_sizes_disjoint_and_seeded():
    matrix = random_matrix()
    train, test = random_holdout(matrix, ratio=0.2, seed=3)
    counts = np.diff(matrix.indptr)
    expected = np.minimum(np.floor(0.2 * counts + 0.5), np.maximum(counts - 1, 0))
    assert np.diff(test.indptr).tolist() == expected.astype(int).tolist()
    assert train.multiply(test).nnz == 0
    assert (train + test != matrix).nnz == 0
    again_train, again_test = random_holdout(matrix, ratio=0.2, seed=3)
    assert (again_test != test).nnz == 0
    other_train, other_test = random_holdout(matrix, ratio=0.2, seed=4)
    assert (other_test != test).nnz > 0


def test_single_interaction_users_stay_in_train():
    matrix = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=np.float32))
    train, validation = split_validation(matrix, ratio=0.4, seed=0)  # holds out 0, 1, 1
    assert np.diff(train.indptr).tolist() == [1, 1, 2]
    assert np.diff(validation.indptr).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="ratio"):
        split_validation(matrix, ratio=1.0)


def test_leave_one_out_picks_latest_with_deterministic_ties():
    users = np.array([0, 0, 0, 1, 1, 2])
    items = np.array([0, 1, 2, 0, 3, 1])
    stamps = np.array([5.0, 9.0, 1.0, 7.0, 7.0, 3.0])
    matrix, aligned, _ = interactions_to_csr(users, items, (3, 4), timestamps=stamps)
    train, test = leave_one_out(matrix, aligned)
    assert [test[u].indices.tolist() for u in range(3)] == [[1], [3], []]  # user 1: tie -> larger item
    assert train.nnz == 4 and train.multiply(test).nnz == 0


def test_dataset_level_splits_keep_timestamps_aligned():
    users = np.array([0, 0, 0, 1, 1])
    items = np.array([2, 0, 1, 1, 0])
    stamps = np.array([30.0, 10.0, 20.0, 1.0, 2.0])
    matrix, aligned, _ = interactions_to_csr(users, items, (2, 3), timestamps=stamps)
    data = Dataset(train=matrix, user_ids=np.arange(2), item_ids=np.arange(3), train_timestamps=aligned)
    split = with_test_split(data, method="leave_one_out")
    assert dense_rows(split.test) == [[2], [0]]
    assert split.train_timestamps.tolist() == [10.0, 20.0, 1.0]
    with pytest.raises(ValueError, match="already has a test set"):
        with_test_split(split)
    validated = with_validation(split, ratio=0.5, seed=0)
    assert validated.validation.nnz == 1 and validated.train.nnz == 2
    assert len(validated.train_timestamps) == validated.train.nnz


def dense_rows(matrix):
    return [matrix[u].indices.tolist() for u in range(matrix.shape[0])]


def test_synthetic_is_deterministic_and_shaped():
    a = synthetic(n_users=300, n_items=500, interactions_per_user=20, seed=7)
    b = synthetic(n_users=300, n_items=500, interactions_per_user=20, seed=7)
    c = synthetic(n_users=300, n_items=500, interactions_per_user=20, seed=8)
    assert a.name == "synthetic" and "SYNTHETIC" in synthetic.__doc__
    assert a.train.shape == a.test.shape == (300, 500)
    assert (a.train != b.train).nnz == 0 and (a.test != b.test).nnz == 0
    assert (a.train != c.train).nnz > 0
    assert a.train.multiply(a.test).nnz == 0
    assert np.diff((a.train + a.test).indptr).min() >= 5
    assert abs((a.train.nnz + a.test.nnz) / 300 - 20) < 2


def recall_at_20(scores, train, test):
    scores = scores.copy()
    scores[train.nonzero()] = -np.inf
    top = np.argpartition(-scores, 20, axis=1)[:, :20]
    hits = np.take_along_axis(test.toarray() > 0, top, axis=1).sum(axis=1)
    n_test = np.diff(test.indptr)
    has = n_test > 0
    return float(np.mean(hits[has] / np.minimum(n_test[has], 20)))


def test_synthetic_is_learnable_beyond_popularity():
    data = synthetic()
    train = data.train.astype(np.float64)
    popularity = np.tile(np.asarray(train.sum(axis=0)), (data.n_users, 1))
    u, s, vt = sla.svds(train, k=16, random_state=0)
    popularity_recall = recall_at_20(popularity, train, data.test)
    factor_recall = recall_at_20((u * s) @ vt, train, data.test)
    assert factor_recall > 2 * popularity_recall > 0.1


def test_statistics_and_format():
    matrix = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=np.float32))
    data = Dataset(train=matrix, test=test, user_ids=np.arange(3), item_ids=np.arange(4), name="toy",
                   report={"test_items_unseen_in_train": 1, "test_interactions_unseen_item": 1})
    stats = statistics(data)
    assert stats["users"] == 3 and stats["items"] == 4
    assert stats["train_interactions"] == 6 and stats["test_interactions"] == 2 and stats["test_users"] == 2
    assert stats["density"] == pytest.approx(8 / 12)
    assert stats["per_user"] == {"min": 1.0, "25%": 1.5, "50%": 2.0, "75%": 2.5, "max": 3.0}
    assert stats["per_item"] == {"min": 0.0, "25%": 0.75, "50%": 1.5, "75%": 2.25, "max": 3.0}
    text = format_statistics(stats)
    lines = dict((line[:22].strip(), line[22:]) for line in text.splitlines() if not line.startswith("WARNING"))
    assert lines["train interactions"] == "6" and lines["density"] == "0.66667"
    assert lines["test interactions"] == "2 (2 users)"
    assert "WARNING: 1 test item(s) never occur in training" in text


def test_validation_size_holds_out_ten_percent_of_a_random_subset_of_users():
    rng = np.random.default_rng(0)
    n_users, n_items = 3000, 400
    users = np.repeat(np.arange(n_users), 30)
    items = np.concatenate([rng.choice(n_items, 30, replace=False) for _ in range(n_users)])
    matrix, _, _ = interactions_to_csr(users, items, (n_users, n_items))
    data = Dataset(train=matrix, user_ids=np.arange(n_users), item_ids=np.arange(n_items))
    whole = with_validation(data, ratio=0.1, seed=3)
    assert whole.validation.nnz == 3 * n_users  # round(0.1 * 30) each
    capped = with_validation(data, ratio=0.1, seed=3, size=900)
    per_user = np.diff(capped.validation.indptr)
    assert set(per_user.tolist()) == {0, 3}  # a user holds out its 10% or nothing
    assert 700 < capped.validation.nnz < 1100 and capped.train.nnz + capped.validation.nnz == matrix.nnz
    assert capped.train.multiply(capped.validation).nnz == 0
    again = with_validation(data, ratio=0.1, seed=3, size=900)
    assert (again.validation != capped.validation).nnz == 0  # seeded
    assert (with_validation(data, ratio=0.1, seed=3, size=10 ** 6).validation != whole.validation).nnz == 0
