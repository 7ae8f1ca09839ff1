"""Dataset statistics for `recgrad info`: sizes, density and interaction-count quantiles."""

import numpy as np

_QUANTILES = (("min", 0.0), ("25%", 0.25), ("50%", 0.5), ("75%", 0.75), ("max", 1.0))


def _quantiles(counts):
    if len(counts) == 0:
        return {label: 0.0 for label, _ in _QUANTILES}
    values = np.quantile(counts, [q for _, q in _QUANTILES])
    return {label: float(value) for (label, _), value in zip(_QUANTILES, values)}


def statistics(dataset):
    """Plain dict of a dataset's statistics (JSON-serialisable).

    Keys: name, users, items, train_interactions, test_interactions, validation_interactions,
    density = (train + validation + test) / (users * items), per_user and per_item (quantiles
    min/25%/50%/75%/max of the TRAINING interaction counts, linear interpolation, as
    numpy.quantile), test_users (users with at least one test item), negatives_per_test_row (NCF
    protocol, else 0) and warnings (`Dataset.warnings()`).
    """
    train = dataset.train
    n_users, n_items = train.shape
    n_test = 0 if dataset.test is None else int(dataset.test.nnz)
    n_validation = 0 if dataset.validation is None else int(dataset.validation.nnz)
    total = int(train.nnz) + n_test + n_validation
    return {
        "name": dataset.name,
        "users": int(n_users),
        "items": int(n_items),
        "train_interactions": int(train.nnz),
        "validation_interactions": n_validation,
        "test_interactions": n_test,
        "density": total / (n_users * n_items) if n_users and n_items else 0.0,
        "per_user": _quantiles(np.diff(train.indptr)),
        "per_item": _quantiles(np.bincount(train.indices, minlength=n_items)),
        "test_users": 0 if dataset.test is None else int(np.count_nonzero(np.diff(dataset.test.indptr))),
        "negatives_per_test_row": 0 if dataset.test_negatives is None else int(dataset.test_negatives.shape[1]),
        "warnings": dataset.warnings(),
    }


def format_statistics(stats):
    """Aligned text table of `statistics(...)`, warnings last, for the terminal."""
    rows = [
        ("dataset", stats["name"]),
        ("users", f"{stats['users']:,}"),
        ("items", f"{stats['items']:,}"),
        ("train interactions", f"{stats['train_interactions']:,}"),
    ]
    if stats["validation_interactions"]:
        rows.append(("validation interactions", f"{stats['validation_interactions']:,}"))
    rows.append(("test interactions", f"{stats['test_interactions']:,} ({stats['test_users']:,} users)"))
    if stats["negatives_per_test_row"]:
        rows.append(("sampled negatives per test row", str(stats["negatives_per_test_row"])))
    rows.append(("density", f"{stats['density']:.5f}"))
    for key, label in (("per_user", "train items per user"), ("per_item", "train users per item")):
        rows.append((label, "  ".join(f"{name} {value:g}" for name, value in stats[key].items())))
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    lines.extend(f"WARNING: {text}" for text in stats["warnings"])
    return "\n".join(lines)
