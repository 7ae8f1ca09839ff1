"""Loaders on small files written to tmp_path: formats, id maps, options and malformed input."""

import sys

import numpy as np
import pytest

from recgrad.data import DataFormatError, load, load_csv, load_lightgcn, load_movielens, load_ncf


def write(path, text):
    path.write_text(text)
    return path


def dense(matrix):
    return matrix.toarray().tolist()


# --- LightGCN ---------------------------------------------------------------------------------

def test_lightgcn_train_test_and_id_lists(tmp_path):
    write(tmp_path / "train.txt", "0 0 1\n1 2\n2\n")
    write(tmp_path / "test.txt", "0 2\n1 0 1\n")
    write(tmp_path / "user_list.txt", "org_id remap_id\nalice 0\nbob 1\ncarol 2\n")
    write(tmp_path / "item_list.txt", "org_id remap_id\n10 0\n20 1\n30 2\n")
    data = load_lightgcn(tmp_path)
    assert dense(data.train) == [[1, 1, 0], [0, 0, 1], [0, 0, 0]]
    assert dense(data.test) == [[0, 0, 1], [1, 1, 0], [0, 0, 0]]
    assert data.train.dtype == np.float32
    assert data.user_ids.tolist() == ["alice", "bob", "carol"]
    assert data.item_ids.tolist() == [10, 20, 30]
    assert data.user_index("bob") == 1 and data.item_index(30) == 2 and data.item_index("30") == 2
    assert data.user_id(2) == "carol"
    assert data.report["users_without_train"] == 1  # carol's line has no items
    assert load(tmp_path / "train.txt").train.nnz == 3  # auto-detection from the file name


def test_lightgcn_without_lists_uses_integer_ids(tmp_path):
    write(tmp_path / "train.txt", "0 3\n2 1 1\n")
    data = load_lightgcn(tmp_path / "train.txt")
    assert data.train.shape == (3, 4) and data.test is None
    assert data.user_ids.tolist() == [0, 1, 2]
    assert data.report["duplicates"] == 1


def test_lightgcn_malformed_item_names_file_and_line(tmp_path):
    write(tmp_path / "train.txt", "0 1 2\n\n1 x3 4\n")
    with pytest.raises(DataFormatError, match=r"train\.txt:3: item id 'x3' is not a non-negative integer"):
        load_lightgcn(tmp_path)
    data = load_lightgcn(tmp_path, on_error="skip")
    assert data.report["skipped_lines"] == 1 and "train.txt:3" in data.report["skipped_examples"][0]
    assert data.train.nnz == 2
    assert any("malformed" in text for text in data.warnings())


def test_unseen_test_item_and_user_are_reported_not_dropped(tmp_path):
    write(tmp_path / "train.txt", "0 0 1\n1 1\n")
    write(tmp_path / "test.txt", "0 2\n1 0\n2 1\n")
    data = load_lightgcn(tmp_path)
    assert data.test.nnz == 3  # kept
    assert data.report["test_items_unseen_in_train"] == 1
    assert data.report["test_interactions_unseen_item"] == 1
    assert data.report["test_users_without_train"] == 1
    text = " ".join(data.warnings())
    assert "never occur in training" in text and "no training interactions" in text


def test_empty_and_missing_files(tmp_path):
    write(tmp_path / "train.txt", "\n  \n")
    with pytest.raises(DataFormatError, match=r"train\.txt: file is empty"):
        load_lightgcn(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_lightgcn(tmp_path / "nowhere" / "train.txt")


# --- NCF --------------------------------------------------------------------------------------

def write_ncf(folder, negative_line="(1,2)\t0\t1\n"):
    write(folder / "toy.train.rating", "0\t0\t5\t10\n0\t1\t3\t11\n1\t0\t4\t12\n1\t1\t1\t13\n")
    write(folder / "toy.test.rating", "0\t2\t4\t20\n1\t2\t2\t21\n")
    write(folder / "toy.test.negative", "(0,2)\t3\t1\n" + negative_line)


def test_ncf_files_and_negatives(tmp_path):
    write_ncf(tmp_path)
    data = load_ncf(tmp_path)
    assert data.name == "toy" and data.train.shape == (2, 4)
    assert dense(data.train) == [[1, 1, 0, 0], [1, 1, 0, 0]]
    assert data.test_users.tolist() == [0, 1] and data.test_items.tolist() == [2, 2]
    assert data.test_negatives.tolist() == [[3, 1], [0, 1]]
    assert data.report["negatives_in_train"] == 3  # (0,1), (1,0), (1,1)
    assert data.report["test_item_among_negatives"] == 0
    assert load(tmp_path / "toy").test.nnz == 2  # prefix form, auto-detected


def test_ncf_min_rating_and_ratings_as_values(tmp_path):
    write_ncf(tmp_path)
    data = load_ncf(tmp_path / "toy.train.rating", min_rating=3, binary=False)
    assert dense(data.train) == [[5, 3, 0, 0], [4, 0, 0, 0]]
    assert dense(data.test) == [[0, 0, 4, 0], [0, 0, 0, 0]]
    assert data.report["below_min_rating"] == 2


def test_ncf_negative_file_errors(tmp_path):
    write_ncf(tmp_path, negative_line="(1;2)\t0\t1\n")
    with pytest.raises(DataFormatError, match=r"toy\.test\.negative:2: expected '\(user,item\)'"):
        load_ncf(tmp_path)
    write_ncf(tmp_path, negative_line="(1,2)\t0\n")
    with pytest.raises(DataFormatError, match=r"toy\.test\.negative:2: expected 2 negatives"):
        load_ncf(tmp_path)


@pytest.mark.parametrize(
    "line, message",
    [
        ("1\t1\t4\n", r"toy\.train\.rating:3: expected 4 fields separated by '\\t', found 3"),
        ("1\tb\t4\t5\n", r"toy\.train\.rating:3: item id 'b' is not a non-negative integer"),
        ("1\t1\tgood\t5\n", r"toy\.train\.rating:3: rating 'good' is not a finite number"),
        ("-1\t1\t4\t5\n", r"toy\.train\.rating:3: user id '-1' is not a non-negative integer"),
    ],
)
def test_ncf_malformed_rating_lines(tmp_path, line, message):
    write(tmp_path / "toy.train.rating", "0\t0\t5\t10\n0\t1\t3\t11\n" + line)
    with pytest.raises(DataFormatError, match=message):
        load_ncf(tmp_path)
    data = load_ncf(tmp_path, on_error="skip")
    assert data.report["skipped_lines"] == 1 and data.train.nnz == 2


# --- MovieLens and CSV ------------------------------------------------------------------------

def test_movielens_dat_with_double_colon(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    write(folder / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    data = load_movielens(folder)
    assert data.name == "ml-1m"
    assert data.user_ids.tolist() == [1, 2] and data.item_ids.tolist() == [1193, 661]  # first appearance
    assert dense(data.train) == [[1, 1], [1, 0]]
    assert data.train_timestamps.tolist() == [978300760, 978302109, 978298413]
    write(folder / "ratings.dat", "1::1193::5::978300760\n1::661::3\n")
    with pytest.raises(DataFormatError, match=r"ratings\.dat:2: expected 4 fields separated by '::', found 3"):
        load_movielens(folder)


def test_movielens_u_data_and_ratings_csv(tmp_path):
    write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t1\t1\n")
    data = load_movielens(tmp_path / "u.data", min_rating=2)
    assert data.train.nnz == 2 and data.report["below_min_rating"] == 1
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n")
    data = load_movielens(tmp_path / "ratings.csv", binary=False)
    assert data.train.data.tolist() == [4.0, 3.5]


def test_csv_string_ids_header_and_quotes(tmp_path):
    path = write(tmp_path / "log.csv", 'who,what,score\nu9,"item, large",2\nu1,b,5\nu9,b,4\n')
    data = load_csv(path, "who", "what", rating_col="score", binary=False)
    assert data.user_ids.tolist() == ["u9", "u1"] and data.item_ids.tolist() == ["item, large", "b"]
    assert dense(data.train) == [[2, 4], [0, 5]]
    assert data.user_index("u1") == 1
    with pytest.raises(KeyError, match="unknown user id 'nobody'"):
        data.user_index("nobody")


def test_csv_positions_without_header_tab_sniffed(tmp_path):
    path = write(tmp_path / "log.tsv", "a\tx\nb\ty\n")
    data = load_csv(path, 0, 1, has_header=False)
    assert data.user_ids.tolist() == ["a", "b"] and data.train.nnz == 2
    with pytest.raises(ValueError, match="no column named 'user'"):
        load_csv(path, "user", "item")


def test_csv_leading_zero_ids_stay_strings(tmp_path):
    path = write(tmp_path / "log.csv", "u,i\n007,1\n7,2\n")
    data = load_csv(path, "u", "i")
    assert data.user_ids.tolist() == ["007", "7"] and data.item_ids.tolist() == [1, 2]


def test_csv_dedupe_keeps_latest_and_counts(tmp_path):
    path = write(tmp_path / "log.csv", "u,i,r,t\n1,1,2,30\n1,1,5,10\n1,2,4,5\n1,1,3,20\n")
    data = load_csv(path, "u", "i", "r", "t", binary=False)
    assert data.report["duplicates"] == 2
    assert dense(data.train) == [[2, 4]]  # the t=30 rating of (1, 1)
    assert sorted(data.train_timestamps.tolist()) == [5, 30]
    summed = load_csv(path, "u", "i", "r", "t", dedupe=False)
    assert dense(summed.train) == [[3, 1]]  # occurrence counts


def test_csv_test_file_maps_ids_jointly(tmp_path):
    train = write(tmp_path / "train.csv", "u,i\nA,x\nB,y\n")
    test = write(tmp_path / "test.csv", "u,i\nB,x\nC,z\n")
    data = load_csv(train, "u", "i", test_path=test)
    assert data.user_ids.tolist() == ["A", "B", "C"] and data.item_ids.tolist() == ["x", "y", "z"]
    assert dense(data.test) == [[0, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert data.report["test_users_without_train"] == 1 and data.report["test_items_unseen_in_train"] == 1


def test_csv_bad_rating_header_only_and_options(tmp_path):
    path = write(tmp_path / "log.csv", "u,i,r\n1,2,3\n1,3,nan\n")
    with pytest.raises(DataFormatError, match=r"log\.csv:3: rating 'nan' is not a finite number"):
        load_csv(path, "u", "i", "r")
    with pytest.raises(DataFormatError, match="header line but no data"):
        load_csv(write(tmp_path / "h.csv", "u,i\n"), "u", "i")
    with pytest.raises(ValueError, match=r"min_rating \(--min-rating\) needs a rating column"):
        load_csv(path, "u", "i", min_rating=3)
    with pytest.raises(ValueError, match="on_error"):
        load_csv(path, "u", "i", on_error="ignore")
    with pytest.raises(ValueError, match="needs user_col= and item_col="):
        load(path)
    with pytest.raises(TypeError):
        load(tmp_path / "log.csv", user_col="u", item_col="i", colour="red")


def test_all_lines_malformed_is_an_error_even_when_skipping(tmp_path):
    path = write(tmp_path / "log.csv", "u,i\n1\n2\n")
    with pytest.raises(DataFormatError, match=r"no valid lines \(2 malformed"):
        load_csv(path, "u", "i", on_error="skip")


def test_parquet_without_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    with pytest.raises(ImportError, match="pip install pyarrow"):
        load_csv(tmp_path / "x.parquet", "u", "i")


def test_parquet_is_read_with_pyarrow_alone(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    stamps = pyarrow.array([1_000, 2_500, 4_000], pyarrow.timestamp("ms"))
    table = pyarrow.table({"u": ["a", "b", "a"], "i": [3, 4, 4], "t": stamps})
    parquet.write_table(table, tmp_path / "x.parquet")
    data = load_csv(tmp_path / "x.parquet", "u", "i", timestamp_col="t")
    assert data.user_ids.tolist() == ["a", "b"] and data.item_ids.tolist() == [3, 4]
    assert data.train.toarray().tolist() == [[1, 1], [0, 1]]
    assert data.train_timestamps.tolist() == [1.0, 4.0, 2.5]  # seconds, aligned with train.data
    parquet.write_table(pyarrow.table({"u": ["a", None], "i": [3, 4]}), tmp_path / "gap.parquet")
    with pytest.raises(DataFormatError, match=r"gap.parquet: data row 2: column 'u' is missing"):
        load_csv(tmp_path / "gap.parquet", "u", "i")
    with pytest.raises(DataFormatError, match=r"no column named 'user'; the file has 'u', 'i'"):
        load_csv(tmp_path / "gap.parquet", "user", "i")


def test_load_dispatch_and_synthetic(tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        load(tmp_path, format="xml")
    assert load("synthetic", n_users=50, n_items=80, interactions_per_user=10).name == "synthetic"


@pytest.mark.parametrize(
    "name, body, loader",
    [
        ("log.csv", "u,i,r\nx1,7,4.5\nx2, 9 ,3\nx1,9,1\n",
         lambda p: load_csv(p, "u", "i", "r", binary=False, on_error="skip")),
        ("log.csv", "u,i,r\n10,7,4\n12,9,3\n10,9,1\n",
         lambda p: load_csv(p, "u", "i", "r", binary=False, on_error="skip")),
        ("toy.train.rating", "0\t1\t4\t1\n2\t0\t1\t5\n", lambda p: load_ncf(p, binary=False, on_error="skip")),
        ("train.txt", "0 1 2\n3\n1 0\n", lambda p: load_lightgcn(p, on_error="skip")),
    ],
)
def test_fast_and_line_by_line_paths_agree(tmp_path, name, body, loader):
    """A bad line forces the per-line reader; the remaining lines must give what the fast path gives."""
    clean = loader(write(tmp_path / name, body))
    lines = body.splitlines(keepends=True)
    bad = "zz" + ",:\t" * 5 + "\n"
    mixed = loader(write(tmp_path / name, "".join(lines[:-1] + [bad] + lines[-1:])))
    assert mixed.report["skipped_lines"] == 1 and clean.report["skipped_lines"] == 0
    assert (mixed.train != clean.train).nnz == 0
    assert mixed.user_ids.tolist() == clean.user_ids.tolist()
    assert mixed.item_ids.tolist() == clean.item_ids.tolist()


def test_windows_line_endings(tmp_path):
    path = write(tmp_path / "log.csv", "u,i\r\na,1\r\nb,2\r\n")
    assert load_csv(path, "u", "i").user_ids.tolist() == ["a", "b"]
    (tmp_path / "train.txt").write_bytes(b"0 1\r\n1 0\r\n")
    assert load_lightgcn(tmp_path).train.nnz == 2


def test_long_numeric_ids_stay_exact(tmp_path):
    """Regression: 20-digit ids must not be squeezed through int64 (np.fromstring would wrap them)."""
    path = write(tmp_path / "log.csv", "u,i\n12345678901234567890,1\n12345678901234567891,1\n")
    assert load_csv(path, "u", "i").user_ids.tolist() == ["12345678901234567890", "12345678901234567891"]
    write(tmp_path / "train.txt", "0 12345678901234567890\n")
    with pytest.raises(DataFormatError, match=r"train\.txt:1: item id '12345678901234567890' has more than 18"):
        load_lightgcn(tmp_path)


# --- hostile text: byte-order marks, encodings, long tokens, inflated id spaces ---------------

BOM = b"\xef\xbb\xbf"


def write_bytes(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name, body", [
    ("u.data", b"1\t10\t5\t100\n2\t10\t4\t101\n"),
    ("ratings.dat", b"1::10::5::100\n2::10::4::101\n"),
    ("ratings.csv", b"userId,movieId,rating,timestamp\n1,10,5,100\n2,10,4,101\n"),
])
def test_movielens_bom_is_stripped_not_a_phantom_user(tmp_path, name, body):
    (tmp_path / "plain").mkdir()
    plain = load_movielens(write_bytes(tmp_path / "plain" / name, body))
    marked = load_movielens(write_bytes(tmp_path / name, BOM + body))
    assert marked.user_ids.tolist() == plain.user_ids.tolist() == [1, 2]
    assert dense(marked.train) == dense(plain.train)


def test_bom_is_stripped_in_lightgcn_ncf_and_csv(tmp_path):
    write_bytes(tmp_path / "train.txt", BOM + b"0 1 2\r\n1 0\r\n")
    write_bytes(tmp_path / "test.txt", BOM + b"0 0\n")
    data = load_lightgcn(tmp_path)
    assert dense(data.train) == [[0, 1, 1], [1, 0, 0]] and dense(data.test) == [[1, 0, 0], [0, 0, 0]]
    ncf = tmp_path / "ncf"
    ncf.mkdir()
    write_bytes(ncf / "d.train.rating", BOM + b"0\t1\t5\t9\n1\t0\t4\t9\n")
    write_bytes(ncf / "d.test.rating", BOM + b"0\t0\t5\t9\n")
    write_bytes(ncf / "d.test.negative", BOM + b"(0,0)\t1\n")
    assert load_ncf(ncf).test_negatives.tolist() == [[1]]
    csv = load_csv(write_bytes(tmp_path / "log.csv", BOM + b"user,item\nalice,x\n"), "user", "item")
    assert csv.user_ids.tolist() == ["alice"]


def test_non_utf8_byte_names_file_line_and_column(tmp_path):
    path = write_bytes(tmp_path / "log.csv", "user,item\nbjörn,1\n".encode() + b"ren\xe9,2\n")
    with pytest.raises(DataFormatError, match=r"log\.csv:3: byte 0xe9 at column 4 is not UTF-8"):
        load_csv(path, "user", "item")


def test_long_token_is_quoted_as_a_short_prefix(tmp_path):
    write_bytes(tmp_path / "train.txt", b"0 1\n1 " + b"x" * 1_000_000 + b"\n")
    with pytest.raises(DataFormatError) as caught:
        load_lightgcn(tmp_path)
    message = str(caught.value)
    assert "train.txt:2: item id 'xxxx" in message and "(1000000 bytes)" in message and len(message) < 200


def test_one_very_long_id_keeps_memory_near_the_file_size(tmp_path):
    import tracemalloc

    lines = [f"u{k},i{k % 50}" for k in range(20_000)] + ["u" + "z" * 200_000 + ",i1"]
    path = write(tmp_path / "log.csv", "user,item\n" + "\n".join(lines) + "\n")
    tracemalloc.start()
    data = load_csv(path, "user", "item")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert data.n_users == 20_001 and data.user_ids[-1] == "u" + "z" * 200_000
    assert data.user_index("u7") == 7
    assert peak < 40 * path.stat().st_size  # a fixed-width array would take 20001 x 200001 bytes


def test_stray_item_id_warns_with_slot_counts(tmp_path):
    write(tmp_path / "train.txt", "".join(f"{u} " + " ".join(str(i) for i in range(50)) + "\n" for u in range(3)))
    write(tmp_path / "test.txt", "0 5000\n")
    data = load_lightgcn(tmp_path)
    assert data.n_items == 5001 and data.report["items_without_train"] == 4951
    text = " ".join(data.warnings())
    assert "4951 of 5001 item slot(s) have no training interaction" in text
    assert "1 test item(s) never occur in training" in text


def test_slot_warning_not_repeated_for_test_only_items(tmp_path):
    write(tmp_path / "train.txt", "0 0 1\n1 1\n")
    write(tmp_path / "test.txt", "1 2\n")
    warnings = load_lightgcn(tmp_path).warnings()
    assert not any("item slot" in text for text in warnings) and any("never occur" in text for text in warnings)


@pytest.mark.parametrize("files, where", [
    ({"train.txt": "0 1\n1 1\n", "test.txt": "0 1\n\n1 999999999999\n"}, r"test\.txt:3: item id 999999999999"),
    ({"train.txt": "0 1\n7000000 1\n"}, r"train\.txt:2: user id 7000000"),
])
def test_lightgcn_id_space_far_beyond_the_ids_is_refused_before_allocating(tmp_path, files, where):
    import tracemalloc

    for name, text in files.items():
        write(tmp_path / name, text)
    tracemalloc.start()
    with pytest.raises(DataFormatError, match=where + r" makes \d+ \w+ slots for 2 distinct") as caught:
        load_lightgcn(tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000
    assert "max(1000000, 10 x distinct ids)" in str(caught.value) and "--format csv" in str(caught.value)


def test_ncf_id_space_rule_and_allowed_sparse_ids(tmp_path):
    write(tmp_path / "d.train.rating", "0\t1\t5\t9\n1\t2\t4\t9\n")
    write(tmp_path / "d.test.negative", "(0,3)\t2\t123456789\n")
    with pytest.raises(DataFormatError, match=r"d\.test\.negative:1: item id 123456789 makes 123456790 item slots"):
        load_ncf(tmp_path)
    write(tmp_path / "d.test.negative", "(0,3)\t2\t999999\n")  # within the 1,000,000 floor: warned, not refused
    data = load_ncf(tmp_path)
    assert data.n_items == 1_000_000 and data.report["items_without_train"] == 1_000_000 - 2


def test_test_file_is_recorded_so_a_split_request_can_be_refused(tmp_path):
    write(tmp_path / "train.txt", "0 0 1\n1 1\n")
    assert load_lightgcn(tmp_path).test_file is None
    write(tmp_path / "test.txt", "1 0\n")
    assert load_lightgcn(tmp_path).test_file == str(tmp_path / "test.txt")
