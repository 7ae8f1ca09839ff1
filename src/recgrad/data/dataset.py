"""The `Dataset` record every loader returns: CSR user x item matrices, the id maps, and a report.

No behaviour hides in here beyond lookups: a `Dataset` is a bag of plain arrays. Rows are internal
user indices and columns internal item indices, both contiguous from 0; `user_ids[u]` and
`item_ids[i]` give back the ids as they appear in the source files.
"""

import collections
import dataclasses

import numpy as np
import scipy.sparse as sp


class DataFormatError(ValueError):
    """A data file could not be read as the format it claims; the message names file and line."""


@dataclasses.dataclass(eq=False)
class Dataset:
    """Interaction data as user x item CSR matrices (float32) plus the maps back to the original ids.

    Attributes:
        train: (n_users, n_items) csr_matrix, float32. Value 1.0 per interaction for implicit feedback,
            or the rating when a loader was asked for `binary=False`.
        test: (n_users, n_items) csr_matrix or None. Users without test items have empty rows.
        validation: (n_users, n_items) csr_matrix or None (carved from train by `splits.with_validation`).
        user_ids, item_ids: original ids, index = internal id (int64 or str arrays).
        name: a short label ("gowalla", "synthetic", the file stem).
        test_users, test_items, test_negatives: the sampled protocol of the NCF paper, row k ranks
            `test_items[k]` for user `test_users[k]` among `test_negatives[k]` (shape (n_rows, n_neg)).
            All three are None unless a `*.test.negative` file was read.
        train_timestamps: float64 array aligned with `train.data` (same order as `train.indices`) or None.
        report: what loading found or dropped, a dict of counts (see `loaders` module doc); `warnings()`
            turns it into sentences for the CLI.
        test_file: the path the test set was read from, or None (no test set, or one made by a split
            or a generator); a caller asked for a test split can tell the user it does not apply.
    """

    train: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    name: str = "data"
    test: sp.csr_matrix | None = None
    validation: sp.csr_matrix | None = None
    test_users: np.ndarray | None = None
    test_items: np.ndarray | None = None
    test_negatives: np.ndarray | None = None
    train_timestamps: np.ndarray | None = None
    report: dict = dataclasses.field(default_factory=dict)
    test_file: str | None = None

    def __post_init__(self):
        shape = (len(self.user_ids), len(self.item_ids))
        for label in ("train", "test", "validation"):
            matrix = getattr(self, label)
            if matrix is not None and matrix.shape != shape:
                raise ValueError(f"{label} has shape {matrix.shape} but the id maps give {shape}")
        if self.train_timestamps is not None and len(self.train_timestamps) != self.train.nnz:
            raise ValueError(
                f"train_timestamps has {len(self.train_timestamps)} entries but train has {self.train.nnz}"
            )
        self._user_lookup = None
        self._item_lookup = None

    @property
    def n_users(self):
        return self.train.shape[0]

    @property
    def n_items(self):
        return self.train.shape[1]

    def user_index(self, original_id):
        """Internal index of an original user id (KeyError naming it when unknown)."""
        if self._user_lookup is None:
            self._user_lookup = _lookup_table(self.user_ids)
        return _lookup(self._user_lookup, self.user_ids, original_id, "user")

    def item_index(self, original_id):
        """Internal index of an original item id (KeyError naming it when unknown)."""
        if self._item_lookup is None:
            self._item_lookup = _lookup_table(self.item_ids)
        return _lookup(self._item_lookup, self.item_ids, original_id, "item")

    def user_id(self, index):
        """Original user id(s) of internal index (or index array)."""
        return self.user_ids[index]

    def item_id(self, index):
        """Original item id(s) of internal index (or index array)."""
        return self.item_ids[index]

    def warnings(self):
        """Sentences describing every non-zero problem count in `report` (empty list when clean)."""
        return report_warnings(self.report)


def _lookup_table(ids):
    return {value: index for index, value in enumerate(ids.tolist())}


def _lookup(table, ids, original_id, what):
    key = original_id.item() if isinstance(original_id, np.generic) else original_id
    if ids.dtype.kind in "iu" and isinstance(key, str):
        try:
            key = int(key)
        except ValueError:
            raise KeyError(f"unknown {what} id {original_id!r} (ids are integers)") from None
    elif ids.dtype.kind in "UO" and not isinstance(key, str):
        key = str(key)
    try:
        return table[key]
    except KeyError:
        raise KeyError(f"unknown {what} id {original_id!r}") from None


_WARNING_TEXT = {
    "skipped_lines": "{skipped_lines} malformed line(s) skipped (on_error='skip')",
    "duplicates": "{duplicates} duplicate interaction(s) collapsed",
    "below_min_rating": "{below_min_rating} interaction(s) below min_rating dropped",
    "users_without_train": "{users_without_train} of {user_slots} user slot(s) have no training interaction",
    "items_without_train": (
        "{items_without_train} of {item_slots} item slot(s) have no training interaction: no model learns "
        "them, yet full ranking scores them"
    ),
    "test_users_without_train": (
        "{test_users_without_train} test user(s) have no training interactions (their embeddings stay untrained)"
    ),
    "test_items_unseen_in_train": (
        "{test_items_unseen_in_train} test item(s) never occur in training ({test_interactions_unseen_item} "
        "test interaction(s)); they stay in the test set and count in the denominators, but no model has learned them"
    ),
    "train_test_overlap": (
        "{train_test_overlap} test interaction(s) also appear in train (they are masked out in full ranking)"
    ),
    "negatives_in_train": "{negatives_in_train} sampled negative(s) are training items of their user",
    "test_item_among_negatives": "{test_item_among_negatives} test row(s) list their own test item among the negatives",
    "negative_keys_not_in_test": (
        "{negative_keys_not_in_test} row(s) of the negatives file name a (user, item) not in the test file"
    ),
}


def report_warnings(report):
    """Human sentences for the non-zero counts of a loader report, in a fixed order.

    Item slots without training interaction are not repeated when they are exactly the test items
    unseen in training (that sentence says more).
    """
    counts = collections.defaultdict(int, report)
    lines = []
    for key, text in _WARNING_TEXT.items():
        if key == "items_without_train" and counts[key] == counts["test_items_unseen_in_train"]:
            continue
        if counts[key]:
            lines.append(text.format_map(counts))
    return lines


def diagnose(train, test=None):
    """Counts of the conditions a caller must be told about (never raised, never silently dropped).

    Returns a dict with `user_slots`, `item_slots` (the matrix shape), `users_without_train`,
    `items_without_train` (slots no training interaction touches), and when `test` is given
    `test_users_without_train`, `test_items_unseen_in_train` (distinct items),
    `test_interactions_unseen_item` and `train_test_overlap`.
    """
    diagnosis = Diagnosis(train.shape[1], with_test=test is not None)
    diagnosis.add(train, test)
    return diagnosis.counts()


class Diagnosis:
    """`diagnose` over blocks of rows: `add` the rows of train and test for the same users, block by
    block, then `counts()`; memory is the blocks plus two arrays of n_items."""

    def __init__(self, n_items, with_test):
        self.with_test = with_test
        self.user_slots = 0
        self.users_without_train = self.test_users_without_train = self.train_test_overlap = 0
        self.train_per_item = np.zeros(n_items, dtype=np.int64)
        self.test_per_item = np.zeros(n_items, dtype=np.int64)

    def add(self, train, test=None):
        """Rows of the same users: train (n, n_items) csr and, when with_test, test (n, n_items) csr."""
        train_user_counts = np.diff(train.indptr)
        self.user_slots += train.shape[0]
        self.users_without_train += int(np.count_nonzero(train_user_counts == 0))
        self.train_per_item += np.bincount(train.indices, minlength=len(self.train_per_item))
        if self.with_test:
            test_user_counts = np.diff(test.indptr)
            self.test_per_item += np.bincount(test.indices, minlength=len(self.test_per_item))
            self.test_users_without_train += int(np.count_nonzero((test_user_counts > 0) & (train_user_counts == 0)))
            self.train_test_overlap += int(train.multiply(test).count_nonzero())

    def counts(self):
        unseen = self.train_per_item == 0
        found = {
            "user_slots": int(self.user_slots),
            "item_slots": int(len(self.train_per_item)),
            "users_without_train": self.users_without_train,
            "items_without_train": int(np.count_nonzero(unseen)),
        }
        if self.with_test:
            found["test_users_without_train"] = self.test_users_without_train
            found["test_items_unseen_in_train"] = int(np.count_nonzero(unseen & (self.test_per_item > 0)))
            found["test_interactions_unseen_item"] = int(self.test_per_item[unseen].sum())
            found["train_test_overlap"] = self.train_test_overlap
        return found


def interactions_to_csr(users, items, shape, values=None, timestamps=None, dedupe=True):
    """Build a canonical CSR matrix (sorted indices, no duplicate entries) from interaction triples.

    Args:
        users, items: int arrays of equal length (internal indices).
        shape: (n_users, n_items).
        values: float array or None (1.0 for every interaction).
        timestamps: float array or None; returned aligned with the matrix's `.data`.
        dedupe: True keeps one entry per (user, item): the latest by timestamp (ties: the later row
            of the input), with its value. False sums the values of repeated pairs (with unit values
            the entry becomes the number of occurrences) and keeps the latest timestamp.

    Returns:
        (csr_matrix float32, aligned timestamps or None, number of duplicate rows merged)
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    n_users, n_items = shape
    values = np.ones(len(users), dtype=np.float32) if values is None else np.asarray(values, np.float32)
    key = users * n_items + items
    if timestamps is None:
        order = np.argsort(key, kind="stable")
    else:
        timestamps = np.asarray(timestamps, dtype=np.float64)
        order = np.lexsort((timestamps, key))
    key = key[order]
    last = np.ones(len(key), dtype=bool)
    last[:-1] = key[1:] != key[:-1]
    n_duplicates = int(len(key) - np.count_nonzero(last))
    if dedupe:
        data = values[order][last]
    else:
        starts = np.flatnonzero(np.concatenate(([True], last[:-1])))
        data = np.add.reduceat(values[order], starts).astype(np.float32) if len(key) else values[:0]
    key = key[last]
    rows = key // n_items
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    matrix = sp.csr_matrix((data, (key % n_items).astype(np.int32), indptr), shape=shape)
    matrix.has_sorted_indices = True
    aligned = None if timestamps is None else timestamps[order][last]
    return matrix, aligned, n_duplicates
