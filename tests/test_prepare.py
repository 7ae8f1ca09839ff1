"""recgrad prepare: the chunked reader against the in-memory loaders, memory, errors, atomic output, training."""

import json
import mmap
import os
import tracemalloc

import numpy as np
import pytest

from recgrad.cli import main
from recgrad.data import DataFormatError, _parse, load, synthetic
from recgrad.data import prepared as prepared_module
from recgrad.data.loaders import map_ids
from recgrad.data.prepared import IdMap, load_prepared, prepare

TINY = {"chunk_bytes": 50, "bucket_rows": 7}  # every file spans many chunks and user ranges


def small_data(seed=0):
    return synthetic(n_users=40, n_items=60, interactions_per_user=8, seed=seed)


def pairs(matrix):
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    return list(zip(rows.tolist(), matrix.indices.tolist()))


def write_lightgcn(folder):
    data = small_data()
    folder.mkdir()
    for name, matrix in (("train.txt", data.train), ("test.txt", data.test)):
        lines = [" ".join(map(str, [u, *matrix.indices[matrix.indptr[u]:matrix.indptr[u + 1]]]))
                 for u in range(matrix.shape[0])]
        lines[3] = "3"  # a user line without items
        (folder / name).write_text("\n".join(lines) + "\n")
    items = "\n".join(f"item{i:03d} {i}" for i in range(data.n_items))
    (folder / "item_list.txt").write_text("org_id remap_id\n" + items + "\n")
    return folder, {}


def write_ncf(folder):
    data = small_data(1)
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, matrix in (("train", data.train), ("test", data.test)):
        lines = [f"{u}\t{i}\t{rng.integers(1, 6)}\t{978300000 + k}" for k, (u, i) in enumerate(pairs(matrix))]
        (folder / f"ml.{name}.rating").write_text("\n".join(lines) + "\n")
    test = pairs(data.test)[::3]
    negatives = [f"({u},{i})\t" + "\t".join(map(str, rng.integers(0, data.n_items, 5))) for u, i in test]
    (folder / "ml.test.negative").write_text("\n".join(negatives) + "\n")
    return folder, {"min_rating": 2}


def write_movielens(folder):
    data = small_data(2)
    folder.mkdir()
    rng = np.random.default_rng(1)
    rows = [(100 + u, 7 * i, rng.integers(1, 11) / 2, rng.integers(0, 5)) for u, i in pairs(data.train)]
    rows += rows[:15]  # duplicates, resolved by timestamp
    lines = [f"{u},{i},{r},{t}" for u, i, r, t in rows]
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(lines) + "\n")
    return folder, {"min_rating": 2.5}


def write_csv(folder):
    """String and integer ids mixed (012 is not 12), quoted fields, CRLF line ends, a BOM, a test file."""
    data = small_data(3)
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name, matrix in (("log.csv", data.train), ("test.csv", data.test)):
        lines = []
        for k, (u, i) in enumerate(pairs(matrix)):
            user = f"u{u}" if u % 5 == 0 else (f"0{u}" if u % 7 == 0 else str(u))
            item = f'"it {i}"' if k % 11 == 0 else str(i)
            lines.append(f"{user},{item},{rng.integers(0, 3)}")
        (folder / name).write_bytes(b"\xef\xbb\xbf" + ("user,item,t\r\n" + "\r\n".join(lines) + "\r\n").encode())
    return folder / "log.csv", {"user_col": "user", "item_col": "item", "timestamp_col": "t",
                                "test_path": str(folder / "test.csv")}


def write_parquet(folder):
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    data = small_data(4)
    folder.mkdir()
    user, item = zip(*pairs(data.train))
    stamps = pyarrow.array(np.arange(len(user)) * 1000, pyarrow.timestamp("ms"))
    table = pyarrow.table({"user": [f"user-{u}" for u in user], "item": list(item), "when": stamps})
    parquet.write_table(table, folder / "log.parquet", row_group_size=40)
    return folder / "log.parquet", {"user_col": "user", "item_col": "item", "timestamp_col": "when"}


WRITERS = {"lightgcn": write_lightgcn, "ncf": write_ncf, "movielens": write_movielens, "csv": write_csv,
           "parquet": write_parquet}


def assert_same_dataset(expected, got):
    for part in ("train", "test"):
        a, b = getattr(expected, part), getattr(got, part)
        assert (a is None) == (b is None), part
        if a is not None:
            assert a.shape == b.shape
            for field in ("indptr", "indices", "data"):
                assert np.array_equal(getattr(a, field), getattr(b, field)), (part, field)
    for field in ("user_ids", "item_ids"):
        a, b = getattr(expected, field), getattr(got, field)
        assert a.tolist() == b.tolist() and (a.dtype.kind in "iu") == (b.dtype.kind in "iu"), field
    for field in ("train_timestamps", "test_users", "test_items", "test_negatives"):
        a, b = getattr(expected, field), getattr(got, field)
        assert (a is None and b is None) or np.array_equal(a, b), field
    assert got.report == expected.report
    assert (got.name, got.test_file) == (expected.name, expected.test_file)


@pytest.mark.parametrize("sizes", [TINY, {}], ids=["tiny-chunks", "default-chunks"])
@pytest.mark.parametrize("kind", list(WRITERS))
def test_prepared_equals_the_in_memory_loader(tmp_path, kind, sizes):
    path, options = WRITERS[kind](tmp_path / kind)
    expected = load(path, **options)
    manifest = prepare(path, tmp_path / "prepared", **sizes, **options)
    got = load(tmp_path / "prepared")  # detected from the manifest
    assert_same_dataset(expected, got)
    assert manifest["train_nnz"] == expected.train.nnz and manifest["format_version"] == 1
    assert file_backed(got.train.indices) and file_backed(got.train.data)


def file_backed(array):
    """Whether an array's memory is a file mapping (np.load(mmap_mode=...)), not a copy in memory."""
    while array is not None:
        if isinstance(array, (np.memmap, mmap.mmap)):
            return True
        array = getattr(array, "base", None)
    return False


def test_a_users_rows_span_chunks_and_ranges(tmp_path):
    """A user's lines cut across text chunks and spill chunks still land in one CSR row, in order."""
    lines = [f"{u},{i},{t}" for t in range(3) for u in range(4) for i in range(6)]  # user 0 on 3 distant stretches
    lines += ["0,2,9", "0,2,1"]  # a duplicate: the latest timestamp wins, however far apart
    path = tmp_path / "log.csv"
    path.write_text("u,i,t\n" + "\n".join(lines) + "\n")
    options = {"user_col": "u", "item_col": "i", "timestamp_col": "t"}
    chunks = list(_parse.table_chunks(path, [("u", "id", "user"), ("i", "id", "item")], has_header=True,
                                      chunk_bytes=16))
    assert len(chunks) > 10
    prepare(path, tmp_path / "out", chunk_bytes=16, bucket_rows=3, **options)
    assert_same_dataset(load(path, **options), load_prepared(tmp_path / "out"))
    assert load_prepared(tmp_path / "out").train_timestamps[2] == 9.0
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask  # not the temporary directory's 0700


@pytest.mark.parametrize("text", [b"\xef\xbb\xbfa\r\nbb\r\rccc\n\ndd\r\n", b"x\ny\r", b"\r\n\r\n1\r2\n"])
def test_line_chunks_cut_at_line_ends_at_every_chunk_size(tmp_path, text):
    path = tmp_path / "f.txt"
    path.write_bytes(text)
    whole = _parse.read_bytes(path)
    for size in range(1, len(text) + 2):
        chunks = list(_parse.line_chunks(path, size))
        assert b"".join(body for _, body in chunks) == whole, size
        start = 0
        for first_lineno, body in chunks:
            assert first_lineno == whole.count(b"\n", 0, start) + 1, size
            assert body == b"" or body.endswith(b"\n") or start + len(body) == len(whole), size
            start += len(body)


def test_id_map_in_chunks_equals_map_ids():
    rng = np.random.default_rng(0)
    tokens = [str(v).encode() for v in rng.integers(0, 50, 300)] + [b"007", b"x", b"7", b"12"] * 3
    chunks = [np.array(tokens[k:k + 37]) for k in range(0, len(tokens), 37)]
    chunks[0] = chunks[0].astype(np.int64)  # a chunk of plain integers comes back as int64
    id_map = IdMap()
    got = np.concatenate([id_map(chunk) for chunk in chunks])
    (expected,), ids = map_ids(np.array(tokens))
    assert got.tolist() == expected.tolist() and id_map.ids().tolist() == ids.tolist()


def test_memory_does_not_grow_with_the_file(tmp_path):
    """Four times the lines over the same users and items: the peak of prepare stays put (the
    in-memory loader's grows with the file)."""
    rng = np.random.default_rng(0)

    def peak(n_lines, name):
        path = tmp_path / f"{name}.tsv"
        rows = np.column_stack((rng.integers(0, 300, n_lines), rng.integers(0, 500, n_lines)))
        np.savetxt(path, rows, fmt="%d", delimiter="\t", header="u\ti", comments="")
        tracemalloc.start()
        prepare(path, tmp_path / name, chunk_bytes=1 << 15, bucket_rows=4000, user_col="u", item_col="i")
        result = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return result, path.stat().st_size

    small, small_bytes = peak(25_000, "small")
    large, large_bytes = peak(100_000, "large")
    assert large_bytes > 3.9 * small_bytes
    assert large < 1.3 * small, (small, large)


def run_prepare(*arguments):
    return main(["prepare", *map(str, arguments)])


def test_bad_line_in_a_later_chunk_is_one_line_and_leaves_nothing(tmp_path, capsys):
    lines = [f"{u}\t{u % 9}\t4" for u in range(200)]
    lines[150] = "150\t3\tfour"
    path = tmp_path / "log.tsv"
    path.write_text("user\titem\trating\n" + "\n".join(lines) + "\n")
    out = tmp_path / "out"
    status = run_prepare("--data", path, "--out", out, "--user-col", "user", "--item-col", "item",
                         "--rating-col", "rating", "--chunk-mb", "0.0005")
    assert status == 2
    assert capsys.readouterr().err == f"recgrad: error: {path}:152: rating 'four' is not a finite number\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.tsv"]  # no DIR, no partial directory
    assert run_prepare("--data", path, "--out", out, "--user-col", "user", "--item-col", "item",
                       "--rating-col", "rating", "--on-error", "skip") == 0
    assert load_prepared(out).report["skipped_lines"] == 1
    assert run_prepare("--data", path, "--out", out, "--user-col", "user", "--item-col", "item") == 2
    assert "exists; remove it or choose another output directory" in capsys.readouterr().err


def test_lightgcn_error_names_the_line_across_chunks(tmp_path, capsys):
    folder = tmp_path / "lg"
    folder.mkdir()
    (folder / "train.txt").write_text("".join(f"{u} 1 2 3\n" for u in range(50)) + "50 1 x3\n")
    assert run_prepare("--data", folder, "--out", tmp_path / "out", "--chunk-mb", "0.0001") == 2
    assert capsys.readouterr().err == f"recgrad: error: {folder / 'train.txt'}:51: item id 'x3' is not a " \
                                      "non-negative integer\n"
    assert not (tmp_path / "out").exists()


def test_interrupted_prepare_leaves_no_directory(tmp_path, monkeypatch):
    path, options = write_csv(tmp_path / "csv")
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = prepared_module.interactions_to_csr
    monkeypatch.setattr(prepared_module, "interactions_to_csr", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(path, tmp_path / "out", **TINY, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["csv"]


def test_damaged_or_foreign_directory_is_one_line(tmp_path, capsys):
    path, options = write_movielens(tmp_path / "ml")
    out = tmp_path / "out"
    prepare(path, out, **options)
    manifest = json.loads((out / "prepared.json").read_text())
    (out / "train_indices.npy").write_bytes((out / "train_indices.npy").read_bytes()[:100])
    with pytest.raises(DataFormatError, match="train_indices.npy: .*run recgrad prepare again"):
        load_prepared(out)
    manifest["format_version"] = 99
    (out / "prepared.json").write_text(json.dumps(manifest))
    assert main(["info", str(out)]) == 2
    assert "format version 99, this recgrad reads version 1" in capsys.readouterr().err
    assert main(["train", "--data", str(out), "--user-col", "u", "--out", str(tmp_path / "run")]) == 2
    assert "recgrad: error: --user-col: does not apply to prepared data" in capsys.readouterr().err


@pytest.mark.parametrize("kind, validation", [("lightgcn", "0"), ("movielens", "0.2")])
def test_training_from_the_prepared_directory_equals_training_from_the_text(tmp_path, kind, validation):
    """Same seed, same settings: the same model, bit for bit, and the same metrics. lightgcn has a
    test file and no validation, so the trainer reads the read-only mapped matrices themselves;
    movielens has none, so both runs split the data at train time."""
    path, options = WRITERS[kind](tmp_path / kind)
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
    assert run_prepare("--data", path, "--out", tmp_path / "prepared", "--chunk-mb", "0.0001", *flags) == 0
    common = ["--epochs", "2", "--dim", "8", "--seed", "3", "--validation", validation]
    runs = {"text": ["--data", str(path), *flags], "prepared": ["--data", str(tmp_path / "prepared")]}
    for name, data_flags in runs.items():
        assert main(["train", *data_flags, "--out", str(tmp_path / name), *common]) == 0
    text, prepared = (np.load(tmp_path / name / "last.npz") for name in runs)
    assert sorted(text.files) == sorted(prepared.files)
    for key in text.files:
        assert np.array_equal(text[key], prepared[key]), key
    metrics = [[{k: v for k, v in json.loads(line).items() if "second" not in k}
                for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()] for name in runs]
    assert metrics[0] == metrics[1] and "recall@20" in metrics[0][-1]
    assert main(["evaluate", "--run", str(tmp_path / "prepared")]) == 0  # the run's config names the directory
