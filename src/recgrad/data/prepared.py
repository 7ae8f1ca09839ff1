"""Out-of-core input: `prepare` reads interaction files of any size in chunks into a directory of
CSR arrays, which `load_prepared` opens as a `Dataset` whose matrices are memory-mapped.

Layout of a prepared directory (format version 1, every array a `.npy` file):

    prepared.json                       the manifest: format version, name, source, counts, dtypes, report
    train_indptr.npy    (n_users + 1,)  int64
    train_indices.npy   (nnz,)          int32 (int64 when the rows read, n_users or n_items reach 2**31)
    train_data.npy      (nnz,)          float32, the values the in-memory loader would store
    train_timestamps.npy (nnz,)         float64, aligned with train_data, when the source has timestamps
    test_indptr.npy, test_indices.npy, test_data.npy     when a test file was read
    test_users.npy, test_items.npy, test_negatives.npy   the NCF negatives file, when read
    user_ids.npy, item_ids.npy          int64 original ids; for str ids user_ids.utf8.npy (uint8, the ids'
                                        UTF-8 bytes) and user_ids.offsets.npy (int64, n + 1 bounds)

`prepare` gives the same matrices, id maps and report as `recgrad.data.load` on the same files
(tests/test_prepare.py checks each format). It works in three passes, none of which holds more
than a chunk of the input:

1. Parse the files `chunk_bytes` of text at a time (`_parse.table_chunks`, `_parse.adjacency_chunks`,
   Parquet record batches via `loaders.parquet_chunks`), map raw ids to indices in order of first
   appearance (`IdMap`: sorted arrays, no Python dict per id) and append the rows, as indices, to a
   binary spill file.
2. Count the rows per user, cut the users into contiguous ranges of about `bucket_rows` rows
   (a user is never split) and distribute the spill into one file per range, keeping file order.
3. Per range, build its CSR rows with the in-memory loader's own `interactions_to_csr` (min_rating,
   dedupe and the timestamps alike), append them to the output arrays, and add the range to the
   report (`Diagnosis`, `loaders.negatives_report`).

Memory: a chunk of text and its parsed columns, a range of `bucket_rows` rows (or the largest
user's rows when larger), the id maps (about 24 bytes per distinct id, plus the id itself for str
ids) and a few arrays of n_users and n_items. Output arrays are written with plain file writes,
not memory maps, so `prepare` also stays within an address-space limit (ulimit -v). The NCF
negatives file is read whole (it holds one row per test user).

The output is written into a hidden temporary directory beside DIR and renamed to DIR when
complete: an interrupted or failed `prepare` leaves no DIR (a killed one leaves at most the hidden
`.DIR.*.partial` directory, which a later run does not read).
"""

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recgrad.data import _parse, loaders
from recgrad.data.dataset import DataFormatError, Dataset, Diagnosis, interactions_to_csr

__all__ = ["FORMAT_VERSION", "IdMap", "load_prepared", "prepare"]

FORMAT_VERSION = 1
MANIFEST = loaders.PREPARED_MANIFEST
CHUNK_BYTES = 4 << 20  # text read at once; parsing holds a few times this (larger chunks are no faster)
BUCKET_ROWS = 1 << 19  # rows per user range in pass 3; interactions_to_csr holds about 60 bytes per row
_INT32_LIMIT = 2**31 - 1


# ------------------------------------------------------------------------------------------ id maps
class IdMap:
    """Raw ids to contiguous indices in order of first appearance, fed one chunk at a time.

    Gives the indices and the original ids of `loaders.map_ids` on the concatenated chunks. The
    known ids are kept as a sorted array beside their indices (searchsorted per chunk, merged by
    insertion), about 24 bytes per distinct integer id. Chunks may spell ids as int64 (a chunk of
    plain integers) or bytes (any other chunk); an integer id equals its canonical decimal bytes,
    as in `map_ids`.
    """

    def __init__(self):
        self.sorted_keys = None
        self.sorted_index = np.zeros(0, dtype=np.int64)
        self.new_keys = []  # the ids, in index order, one array per chunk
        self.size = 0

    def __call__(self, column):
        """The indices of the ids in `column` (int64), adding the unseen ones."""
        if self.sorted_keys is None:
            self.sorted_keys = column[:0]
        kind = _common_kind(self.sorted_keys, column)
        if kind != self.sorted_keys.dtype.kind:
            keys = _as_kind(self.sorted_keys, kind)
            order = np.argsort(keys, kind="stable")  # bytes sort apart from the integers they spell
            self.sorted_keys, self.sorted_index = keys[order], self.sorted_index[order]
        column = _as_kind(column, kind)
        if kind in "SU":
            self.sorted_keys = self.sorted_keys.astype(np.result_type(self.sorted_keys, column), copy=False)
        uniques, first, inverse = np.unique(column, return_index=True, return_inverse=True)
        position = np.searchsorted(self.sorted_keys, uniques)
        found = np.zeros(len(uniques), dtype=bool)
        if len(self.sorted_keys):
            clipped = np.minimum(position, len(self.sorted_keys) - 1)
            found = (position < len(self.sorted_keys)) & (self.sorted_keys[clipped] == uniques)
        index = np.empty(len(uniques), dtype=np.int64)
        index[found] = self.sorted_index[position[found]]
        new = np.flatnonzero(~found)
        by_appearance = new[np.argsort(first[new], kind="stable")]
        index[by_appearance] = self.size + np.arange(len(by_appearance))
        self.size += len(by_appearance)
        self.new_keys.append(uniques[by_appearance])
        self.sorted_keys = np.insert(self.sorted_keys, position[new], uniques[new])
        self.sorted_index = np.insert(self.sorted_index, position[new], index[new])
        return index[inverse.ravel()]

    def ids(self):
        """The original ids, index = internal index (int64 or str, as `loaders.map_ids` gives them)."""
        kind = self.sorted_keys.dtype.kind
        keys = np.concatenate([_as_kind(part, kind) for part in self.new_keys])
        if kind == "S":
            keys = _parse.bytes_column(list(keys)) if len(keys) else keys
        return loaders._int_or_str_ids(keys)


def _common_kind(keys, column):
    """The dtype kind both id arrays convert to: i (integers), S (bytes), U (str, Parquet) or O (bytes objects)."""
    kinds = {"i" if array.dtype.kind in "iu" else array.dtype.kind for array in (keys, column)}
    for kind in ("O", "S", "U"):
        if kind in kinds:
            return kind
    return "i"


def _as_kind(array, kind):
    have = "i" if array.dtype.kind in "iu" else array.dtype.kind
    if have == kind:
        return array.astype(np.int64) if kind == "i" else array
    if have == "U":
        array = np.char.encode(array, "utf-8")
    elif have == "i":
        array = array.astype(str) if kind == "U" else array.astype(np.bytes_)
    return array.astype(object) if kind == "O" else array


# ------------------------------------------------------------------------------- files on disk
class _Rows:
    """Interaction rows (user, item[, rating][, timestamp]) appended to a binary file and read back in chunks."""

    def __init__(self, path, dtype):
        self.path, self.dtype, self.count = Path(path), dtype, 0

    def append(self, rows):
        with open(self.path, "ab") as handle:
            rows.tofile(handle)
        self.count += len(rows)

    def chunks(self, rows_per_chunk):
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            while True:
                rows = np.fromfile(handle, dtype=self.dtype, count=rows_per_chunk)
                if len(rows) == 0:
                    return
                yield rows

    def read(self):
        return np.fromfile(self.path, dtype=self.dtype) if self.path.exists() else np.zeros(0, self.dtype)

    def remove(self):
        self.path.unlink(missing_ok=True)


class _NpyAppender:
    """A 1-D .npy file written by appending blocks; the header gets the final length on close.

    numpy pads a header so that its shape can grow in place (`GROWTH_AXIS_MAX_DIGITS`), so the
    header written for length 0 has the length of the final one.
    """

    def __init__(self, path, dtype):
        self.path, self.dtype, self.length = Path(path), np.dtype(dtype), 0
        self.handle = open(self.path, "wb")
        self.header_bytes = self._write_header()

    def _write_header(self):
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (self.length,)}
        np.lib.format.write_array_header_1_0(self.handle, header)
        return self.handle.tell()

    def append(self, block):
        np.ascontiguousarray(block, dtype=self.dtype).tofile(self.handle)
        self.length += len(block)

    def close(self):
        self.handle.seek(0)
        if self._write_header() != self.header_bytes:
            raise RuntimeError(f"{self.path}: the .npy header changed size")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()


def _save(path, array):
    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())


def _save_ids(directory, stem, ids):
    """Original ids: stem.npy (int64), or stem.utf8.npy + stem.offsets.npy for str ids."""
    if ids.dtype.kind in "iu":
        _save(directory / f"{stem}.npy", ids.astype(np.int64))
        return "int"
    encoded = [str(value).encode("utf-8") for value in ids]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(value) for value in encoded], out=offsets[1:])
    _save(directory / f"{stem}.utf8.npy", np.frombuffer(b"".join(encoded), dtype=np.uint8))
    _save(directory / f"{stem}.offsets.npy", offsets)
    return "str"


def _load_ids(directory, stem, kind):
    if kind == "int":
        return _load_array(directory, f"{stem}.npy", mmap=False)
    blob = _load_array(directory, f"{stem}.utf8.npy", mmap=False).tobytes()
    offsets = _load_array(directory, f"{stem}.offsets.npy", mmap=False)
    tokens = [blob[start:end] for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    return loaders._int_or_str_ids(_parse.bytes_column(tokens)) if tokens else np.zeros(0, dtype=str)


# ---------------------------------------------------------------------------- reading the source
class _Source:
    """What pass 1 found: the rows of train (and test) as indices on disk, the id maps and the report."""

    def __init__(self, work, fields):
        self.dtype = np.dtype([(name, np.int64 if name in ("user", "item") else np.float64) for name in fields])
        self.parts = {"train": _Rows(work / "train.rows", self.dtype)}
        self.user_ids = self.item_ids = None
        self.files, self.name, self.test_file, self.negatives = [], None, None, None
        self.skipped = _parse.Skipped()
        self.min_rating, self.binary, self.dedupe = None, True, True

    def add(self, part, users, items, *values):
        rows = np.empty(len(users), dtype=self.dtype)
        for name, column in zip(self.dtype.names, (users, items, *values)):
            rows[name] = column
        if part not in self.parts:
            self.parts[part] = _Rows(self.parts["train"].path.with_name(f"{part}.rows"), self.dtype)
        self.parts[part].append(rows)


def _csv_source(work, chunk_bytes, path, user_col, item_col, rating_col=None, timestamp_col=None, sep=None,
                has_header=True, test_path=None, min_rating=None, binary=True, dedupe=True, on_error="raise",
                name=None):
    """Pass 1 of `loaders.load_csv` (same arguments)."""
    loaders._check_options(min_rating, on_error, rating_col is not None)
    selectors = [(user_col, "id", "user id"), (item_col, "id", "item id")]
    fields = ["user", "item"]
    if rating_col is not None:
        selectors.append((rating_col, "float", "rating"))
        fields.append("rating")
    if timestamp_col is not None:
        selectors.append((timestamp_col, "float", "timestamp"))
        fields.append("timestamp")
    source = _Source(work, fields)
    source.min_rating, source.binary, source.dedupe = min_rating, binary, dedupe
    users, items = IdMap(), IdMap()
    paths = [Path(path)] + ([Path(test_path)] if test_path is not None else [])
    for part, file_path in zip(("train", "test"), paths):
        if file_path.suffix == ".parquet":
            chunks = loaders.parquet_chunks(file_path, [s for s, _, _ in selectors], [k for _, k, _ in selectors],
                                            batch_rows=max(1, chunk_bytes // 32))
        else:
            chunks = _parse.table_chunks(file_path, selectors, sep=sep, has_header=has_header, on_error=on_error,
                                         skipped=source.skipped, chunk_bytes=chunk_bytes)
        for columns in chunks:
            source.add(part, users(columns[0]), items(columns[1]), *columns[2:])
    source.user_ids, source.item_ids = users.ids(), items.ids()
    source.files, source.name = paths, name or paths[0].stem
    source.test_file = None if test_path is None else str(test_path)
    return source


def _movielens_source(work, chunk_bytes, path, min_rating=None, binary=True, dedupe=True, on_error="raise",
                      name=None):
    """Pass 1 of `loaders.load_movielens` (same arguments)."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / file_name for file_name in loaders._MOVIELENS_FILES if (path / file_name).exists()]
        if not candidates:
            raise FileNotFoundError(f"{path}: no MovieLens ratings file ({', '.join(loaders._MOVIELENS_FILES)}) "
                                    "in this folder")
        path = candidates[0]
    spec = loaders._MOVIELENS_FILES.get(path.name)
    if spec is None:
        raise ValueError(f"{path}: not a MovieLens ratings file name ({', '.join(loaders._MOVIELENS_FILES)})")
    return _csv_source(work, chunk_bytes, path, *spec["columns"], sep=spec["sep"], has_header=spec["has_header"],
                       min_rating=min_rating, binary=binary, dedupe=dedupe, on_error=on_error,
                       name=name or path.resolve().parent.name)


class _Distinct:
    """The distinct values seen so far (sorted), for the id-space rule of formats whose ids are indices."""

    def __init__(self):
        self.values = np.zeros(0, dtype=np.int64)

    def add(self, column):
        self.values = np.union1d(self.values, column)


def _lightgcn_source(work, chunk_bytes, path, dedupe=True, on_error="raise", name=None):
    """Pass 1 of `loaders.load_lightgcn` (same arguments)."""
    _parse.check_on_error(on_error)
    path = Path(path)
    train_path = path / "train.txt" if path.is_dir() else path
    folder = train_path.parent
    test_path = folder / "test.txt"
    has_test = test_path.exists() and test_path != train_path
    source = _Source(work, ["user", "item"])
    source.dedupe = dedupe
    line_users, items = _Distinct(), _Distinct()
    data_files = [train_path, test_path] if has_test else [train_path]
    for part, file_path in zip(("train", "test"), data_files):
        for users_read, items_read, line_users_read in _parse.adjacency_chunks(
                file_path, on_error, source.skipped, chunk_bytes):
            source.add(part, users_read, items_read)
            line_users.add(line_users_read)
            items.add(items_read)
    files = list(data_files)
    id_lists = []
    for list_name in ("user_list.txt", "item_list.txt"):
        list_path = folder / list_name
        id_lists.append(loaders._read_id_list(list_path, on_error, source.skipped) if list_path.exists() else None)
        if list_path.exists():
            files.append(list_path)
    n_users = loaders.check_id_space("user", [line_users.values], data_files, "lightgcn")
    n_items = loaders.check_id_space("item", [items.values], data_files, "lightgcn")
    source.user_ids, source.item_ids = loaders.lightgcn_id_maps(folder, id_lists, n_users, n_items)
    source.files, source.name = files, name or folder.resolve().name
    source.test_file = str(test_path) if has_test else None
    return source


def _ncf_source(work, chunk_bytes, path, min_rating=None, binary=True, dedupe=True, on_error="raise", name=None):
    """Pass 1 of `loaders.load_ncf` (same arguments); the negatives file is read whole."""
    loaders._check_options(min_rating, on_error, True)
    prefix = loaders._ncf_prefix(path)
    train_path, test_path = Path(prefix + ".train.rating"), Path(prefix + ".test.rating")
    negative_path = Path(prefix + ".test.negative")
    source = _Source(work, ["user", "item", "rating"])
    source.min_rating, source.binary, source.dedupe = min_rating, binary, dedupe
    columns = [(0, "index", "user id"), (1, "index", "item id"), (2, "float", "rating")]
    users, items = _Distinct(), _Distinct()
    files = [train_path] + ([test_path] if test_path.exists() else [])
    for part, file_path in zip(("train", "test"), files):
        for users_read, items_read, ratings in _parse.table_chunks(file_path, columns, sep="\t", on_error=on_error,
                                                                   skipped=source.skipped, chunk_bytes=chunk_bytes):
            source.add(part, users_read, items_read, ratings)
            users.add(users_read)
            items.add(items_read)
    if negative_path.exists():
        source.negatives = _parse.read_negatives(negative_path, on_error, source.skipped)
        files.append(negative_path)
        users.add(source.negatives[0])
        items.add(np.concatenate((source.negatives[1], source.negatives[2].ravel())))
    n_users = loaders.check_id_space("user", [users.values], files, "ncf")
    n_items = loaders.check_id_space("item", [items.values], files, "ncf")
    source.user_ids, source.item_ids = np.arange(n_users), np.arange(n_items)
    source.files, source.name = files, name or Path(prefix).name
    source.test_file = str(test_path) if test_path.exists() else None
    return source


_SOURCES = {"csv": _csv_source, "movielens": _movielens_source, "lightgcn": _lightgcn_source, "ncf": _ncf_source}


# ------------------------------------------------------------------------------------ the passes
def prepare(path, out, format="auto", chunk_bytes=CHUNK_BYTES, bucket_rows=BUCKET_ROWS, **options):
    """Read interaction files in chunks into the prepared directory `out` (see the module doc).

    Args:
        path: what `recgrad.data.load(path, format, **options)` reads (lightgcn, ncf, movielens, csv
            including Parquet); not the synthetic set and not a prepared directory.
        out: the directory to write; it must not exist yet.
        format, options: as for `recgrad.data.load` (user_col=, item_col=, min_rating=, on_error=, ...).
        chunk_bytes: text read at once (Parquet: about chunk_bytes / 32 rows per batch).
        bucket_rows: rows per user range of pass 3.

    Returns the manifest (a dict). Raises what `load` raises for the same files, FileExistsError
    when `out` exists; nothing is left at `out` unless it succeeds.
    """
    if format not in loaders.FORMATS:
        raise ValueError(f"format must be one of {loaders.FORMATS}, got {format!r}")
    if format == "synthetic" or (format == "auto" and str(path) == "synthetic" and not Path(path).exists()):
        raise ValueError("the synthetic data set is generated in memory; prepare reads files")
    if int(chunk_bytes) != chunk_bytes or chunk_bytes < 1 or int(bucket_rows) != bucket_rows or bucket_rows < 1:
        raise ValueError(f"chunk_bytes and bucket_rows must be positive integers, got {chunk_bytes!r}, "
                         f"{bucket_rows!r}")
    if format == "auto":
        format = loaders.detect_format(path)
    if format == "prepared":
        raise ValueError(f"{path} is a prepared directory already; train from it with --data {path}")
    if format == "csv" and not {"user_col", "item_col"} <= options.keys():
        raise ValueError(f"{path}: the csv format needs user_col= and item_col= (--user-col, --item-col: "
                         "the column names)")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another output directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        source = _SOURCES[format](work, int(chunk_bytes), path, **options)
        manifest = _write_arrays(source, work, int(chunk_bytes), int(bucket_rows))
        manifest["source"] = {"path": str(path), "format": format,
                              "options": {key: value if isinstance(value, (bool, int, float, str)) else str(value)
                                          for key, value in options.items() if value is not None}}
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        text = json.dumps(manifest, indent=1) + "\n"
        with open(work / MANIFEST, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(work, 0o777 & ~_umask())  # mkdtemp's 0700 would keep the data from the other users
        os.rename(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _user_ranges(source, n_users, rows_per_chunk, bucket_rows):
    """(first user of each range, range of each user): contiguous users with about bucket_rows rows each."""
    counts = np.zeros(n_users, dtype=np.int64)
    for rows in source.parts.values():
        for chunk in rows.chunks(rows_per_chunk):
            counts += np.bincount(chunk["user"], minlength=n_users)
    rows_before = np.cumsum(counts) - counts
    _, range_of_user = np.unique(rows_before // bucket_rows, return_inverse=True)
    range_of_user = range_of_user.ravel()
    starts = np.flatnonzero(np.diff(range_of_user, prepend=-1))
    return np.append(starts, n_users), range_of_user


def _distribute(rows, range_of_user, n_ranges, rows_per_chunk):
    """Pass 2: the rows of one part split into one file per user range, each in file order."""
    if n_ranges == 1:
        return [rows]
    ranges = [_Rows(rows.path.with_name(f"{rows.path.stem}.{k}.rows"), rows.dtype) for k in range(n_ranges)]
    for chunk in rows.chunks(rows_per_chunk):
        of_row = range_of_user[chunk["user"]]
        order = np.argsort(of_row, kind="stable")
        bounds = np.searchsorted(of_row[order], np.arange(n_ranges + 1))
        for k in np.flatnonzero(np.diff(bounds)):
            ranges[k].append(chunk[order[bounds[k]:bounds[k + 1]]])
    rows.remove()
    return ranges


def _block(rows, first_user, n_users, n_items, source, report):
    """The CSR rows of users first_user.. from their interaction rows, as `loaders._build` makes them."""
    users, items = rows["user"] - first_user, rows["item"]
    ratings = rows["rating"] if "rating" in rows.dtype.names else None
    stamps = rows["timestamp"] if "timestamp" in rows.dtype.names else None
    if source.min_rating is not None:
        keep = ratings >= source.min_rating
        report["below_min_rating"] += int(len(keep) - np.count_nonzero(keep))
        users, items, ratings = users[keep], items[keep], ratings[keep]
        stamps = None if stamps is None else stamps[keep]
    values = None if source.binary or ratings is None else ratings
    matrix, aligned, n_duplicates = interactions_to_csr(users, items, (n_users, n_items), values, stamps,
                                                        source.dedupe)
    report["duplicates"] += n_duplicates
    return matrix, aligned


def _write_arrays(source, work, chunk_bytes, bucket_rows):
    """Passes 2 and 3: the CSR arrays, id maps and negatives into `work`; returns the manifest."""
    n_users, n_items = len(source.user_ids), len(source.item_ids)
    rows_per_chunk = max(1, chunk_bytes // source.dtype.itemsize)
    starts, range_of_user = _user_ranges(source, n_users, rows_per_chunk, bucket_rows)
    n_ranges = len(starts) - 1
    parts = {part: _distribute(rows, range_of_user, n_ranges, rows_per_chunk) for part, rows in source.parts.items()}
    total_rows = sum(rows.count for rows in source.parts.values())
    index_dtype = np.int32 if max(total_rows, n_items, n_users) <= _INT32_LIMIT else np.int64
    has_timestamps = "timestamp" in source.dtype.names
    with contextlib.ExitStack() as open_files:  # closed however the passes end
        return _fill_arrays(source, work, parts, starts, index_dtype, has_timestamps, open_files)


def _fill_arrays(source, work, parts, starts, index_dtype, has_timestamps, open_files):
    """Pass 3 into `work` (see `_write_arrays`); appenders register their files with `open_files`."""
    n_users, n_items = len(source.user_ids), len(source.item_ids)
    n_ranges = len(starts) - 1
    outputs = {}
    for part in parts:
        outputs[part] = {"indices": _NpyAppender(work / f"{part}_indices.npy", index_dtype),
                         "data": _NpyAppender(work / f"{part}_data.npy", np.float32)}
        if part == "train" and has_timestamps:
            outputs[part]["timestamps"] = _NpyAppender(work / "train_timestamps.npy", np.float64)
        for appender in outputs[part].values():
            open_files.callback(appender.handle.close)
    row_counts = {part: np.zeros(n_users, dtype=np.int64) for part in parts}
    report = loaders._new_report(source.files)
    has_test = "test" in parts
    diagnosis = Diagnosis(n_items, with_test=has_test)
    negatives_counts = {}
    if source.negatives is not None:
        negative_users = source.negatives[0]
        negatives_order = np.argsort(negative_users, kind="stable")
        negative_bounds = np.searchsorted(negative_users[negatives_order], starts)
    for k in range(n_ranges):
        first, stop = int(starts[k]), int(starts[k + 1])
        blocks = {}
        for part, ranges in parts.items():
            matrix, aligned = _block(ranges[k].read(), first, stop - first, n_items, source, report)
            ranges[k].remove()
            outputs[part]["indices"].append(matrix.indices)
            outputs[part]["data"].append(matrix.data)
            if "timestamps" in outputs[part]:
                outputs[part]["timestamps"].append(aligned)
            row_counts[part][first:stop] = np.diff(matrix.indptr)
            blocks[part] = matrix
        diagnosis.add(blocks["train"], blocks.get("test"))
        if source.negatives is not None:
            rows = negatives_order[negative_bounds[k]:negative_bounds[k + 1]]
            users, items, table = (array[rows] for array in source.negatives)
            for key, count in loaders.negatives_report(blocks["train"], blocks.get("test"), users - first, items,
                                                       table).items():
                negatives_counts[key] = negatives_counts.get(key, 0) + count
    arrays = {}
    for part, files in outputs.items():
        for role, appender in files.items():
            appender.close()
            arrays[f"{part}_{role}"] = [appender.path.name, str(appender.dtype), appender.length]
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(row_counts[part], out=indptr[1:])
        _save(work / f"{part}_indptr.npy", indptr)
        arrays[f"{part}_indptr"] = [f"{part}_indptr.npy", "int64", n_users + 1]
    if source.negatives is not None:
        for key, array in zip(("test_users", "test_items", "test_negatives"), source.negatives):
            _save(work / f"{key}.npy", array.astype(np.int64))
            arrays[key] = [f"{key}.npy", "int64", len(array)]
    report["skipped_lines"] = source.skipped.count
    report["skipped_examples"] = source.skipped.examples
    report.update(diagnosis.counts())
    report.update(negatives_counts)
    return {
        "format": "recgrad-prepared",
        "format_version": FORMAT_VERSION,
        "name": source.name,
        "n_users": n_users,
        "n_items": n_items,
        "train_nnz": arrays["train_indices"][2],
        "test_nnz": arrays["test_indices"][2] if has_test else None,
        "user_ids": _save_ids(work, "user_ids", source.user_ids),
        "item_ids": _save_ids(work, "item_ids", source.item_ids),
        "arrays": arrays,
        "test_file": source.test_file,
        "report": report,
    }


# --------------------------------------------------------------------------------------- reading
def _load_array(directory, file_name, mmap=True, dtype=None, length=None):
    """One array of a prepared directory (memory-mapped, read-only), checked against the manifest."""
    path = Path(directory) / file_name
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise DataFormatError(f"{path}: missing from the prepared directory; run recgrad prepare again") from None
    except ValueError as error:
        raise DataFormatError(f"{path}: not a readable .npy array ({error}); run recgrad prepare again") from None
    if (dtype is not None and array.dtype != np.dtype(dtype)) or (length is not None and len(array) != length):
        raise DataFormatError(f"{path}: holds {array.dtype} x {len(array)}, the manifest says {dtype} x {length}; "
                              "run recgrad prepare again")
    return array


def load_prepared(path):
    """The `Dataset` of a directory written by `prepare`; its matrices and timestamps are memory-mapped.

    The CSR arrays stay on disk (read-only maps, paged in as they are read); the id maps and the
    NCF negatives are read into memory. A damaged or foreign directory raises DataFormatError
    naming the file.
    """
    directory = Path(path)
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{manifest_path}: no such file; write the directory with recgrad prepare") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise DataFormatError(f"{manifest_path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "recgrad-prepared":
        raise DataFormatError(f"{manifest_path}: not a recgrad prepared-data manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataFormatError(f"{manifest_path}: format version {manifest.get('format_version')!r}, this recgrad "
                              f"reads version {FORMAT_VERSION}; run recgrad prepare again")
    arrays = {key: _load_array(directory, file_name, dtype=dtype, length=length)
              for key, (file_name, dtype, length) in manifest["arrays"].items()}
    shape = (manifest["n_users"], manifest["n_items"])
    matrices = {}
    for part in ("train", "test"):
        if f"{part}_indptr" in arrays:
            matrix = sp.csr_matrix((arrays[f"{part}_data"], arrays[f"{part}_indices"], arrays[f"{part}_indptr"]),
                                   shape=shape)
            matrix.has_sorted_indices = True  # written sorted and de-duplicated by interactions_to_csr
            matrices[part] = matrix
    return Dataset(train=matrices["train"], test=matrices.get("test"),
                   user_ids=_load_ids(directory, "user_ids", manifest["user_ids"]),
                   item_ids=_load_ids(directory, "item_ids", manifest["item_ids"]),
                   name=manifest["name"], train_timestamps=arrays.get("train_timestamps"),
                   test_users=_in_memory(arrays.get("test_users")), test_items=_in_memory(arrays.get("test_items")),
                   test_negatives=_in_memory(arrays.get("test_negatives")), report=manifest["report"],
                   test_file=manifest["test_file"])


def _in_memory(array):
    return None if array is None else np.array(array)
