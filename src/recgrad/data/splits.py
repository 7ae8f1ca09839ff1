"""Train/test and train/validation splits of a CSR interaction matrix.

Every split is per user and keeps at least one interaction of each user in the training part: a
user with a single interaction keeps it in train and gets nothing held out. The matrix-level
functions return new CSR matrices (sorted indices, values carried over); `with_test_split` and
`with_validation` apply them to a `Dataset`. Randomness comes only from the `seed` argument (an int
or a `numpy.random.Generator`), so the same seed gives the same split.
"""

import dataclasses

import numpy as np
import scipy.sparse as sp

from recgrad.data.dataset import diagnose


def _rows(matrix):
    return np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))


def _select(matrix, keep):
    """CSR matrix with only the stored entries where `keep` (a mask over `matrix.data`) is True."""
    counts = np.bincount(_rows(matrix)[keep], minlength=matrix.shape[0])
    indptr = np.zeros(matrix.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return sp.csr_matrix((matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape)


def _canonical(matrix, name):
    if not sp.issparse(matrix) or matrix.format != "csr":
        raise TypeError(f"{name} must be a scipy CSR matrix, got {type(matrix).__name__}")
    matrix = matrix.copy()
    matrix.sum_duplicates()
    return matrix


def holdout_mask(matrix, ratio, seed, users=None):
    """Boolean mask over `matrix.data`: for each user, round(ratio * n_u) random entries
    (half rounds up), at most n_u - 1, drawn without replacement; only for the users where the
    boolean array `users` is True when it is given."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio!r}")
    rng = np.random.default_rng(seed)
    counts = np.diff(matrix.indptr)
    n_held = np.minimum(np.floor(ratio * counts + 0.5).astype(np.int64), np.maximum(counts - 1, 0))
    if users is not None:
        n_held[~np.asarray(users, dtype=bool)] = 0
    rows = _rows(matrix)
    order = np.lexsort((rng.random(matrix.nnz), rows))
    position_in_row = np.arange(matrix.nnz) - matrix.indptr[rows]
    held = np.zeros(matrix.nnz, dtype=bool)
    held[order[position_in_row < n_held[rows]]] = True
    return held


def random_holdout(matrix, ratio=0.2, seed=0):
    """Per-user random holdout: returns (train, test) CSR matrices with disjoint entries.

    Each user with n interactions sends round(ratio * n) of them, at most n - 1, to test
    (the 80/20 split of NGCF/LightGCN's Gowalla is this with ratio 0.2).
    """
    matrix = _canonical(matrix, "matrix")
    held = holdout_mask(matrix, ratio, seed)
    return _select(matrix, ~held), _select(matrix, held)


def split_validation(train, ratio=0.1, seed=0):
    """Carve a per-user validation slice from `train` for early stopping: returns (train, validation).

    Same rule as `random_holdout` (users with one interaction keep it in train); the test set is
    not touched, so model selection never sees it.
    """
    return random_holdout(train, ratio, seed)


def leave_one_out_mask(matrix, timestamps):
    """Mask over `matrix.data` marking each user's latest entry (users with >= 2 entries only).

    Ties in time go to the entry with the largest item index, so the choice is deterministic."""
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if timestamps.shape != (matrix.nnz,):
        raise ValueError(f"timestamps must be aligned with matrix.data, shape ({matrix.nnz},), got {timestamps.shape}")
    rows = _rows(matrix)
    order = np.lexsort((matrix.indices, timestamps, rows))
    counts = np.diff(matrix.indptr)
    eligible = np.flatnonzero(counts >= 2)
    held = np.zeros(matrix.nnz, dtype=bool)
    held[order[matrix.indptr[eligible + 1] - 1]] = True
    return held


def leave_one_out(matrix, timestamps):
    """Leave-one-out by time (the NCF protocol): each user's latest interaction goes to test.

    Args:
        matrix: (n_users, n_items) CSR matrix with sorted indices and no duplicate entries (what the
            loaders return).
        timestamps: float array aligned with `matrix.data` (`Dataset.train_timestamps`).

    Returns (train, test). Users with a single interaction keep it in train and have no test item.
    """
    if not sp.issparse(matrix) or matrix.format != "csr" or not matrix.has_canonical_format:
        raise TypeError("matrix must be a canonical scipy CSR matrix (sorted indices, no duplicates)")
    held = leave_one_out_mask(matrix, timestamps)
    return _select(matrix, ~held), _select(matrix, held)


SPLIT_METHODS = ("random", "leave_one_out")


def with_test_split(dataset, method="random", ratio=0.2, seed=0):
    """Return a copy of `dataset` whose train is split into train and test.

    method "random" uses `random_holdout(ratio, seed)`; "leave_one_out" needs `train_timestamps`.
    Raises ValueError when the dataset already has a test set.
    """
    if method not in SPLIT_METHODS:
        raise ValueError(f"method must be one of {SPLIT_METHODS}, got {method!r}")
    if dataset.test is not None:
        raise ValueError(f"dataset {dataset.name!r} already has a test set; split its train with with_validation")
    train = dataset.train
    if method == "leave_one_out":
        if dataset.train_timestamps is None:
            raise ValueError(f"dataset {dataset.name!r} has no timestamps; leave_one_out needs a timestamp column")
        held = leave_one_out_mask(train, dataset.train_timestamps)
    else:
        held = holdout_mask(train, ratio, seed)
    new_train, test = _select(train, ~held), _select(train, held)
    stamps = None if dataset.train_timestamps is None else dataset.train_timestamps[~held]
    report = {**dataset.report, "split": {"method": method, "ratio": ratio, "seed": seed}}
    report.update(diagnose(new_train, test))
    return dataclasses.replace(dataset, train=new_train, test=test, train_timestamps=stamps, report=report)


def with_validation(dataset, ratio=0.1, seed=0, size=None):
    """Return a copy of `dataset` with a validation slice carved from its train (`split_validation`).

    size: when the slice would hold more than about this many interactions, only a random subset of
    the users (each with probability size / (ratio * train interactions), seeded) holds out its
    `ratio`, so large data keeps its training interactions and still gets a validation set of
    every kind of user (a smaller ratio for everyone would round to nothing for the light users).
    """
    users = None
    expected = ratio * dataset.train.nnz
    if size is not None and expected > size:
        draw = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        users = draw.random(dataset.train.shape[0]) < size / expected
    held = holdout_mask(dataset.train, ratio, seed, users)
    train, validation = _select(dataset.train, ~held), _select(dataset.train, held)
    stamps = None if dataset.train_timestamps is None else dataset.train_timestamps[~held]
    report = {**dataset.report, "validation": {"ratio": ratio, "seed": seed, "size": size}}
    report.update(diagnose(train, dataset.test))
    return dataclasses.replace(dataset, train=train, validation=validation, train_timestamps=stamps, report=report)
