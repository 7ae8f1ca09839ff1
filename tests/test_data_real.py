"""The shared Gowalla and ml-1m-ncf files load with the statistics stated in their READMEs.

Skipped when the data folder is absent: it lives beside the checkout (`../shared/data`) or where
the RECGRAD_DATA environment variable points.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from recgrad.data import load, statistics

DATA = Path(os.environ.get("RECGRAD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def needs(name):
    folder = DATA / name
    return pytest.mark.skipif(not folder.is_dir(), reason=f"{folder} not present")


@needs("gowalla")
def test_gowalla_matches_readme():
    data = load(DATA / "gowalla")
    stats = statistics(data)
    assert (stats["users"], stats["items"]) == (29_858, 40_981)
    assert (stats["train_interactions"], stats["test_interactions"]) == (810_128, 217_242)
    assert round(stats["density"], 5) == 0.00084
    report = data.report
    assert report["duplicates"] == report["train_test_overlap"] == 0
    assert report["test_users_without_train"] == report["test_items_unseen_in_train"] == 0
    assert data.user_ids[:2].tolist() == [343, 5258]  # user_list.txt: "343 0", "5258 1"
    assert data.warnings() == []


@needs("ml-1m-ncf")
def test_ml1m_ncf_matches_readme():
    data = load(DATA / "ml-1m-ncf")
    assert data.train.shape == (6_040, 3_706)
    assert (data.train.nnz, data.test.nnz) == (994_169, 6_040)
    assert data.test_negatives.shape == (6_040, 99)
    assert np.array_equal(data.test_users, np.arange(6_040))
    assert np.diff(data.test.indptr).tolist() == [1] * 6_040
    assert np.array_equal(data.test.indices, data.test_items)
    report = data.report
    assert report["negatives_in_train"] == 0 and report["train_test_overlap"] == 0
    assert report["test_item_among_negatives"] == 156  # the README's quirk of the original file
    assert report["duplicates"] == 0
    assert round(statistics(data)["density"], 5) == 0.04468
