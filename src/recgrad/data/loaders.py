"""Loaders for interaction files; each returns a `Dataset`.

Formats:
    lightgcn   `train.txt` / `test.txt`, a line = `user item item ...` (0-based integer ids, used as the
               internal indices as they are); `user_list.txt` / `item_list.txt` (`org_id remap_id`) give
               the original ids when present. A line with a user and no items is allowed.
    ncf        `PREFIX.train.rating`, `PREFIX.test.rating` (`user\\titem\\trating[\\ttimestamp]`) and
               `PREFIX.test.negative` (`(user,item)\\tneg\\tneg...`); integer ids used as they are.
    movielens  `u.data` (tab), `ratings.dat` (`::`), `ratings.csv` (header); ids mapped like csv.
    csv        any delimited file (tab or comma sniffed, or `sep=`), columns chosen by header name
               or position; Parquet (`.parquet`) when pyarrow is installed.
    prepared   a directory written by `recgrad.data.prepared.prepare` (`recgrad prepare`): memory-mapped
               CSR arrays and the id maps of any of the formats above.

Ids used as indices (lightgcn, ncf) may not make more than max(MIN_ID_SPACE, ID_SPACE_FACTOR x the
distinct ids) slots (`check_id_space`, checked before anything of that size is allocated); slots no
training interaction touches are counted in the report (`items_without_train`, `users_without_train`).
Every text file is UTF-8, a leading byte-order mark is dropped (`_parse.read_bytes`).

Raw ids (movielens, csv) are mapped to contiguous internal indices in order of first appearance
(train file first, then the test file), the order NCF used to number MovieLens items. An id column
whose values are all canonical non-negative integers ("12", not "012") keeps integer original ids;
anything else (or any id longer than 18 digits) keeps them as strings.

Options shared by the loaders that read ratings:
    min_rating: keep interactions with rating >= min_rating (applied to train and test, before
        de-duplication); None keeps every row.
    binary: True (default) stores 1.0 per interaction; False stores the rating.
    dedupe: True collapses repeated (user, item) rows to one (the latest by timestamp, ties: the later
        line) and counts them in `report["duplicates"]`; False sums their values (a count when binary).
    on_error: "raise" (default) stops at the first malformed line with `DataFormatError`
        ("file:LINE: what was wrong"); "skip" drops malformed lines and counts them in the report.

The report (`Dataset.report`, a dict) always holds: files, skipped_lines, skipped_examples,
below_min_rating, duplicates, users_without_train and, with a test set, test_users_without_train,
test_items_unseen_in_train, test_interactions_unseen_item, train_test_overlap (ncf adds
negatives_in_train, test_item_among_negatives, negative_keys_not_in_test). Test users or items
without training data are kept in the test set, never dropped: they count in the metrics'
denominators although no model can have learned them; `Dataset.warnings()` says so.
"""

import re
from pathlib import Path

import numpy as np

from recgrad.data import _parse
from recgrad.data.dataset import DataFormatError, Dataset, diagnose, interactions_to_csr


def _int_or_str_ids(values):
    """Original-id array: int64 when every value is a canonical non-negative integer, else str.

    An object array of byte strings (a column with a very long id, see `_parse.bytes_column`) gives
    an object array of str, so no fixed-width copy is made.
    """
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "O":
        if len(values) and all(_parse.is_canonical_integer(value) for value in values):
            return np.array([int(value) for value in values], dtype=np.int64)
        texts = np.empty(len(values), dtype=object)
        texts[:] = [value.decode("utf-8") for value in values]  # UTF-8 was checked when the file was read
        return texts
    if values.dtype.kind == "S":
        length = np.char.str_len(values)
        canonical = (np.char.isdigit(values) & (length <= _parse.MAX_INT_DIGITS)
                     & ((length == 1) | ~np.char.startswith(values, b"0")))
        if len(values) and canonical.all():
            return values.astype(np.int64)
        return np.char.decode(values, "utf-8")
    return values.astype(str)


def map_ids(*columns):
    """Map raw id columns jointly to contiguous indices in order of first appearance.

    Returns (list of int64 index arrays, one per column; array of original ids, index = internal id).
    """
    if any(column.dtype.kind == "O" for column in columns):
        columns = [column if column.dtype.kind == "O" else column.astype(np.bytes_).astype(object)
                   for column in columns]
    joined = np.concatenate(columns)
    uniques, first, inverse = np.unique(joined, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    indices = rank[inverse]
    bounds = np.cumsum([len(column) for column in columns])[:-1]
    return np.split(indices, bounds), _int_or_str_ids(uniques[order])


PREPARED_MANIFEST = "prepared.json"  # the file that marks a directory written by recgrad prepare
MIN_ID_SPACE = 1_000_000
ID_SPACE_FACTOR = 10


def check_id_space(what, id_arrays, files, format_name):
    """The number of slots (largest id + 1) of ids used as indices, refused when far too many.

    Rule: largest id + 1 <= max(MIN_ID_SPACE, ID_SPACE_FACTOR x the number of distinct ids). It
    is checked on the parsed ids, before anything of the catalogue's size is allocated; the error
    names the first line holding the largest id.
    """
    joined = np.concatenate(id_arrays)
    slots = int(joined.max(initial=-1)) + 1
    if slots <= MIN_ID_SPACE:
        return slots
    distinct = int(np.unique(joined).size)
    if slots > max(MIN_ID_SPACE, ID_SPACE_FACTOR * distinct):
        raise DataFormatError(
            f"{_where(files, slots - 1)}: {what} id {slots - 1} makes {slots} {what} slots for {distinct} "
            f"distinct {what} ids; the {format_name} format uses ids as indices, allowed are at most "
            f"max({MIN_ID_SPACE}, {ID_SPACE_FACTOR} x distinct ids) slots: write the interactions as a CSV "
            f"with user and item columns (--format csv --user-col/--item-col), whose raw ids are remapped"
        )
    return slots


def _where(files, value):
    """'path:line' of the first line of `files` with `value` as a whole number, else the first path."""
    pattern = re.compile(rb"(?<![0-9])0*" + str(value).encode() + rb"(?![0-9])")
    for path in files:
        for first_lineno, data in _parse.line_chunks(path, _WHERE_CHUNK_BYTES):
            found = pattern.search(data)
            if found:
                line = first_lineno + data.count(b"\n", 0, found.start())
                return f"{path}:{line}"
    return str(files[0])


_WHERE_CHUNK_BYTES = 1 << 24


def _check_options(min_rating, on_error, has_ratings):
    _parse.check_on_error(on_error)
    if min_rating is not None and not has_ratings:
        raise ValueError("min_rating (--min-rating) needs a rating column: pass rating_col= (--rating-col)")


def _build(parts, shape, min_rating, binary, dedupe, report):
    """CSR matrices from [(users, items, ratings|None, timestamps|None)], counting what was dropped."""
    matrices = []
    timestamps = []
    for users, items, ratings, stamps in parts:
        if min_rating is not None:
            keep = ratings >= min_rating
            report["below_min_rating"] += int(len(keep) - np.count_nonzero(keep))
            users, items, ratings = users[keep], items[keep], ratings[keep]
            stamps = None if stamps is None else stamps[keep]
        values = None if binary or ratings is None else ratings
        matrix, aligned, n_duplicates = interactions_to_csr(users, items, shape, values, stamps, dedupe)
        report["duplicates"] += n_duplicates
        matrices.append(matrix)
        timestamps.append(aligned)
    return matrices, timestamps


def _new_report(files):
    return {"files": [str(path) for path in files], "below_min_rating": 0, "duplicates": 0}


def _finish(report, skipped, train, test):
    report["skipped_lines"] = skipped.count
    report["skipped_examples"] = skipped.examples
    report.update(diagnose(train, test))
    return report


def lightgcn_id_maps(folder, id_lists, n_users, n_items):
    """(user_ids, item_ids) of a LightGCN folder: its user_list.txt / item_list.txt where read (each
    must list every id the data uses), else 0..n-1; DataFormatError names a list that is short."""
    maps = []
    for what, listed, needed, list_name in (("user", id_lists[0], n_users, "user_list.txt"),
                                             ("item", id_lists[1], n_items, "item_list.txt")):
        listed = np.arange(needed) if listed is None else listed
        if len(listed) < needed:
            raise DataFormatError(f"{folder / list_name}: lists {len(listed)} {what}s but the data uses id "
                                  f"{needed - 1}")
        maps.append(listed)
    return tuple(maps)


def _read_id_list(path, on_error, skipped):
    """`org_id remap_id` list (header line first) -> original ids indexed by remapped id."""
    original, remapped = _parse.read_table(
        path, [(0, "id", "original id"), (1, "index", "remapped id")], sep=" ", has_header=True,
        on_error=on_error, skipped=skipped,
    )
    n = int(remapped.max()) + 1
    if len(np.unique(remapped)) != len(remapped) or len(remapped) != n:
        raise DataFormatError(f"{path}: remapped ids must be 0..{len(remapped) - 1}, each once")
    ids = _int_or_str_ids(original)
    out = np.empty_like(ids)
    out[remapped] = ids
    return out


def load_lightgcn(path, dedupe=True, on_error="raise", name=None):
    """Load the LightGCN/NGCF format (e.g. the Gowalla, Yelp2018, Amazon-Book splits).

    Args:
        path: a folder holding `train.txt` (and optionally `test.txt`, `user_list.txt`,
            `item_list.txt`), or the train file itself (its siblings are read when present).
        dedupe, on_error: see the module doc.
        name: dataset label; default the folder name.

    The integer ids in the files are the internal indices (n_users = largest user id + 1, or the
    length of `user_list.txt` when larger; likewise items).
    """
    path = Path(path)
    train_path = path / "train.txt" if path.is_dir() else path
    folder = train_path.parent
    test_path = folder / "test.txt"
    skipped = _parse.Skipped()
    train_users, train_items, train_line_users = _parse.read_adjacency(train_path, on_error, skipped)
    files = [train_path]
    test_users = test_items = np.zeros(0, np.int64)
    test_line_users = test_users
    has_test = test_path.exists() and test_path != train_path
    if has_test:
        test_users, test_items, test_line_users = _parse.read_adjacency(test_path, on_error, skipped)
        files.append(test_path)
    id_lists = []
    for list_name in ("user_list.txt", "item_list.txt"):
        list_path = folder / list_name
        id_lists.append(_read_id_list(list_path, on_error, skipped) if list_path.exists() else None)
        if list_path.exists():
            files.append(list_path)
    data_files = [train_path, test_path] if has_test else [train_path]
    n_users = check_id_space("user", [train_line_users, test_line_users], data_files, "lightgcn")
    n_items = check_id_space("item", [train_items, test_items], data_files, "lightgcn")
    user_ids, item_ids = lightgcn_id_maps(folder, id_lists, n_users, n_items)
    shape = (len(user_ids), len(item_ids))
    report = _new_report(files)
    parts = [(train_users, train_items, None, None)]
    if has_test:
        parts.append((test_users, test_items, None, None))
    matrices, _ = _build(parts, shape, None, True, dedupe, report)
    test = matrices[1] if len(matrices) > 1 else None
    _finish(report, skipped, matrices[0], test)
    return Dataset(train=matrices[0], test=test, user_ids=user_ids, item_ids=item_ids,
                   name=name or folder.resolve().name, report=report, test_file=str(test_path) if has_test else None)


def _ncf_prefix(path):
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.train.rating"))
        if len(found) != 1:
            raise FileNotFoundError(f"{path}: expected exactly one *.train.rating file, found {len(found)}")
        return str(found[0])[: -len(".train.rating")]
    text = str(path)
    for suffix in (".train.rating", ".test.rating", ".test.negative"):
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text


def load_ncf(path, min_rating=None, binary=True, dedupe=True, on_error="raise", name=None):
    """Load the NCF format (He et al., 2017): `PREFIX.train.rating`, `.test.rating`, `.test.negative`.

    Args:
        path: a folder with one `*.train.rating`, the prefix (`Data/ml-1m`) or any of the three files.
        min_rating, binary, dedupe, on_error: see the module doc (NCF itself keeps every rating > 0).
        name: dataset label; default the prefix's file name (`ml-1m`).

    The test and negative files are optional. With the negative file, `test_users`, `test_items` and
    `test_negatives` hold its rows in file order.
    """
    _check_options(min_rating, on_error, True)
    prefix = _ncf_prefix(path)
    train_path = Path(prefix + ".train.rating")
    test_path = Path(prefix + ".test.rating")
    negative_path = Path(prefix + ".test.negative")
    skipped = _parse.Skipped()
    columns = [(0, "index", "user id"), (1, "index", "item id"), (2, "float", "rating")]
    parts = [(*_parse.read_table(train_path, columns, sep="\t", on_error=on_error, skipped=skipped), None)]
    files = [train_path]
    if test_path.exists():
        parts.append((*_parse.read_table(test_path, columns, sep="\t", on_error=on_error, skipped=skipped), None))
        files.append(test_path)
    negatives = None
    if negative_path.exists():
        negatives = _parse.read_negatives(negative_path, on_error, skipped)
        files.append(negative_path)
    user_arrays = [part[0] for part in parts] + ([negatives[0]] if negatives is not None else [])
    item_arrays = [part[1] for part in parts] + ([negatives[1], negatives[2].ravel()] if negatives is not None else [])
    n_users = check_id_space("user", user_arrays, files, "ncf")
    n_items = check_id_space("item", item_arrays, files, "ncf")
    shape = (n_users, n_items)
    report = _new_report(files)
    matrices, _ = _build(parts, shape, min_rating, binary, dedupe, report)
    train = matrices[0]
    test = matrices[1] if len(matrices) > 1 else None
    _finish(report, skipped, train, test)
    fields = {}
    if negatives is not None:
        users, items, table = negatives
        fields = {"test_users": users, "test_items": items, "test_negatives": table}
        report.update(negatives_report(train, test, users, items, table))
    return Dataset(train=train, test=test, user_ids=np.arange(n_users), item_ids=np.arange(n_items),
                   name=name or Path(prefix).name, report=report,
                   test_file=None if test is None else str(test_path), **fields)


def negatives_report(train, test, users, items, table):
    """The NCF negatives' counts for the rows (users[k], items[k], table[k]) of the negatives file.

    Rows may be any subset (users index the rows of `train` and `test`), so the counts of disjoint
    subsets add up: negatives_in_train, test_item_among_negatives, negative_keys_not_in_test.
    """
    in_train = _contains(train, np.repeat(users, table.shape[1]), table.ravel())
    keys_in_test = _contains(test, users, items) if test is not None else np.zeros(len(users), bool)
    return {"negatives_in_train": int(np.count_nonzero(in_train)),
            "test_item_among_negatives": int(np.count_nonzero((table == items[:, None]).any(axis=1))),
            "negative_keys_not_in_test": int(np.count_nonzero(~keys_in_test))}


def _contains(matrix, users, items):
    """Boolean array: is (users[k], items[k]) a stored entry of the CSR matrix (sorted indices)."""
    n_items = matrix.shape[1]
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    stored = rows * n_items + matrix.indices
    wanted = users.astype(np.int64) * n_items + items
    if len(stored) == 0:
        return np.zeros(len(wanted), dtype=bool)
    position = np.minimum(np.searchsorted(stored, wanted), len(stored) - 1)
    return stored[position] == wanted


_MOVIELENS_FILES = {
    "u.data": {"sep": "\t", "has_header": False, "columns": (0, 1, 2, 3)},
    "ratings.dat": {"sep": "::", "has_header": False, "columns": (0, 1, 2, 3)},
    "ratings.csv": {"sep": ",", "has_header": True, "columns": ("userId", "movieId", "rating", "timestamp")},
}


def load_movielens(path, min_rating=None, binary=True, dedupe=True, on_error="raise", name=None):
    """Load a MovieLens ratings file: `u.data` (100K), `ratings.dat` (1M/10M), `ratings.csv` (20M, latest).

    Args:
        path: the file, or a folder holding one of them. There is no test set: split with
            `recgrad.data.splits` (leave-one-out uses the timestamps kept in `train_timestamps`).
        min_rating, binary, dedupe, on_error: see the module doc.
        name: dataset label; default the folder name (`ml-1m`).
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / file_name for file_name in _MOVIELENS_FILES if (path / file_name).exists()]
        if not candidates:
            raise FileNotFoundError(f"{path}: no MovieLens ratings file ({', '.join(_MOVIELENS_FILES)}) in this folder")
        path = candidates[0]
    spec = _MOVIELENS_FILES.get(path.name)
    if spec is None:
        raise ValueError(f"{path}: not a MovieLens ratings file name ({', '.join(_MOVIELENS_FILES)}); use load_csv")
    user_col, item_col, rating_col, timestamp_col = spec["columns"]
    return load_csv(path, user_col, item_col, rating_col, timestamp_col, sep=spec["sep"],
                    has_header=spec["has_header"], min_rating=min_rating, binary=binary, dedupe=dedupe,
                    on_error=on_error, name=name or path.resolve().parent.name)


def load_csv(path, user_col, item_col, rating_col=None, timestamp_col=None, sep=None, has_header=True,
             test_path=None, min_rating=None, binary=True, dedupe=True, on_error="raise", name=None):
    """Load interactions from a delimited text file (or Parquet) with columns chosen by name or position.

    Args:
        path: the interactions (`.parquet` is read with pyarrow).
        user_col, item_col: header names (or 0-based positions when `has_header=False`).
        rating_col, timestamp_col: optional; timestamps must be numbers (kept as float64, exact for
            integers below 2**53) and are needed by `splits.leave_one_out`.
        sep: separator; None sniffs tab, '::' or comma from the first line. Fields are stripped of
            surrounding spaces; comma files may quote fields.
        has_header: the first line names the columns.
        test_path: optional test file with the same columns; ids are mapped jointly (train first).
        min_rating, binary, dedupe, on_error: see the module doc.
        name: dataset label; default the file stem.
    """
    _check_options(min_rating, on_error, rating_col is not None)
    skipped = _parse.Skipped()
    selectors = [(user_col, "id", "user id"), (item_col, "id", "item id")]
    if rating_col is not None:
        selectors.append((rating_col, "float", "rating"))
    if timestamp_col is not None:
        selectors.append((timestamp_col, "float", "timestamp"))
    paths = [Path(path)] + ([Path(test_path)] if test_path is not None else [])
    tables = []
    for file_path in paths:
        if file_path.suffix == ".parquet":
            tables.append(_read_parquet(file_path, [s for s, _, _ in selectors], [k for _, k, _ in selectors]))
        else:
            tables.append(_parse.read_table(file_path, selectors, sep=sep, has_header=has_header,
                                            on_error=on_error, skipped=skipped))
    (users, *test_users), user_ids = map_ids(*[table[0] for table in tables])
    (items, *test_items), item_ids = map_ids(*[table[1] for table in tables])
    parts = []
    for table, part_users, part_items in zip(tables, [users, *test_users], [items, *test_items]):
        ratings = table[2] if rating_col is not None else None
        stamps = table[-1] if timestamp_col is not None else None
        parts.append((part_users, part_items, ratings, stamps))
    shape = (len(user_ids), len(item_ids))
    report = _new_report(paths)
    matrices, timestamps = _build(parts, shape, min_rating, binary, dedupe, report)
    test = matrices[1] if len(matrices) > 1 else None
    _finish(report, skipped, matrices[0], test)
    return Dataset(train=matrices[0], test=test, user_ids=user_ids, item_ids=item_ids,
                   name=name or paths[0].stem, train_timestamps=timestamps[0], report=report,
                   test_file=None if test_path is None else str(test_path))


def _read_parquet(path, selectors, kinds):
    """The requested columns of a whole Parquet file (`parquet_chunks` joined)."""
    chunks = list(parquet_chunks(path, selectors, kinds))
    return [np.concatenate(parts) for parts in zip(*chunks)]


def parquet_chunks(path, selectors, kinds, batch_rows=None):
    """Yield the requested columns of a Parquet file, `batch_rows` rows at a time (None: all at once).

    Read with pyarrow alone (the `parquet` extra): its record batches convert to NumPy directly, so
    no pandas frame sits between the file and the arrays. Id columns of integer type stay integers,
    others become str; timestamp columns become float64 seconds since the epoch. A missing value or
    a non-finite number raises DataFormatError naming the 1-based data row.
    """
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.parquet
    except ImportError:
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow (recgrad's parquet extra)") from None
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not all(isinstance(selector, str) for selector in selectors):
        raise ValueError(f"{path}: Parquet columns are chosen by name, got {selectors}")
    try:
        parquet = pyarrow.parquet.ParquetFile(path)
    except pyarrow.ArrowException as error:
        raise DataFormatError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0]})") from None
    names = parquet.schema_arrow.names
    for selector in selectors:
        if selector not in names:
            listed = ", ".join(_parse.shown(name) for name in names[:10]) + (", ..." if len(names) > 10 else "")
            raise DataFormatError(f"{path}: no column named {_parse.shown(selector)}; the file has {listed}")
    n_rows = parquet.metadata.num_rows
    if n_rows == 0:
        raise DataFormatError(f"{path}: file is empty")
    first_row = 1
    for batch in parquet.iter_batches(batch_size=batch_rows or n_rows, columns=list(dict.fromkeys(selectors))):
        columns = []
        for selector, kind in zip(selectors, kinds):
            array = batch.column(selector)
            if array.null_count:
                row = first_row + int(np.argmax(pyarrow.compute.is_null(array).to_numpy(zero_copy_only=False)))
                raise DataFormatError(f"{path}: data row {row}: column {selector!r} is missing")
            if kind == "id":
                values = array.to_numpy(zero_copy_only=False)
                columns.append(values if values.dtype.kind in "iu" else values.astype(str))
                continue
            if pyarrow.types.is_timestamp(array.type):
                values = array.cast(pyarrow.timestamp("ns")).to_numpy().astype(np.int64) / 1e9
            else:
                values = array.to_numpy(zero_copy_only=False).astype(np.float64)
            if not np.isfinite(values).all():
                row = first_row + int(np.argmax(~np.isfinite(values)))
                raise DataFormatError(f"{path}: data row {row}: column {selector!r} is not a finite number")
            columns.append(values)
        first_row += batch.num_rows
        yield columns


FORMATS = ("auto", "lightgcn", "ncf", "movielens", "csv", "synthetic", "prepared")


def detect_format(path):
    """Guess the format of a path from file names (see `load`)."""
    path = Path(path)
    if path.is_dir():
        if (path / PREPARED_MANIFEST).exists():
            return "prepared"
        if (path / "train.txt").exists():
            return "lightgcn"
        if any(path.glob("*.train.rating")):
            return "ncf"
        if any((path / file_name).exists() for file_name in _MOVIELENS_FILES):
            return "movielens"
        raise ValueError(f"{path}: cannot tell the format of this folder; pass format= (--format)")
    if path.name in ("train.txt", "test.txt"):
        return "lightgcn"
    if path.name.endswith((".train.rating", ".test.rating", ".test.negative")):
        return "ncf"
    if Path(str(path) + ".train.rating").exists():
        return "ncf"
    if path.name in _MOVIELENS_FILES:
        return "movielens"
    if path.suffix in (".csv", ".tsv", ".parquet", ".txt"):
        return "csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    raise ValueError(f"{path}: cannot tell the format from the name; pass format= (--format)")


def load(path, format="auto", **options):
    """Load a dataset by format name; `format="auto"` detects it from the path.

    Detection: a folder written by `recgrad prepare` is prepared, with `train.txt` lightgcn, with
    `*.train.rating` ncf, with `u.data` / `ratings.dat` / `ratings.csv` movielens; a file is matched
    by the same names, and `.csv`, `.tsv`, `.parquet` go to `load_csv` (which needs `user_col` and
    `item_col`). The path "synthetic" (when no such file exists) or `format="synthetic"` returns
    `recgrad.data.synthetic(**options)`.
    Options are passed to the loader; one it does not take raises TypeError.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "synthetic" or (format == "auto" and str(path) == "synthetic" and not Path(path).exists()):
        from recgrad.data.synthetic import synthetic

        return synthetic(**options)
    if format == "auto":
        format = detect_format(path)
    if format == "prepared":
        from recgrad.data.prepared import load_prepared

        if options:
            raise ValueError(f"{next(iter(options))}: does not apply to prepared data ({path}): recgrad prepare "
                             "applied the reading options when it wrote the directory")
        return load_prepared(path)
    if format == "csv" and not {"user_col", "item_col"} <= options.keys():
        raise ValueError(
            f"{path}: the csv format needs user_col= and item_col= (--user-col, --item-col: the column names)"
        )
    loader = {"lightgcn": load_lightgcn, "ncf": load_ncf, "movielens": load_movielens, "csv": load_csv}[format]
    return loader(path, **options)
