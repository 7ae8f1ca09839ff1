"""Id maps that grow: known raw ids keep their internal index, new raw ids are appended.

A trained model's row u belongs to the raw user id `user_ids[u]` of the data it was trained on.
Data that arrives later (new users, new items, more interactions) is loaded with maps of its own,
in which a known id may sit at another index; `align_ids` re-indexes such a data set to a run's
maps:

    grown map   = known ids, in their order, then the ids the data adds, in the data's order
    index(id)   = position of id in the grown map

so row u of the model still means `user_ids[u]`, and the rows past the known ones are the new ids.
Integer ids match integers and anything else matches by its text (an id read as the integer 12
from one file and as "12" from another is one id; the grown map then holds text).
"""

import dataclasses

import numpy as np

from recgrad.data.dataset import Dataset, diagnose, interactions_to_csr

__all__ = ["grow_id_map", "align_ids"]


def grow_id_map(known, found):
    """(grown map, position of each of `found` in it): `known` first, unchanged, then the ids of
    `found` that it lacks, in their first appearance in `found`."""
    known, found = np.asarray(known), np.asarray(found)
    as_int = known.dtype.kind in "iu" and found.dtype.kind in "iu"
    keys = [int(value) if as_int else str(value) for value in known.tolist()]
    index = {key: position for position, key in enumerate(keys)}
    positions = np.empty(len(found), dtype=np.int64)
    for number, value in enumerate(found.tolist()):
        key = int(value) if as_int else str(value)
        position = index.get(key)
        if position is None:
            position = index[key] = len(keys)
            keys.append(key)
        positions[number] = position
    if as_int:
        grown = np.array(keys, dtype=np.int64)
    else:
        grown = np.empty(len(keys), dtype=object)
        grown[:] = keys
    return grown, positions


def align_ids(dataset: Dataset, user_ids, item_ids) -> Dataset:
    """`dataset` re-indexed to the maps `user_ids`, `item_ids`, grown by the ids it adds.

    Every matrix (train, test, validation), the aligned train timestamps and the sampled
    protocol's arrays follow; known ids the data does not hold get empty rows and columns. The
    report's slot counts are those of the grown maps. Returns `dataset` itself when its maps are
    already the grown ones.
    """
    users, user_position = grow_id_map(user_ids, dataset.user_ids)
    items, item_position = grow_id_map(item_ids, dataset.item_ids)
    if len(users) == dataset.n_users and len(items) == dataset.n_items \
            and np.array_equal(user_position, np.arange(dataset.n_users)) \
            and np.array_equal(item_position, np.arange(dataset.n_items)):
        return dataset
    shape = (len(users), len(items))

    def move(matrix, timestamps=None):
        if matrix is None:
            return None, None
        coo = matrix.tocoo()  # a canonical CSR's coo lists its entries in .data order
        moved, stamps, _ = interactions_to_csr(user_position[coo.row], item_position[coo.col], shape,
                                               values=coo.data, timestamps=timestamps)
        return moved, stamps

    train, stamps = move(dataset.train, dataset.train_timestamps)
    test, _ = move(dataset.test)
    validation, _ = move(dataset.validation)
    report = dict(dataset.report)
    report.update(diagnose(train, test))
    return dataclasses.replace(
        dataset, train=train, test=test, validation=validation, user_ids=users, item_ids=items,
        train_timestamps=stamps, report=report,
        test_users=None if dataset.test_users is None else user_position[dataset.test_users],
        test_items=None if dataset.test_items is None else item_position[dataset.test_items],
        test_negatives=None if dataset.test_negatives is None else item_position[dataset.test_negatives],
    )
