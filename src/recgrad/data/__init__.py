"""Interaction data: loaders, splits, the built-in synthetic set and statistics (see docs/data.md)."""

from recgrad.data.dataset import DataFormatError, Dataset
from recgrad.data.id_maps import align_ids, grow_id_map
from recgrad.data.loaders import load, load_csv, load_lightgcn, load_movielens, load_ncf
from recgrad.data.splits import leave_one_out, random_holdout, split_validation, with_test_split, with_validation
from recgrad.data.stats import format_statistics, statistics
from recgrad.data.synthetic import synthetic

__all__ = [
    "DataFormatError",
    "Dataset",
    "align_ids",
    "format_statistics",
    "grow_id_map",
    "leave_one_out",
    "load",
    "load_csv",
    "load_lightgcn",
    "load_movielens",
    "load_ncf",
    "random_holdout",
    "split_validation",
    "statistics",
    "synthetic",
    "with_test_split",
    "with_validation",
]
