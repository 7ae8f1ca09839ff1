"""Generated hostile files through every loader: a Dataset or a DataFormatError, nothing else.

Files are built from lines of tokens (valid ids, huge or negative numbers, very long tokens, random
and non-UTF-8 bytes) with wrong field counts, mixed line ends (\\n, \\r\\n, \\r) and byte-order
marks, or are random bytes. Each load must return a Dataset or raise `DataFormatError` with one
line naming the file, and its peak memory (tracemalloc) must stay within a small multiple of the
file size plus the catalogue the ids declare (which the id-space rule bounds).
"""

import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recgrad.data import DataFormatError, Dataset, load_csv, load_lightgcn, load_movielens, load_ncf

FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

TOKENS = st.one_of(
    st.integers(0, 40).map(lambda n: str(n).encode()),  # mostly valid small ids
    st.integers(0, 40).map(lambda n: str(n).encode()),
    st.integers(0, 40).map(lambda n: str(n).encode()),
    st.integers(-10**30, 10**30).map(lambda n: str(n).encode()),  # huge and negative
    st.sampled_from([b"999999999999", b"4000", b"007", b"1e3", b"nan", b"inf", b"-0", b"", b" ", b'"a,b"']),
    st.integers(1000, 20_000).map(lambda n: b"x" * n),  # very long tokens
    st.binary(min_size=1, max_size=8),  # anything, including non-UTF-8 bytes and separators
    st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", "é".encode(), b"\x00", b"\xef\xbb\xbf"]),
)
LINE_ENDS = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def text_file(draw, separator, fields):
    """Bytes of lines of `fields` tokens (sometimes more or fewer) joined by `separator`, or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    lines = []
    for _ in range(draw(st.integers(1, 30))):
        count = fields if draw(st.integers(0, 4)) else draw(st.integers(0, fields + 3))
        tokens = [draw(TOKENS) if draw(st.integers(0, 5)) == 0 else str(draw(st.integers(0, 40))).encode()
                  for _ in range(count)]
        lines.append(separator.join(tokens) + draw(LINE_ENDS))
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    return bom + b"".join(lines)


def assert_dataset_or_one_line_error(load, paths):
    """Run `load()`; a Dataset or a one-line DataFormatError naming a file; memory bounded."""
    size = sum(path.stat().st_size for path in paths if path.exists())
    try:
        load()  # a first call pays for lazy imports and caches, which are no cost of this file
    except DataFormatError:
        pass
    tracemalloc.start()
    try:
        result = load()
    except DataFormatError as error:
        message = str(error)
        assert "\n" not in message and len(message) < 600, message[:1000]
        assert any(str(path) in message for path in paths), message
        return None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        slots = locals().get("result")
        catalogue = 0 if not isinstance(slots, Dataset) else slots.n_users + slots.n_items
        assert peak < 64 * size + 64 * catalogue + (1 << 19), (peak, size, catalogue)
    assert isinstance(result, Dataset)
    assert result.train.shape == (result.n_users, result.n_items)
    assert np.isfinite(result.train.data).all()
    return result


@FUZZ
@given(train=text_file(b" ", 4), test=st.none() | text_file(b" ", 3))
def test_fuzz_lightgcn(train, test):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "train.txt").write_bytes(train)
        paths = [folder / "train.txt"]
        if test is not None:
            (folder / "test.txt").write_bytes(test)
            paths.append(folder / "test.txt")
        data = assert_dataset_or_one_line_error(lambda: load_lightgcn(folder), paths)
        if data is not None and not train.startswith(b"\xef\xbb\xbf"):
            assert assert_dataset_or_one_line_error(lambda: load_lightgcn(folder, on_error="skip"), paths)


@FUZZ
@given(user_list=text_file(b" ", 2), train=text_file(b" ", 3))
def test_fuzz_lightgcn_id_lists(user_list, train):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "train.txt").write_bytes(train)
        (folder / "user_list.txt").write_bytes(b"org_id remap_id\n" + user_list)
        assert_dataset_or_one_line_error(lambda: load_lightgcn(folder), [folder / "train.txt",
                                                                         folder / "user_list.txt"])


@st.composite
def negative_file(draw):
    lines = []
    for _ in range(draw(st.integers(1, 20))):
        key = b"(" + draw(TOKENS) + b"," + draw(TOKENS) + b")" if draw(st.integers(0, 5)) == 0 else \
            f"({draw(st.integers(0, 40))},{draw(st.integers(0, 40))})".encode()
        negatives = [draw(TOKENS) if draw(st.integers(0, 8)) == 0 else str(draw(st.integers(0, 40))).encode()
                     for _ in range(draw(st.sampled_from([3, 3, 3, 0, 2, 5])))]
        lines.append(b"\t".join([key, *negatives]) + draw(LINE_ENDS))
    return (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + b"".join(lines)


@FUZZ
@given(train=text_file(b"\t", 4), test=st.none() | text_file(b"\t", 4), negatives=st.none() | negative_file())
def test_fuzz_ncf(train, test, negatives):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        files = {"d.train.rating": train, "d.test.rating": test, "d.test.negative": negatives}
        paths = []
        for name, content in files.items():
            if content is not None:
                (folder / name).write_bytes(content)
                paths.append(folder / name)
        assert_dataset_or_one_line_error(lambda: load_ncf(folder), paths)


@FUZZ
@given(name_sep=st.sampled_from([("u.data", b"\t"), ("ratings.dat", b"::"), ("ratings.csv", b",")]),
       data=st.data())
def test_fuzz_movielens(name_sep, data):
    name, separator = name_sep
    body = data.draw(text_file(separator, 4))
    if name == "ratings.csv" and data.draw(st.booleans()):
        body = b"userId,movieId,rating,timestamp\n" + body
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(body)
        assert_dataset_or_one_line_error(lambda: load_movielens(path, min_rating=data.draw(st.sampled_from([None, 3]))),
                                         [path])


@FUZZ
@given(separator=st.sampled_from([b",", b"\t", b";"]), header=st.booleans(), data=st.data())
def test_fuzz_csv(separator, header, data):
    body = data.draw(text_file(separator, 3))
    if header:
        body = separator.join([b"user", b"item", b"rating"]) + data.draw(LINE_ENDS) + body
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.csv"
        path.write_bytes(body)
        columns = ("user", "item", "rating") if header else (0, 1, 2)
        sep = None if separator != b";" else ";"
        load = lambda: load_csv(path, *columns, sep=sep, has_header=header,  # noqa: E731
                                on_error=data.draw(st.sampled_from(["raise", "skip"])))
        assert_dataset_or_one_line_error(load, [path])


@pytest.mark.parametrize("content", [b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n\r\n", b"\x00\x00", b"\xff\xfe1 2\n"])
def test_degenerate_files(tmp_path, content):
    (tmp_path / "train.txt").write_bytes(content)
    assert_dataset_or_one_line_error(lambda: load_lightgcn(tmp_path), [tmp_path / "train.txt"])


def outcome(load):
    """The train matrix as a dense list and the original ids, or the error message without its path."""
    try:
        data = load()
    except DataFormatError as error:
        return str(error).split(":", 1)[-1]
    return data.train.toarray().tolist(), data.user_ids.tolist(), data.item_ids.tolist()


@FUZZ
@given(body=text_file(b",", 2), end=LINE_ENDS)
def test_fuzz_a_bom_changes_nothing(body, end):
    body = body.removeprefix(b"\xef\xbb\xbf")
    with tempfile.TemporaryDirectory() as folder:
        plain, marked = Path(folder) / "plain.csv", Path(folder) / "marked.csv"
        plain.write_bytes(b"user,item" + end + body)
        marked.write_bytes(b"\xef\xbb\xbfuser,item" + end + body)
        assert outcome(lambda: load_csv(marked, "user", "item")) == outcome(lambda: load_csv(plain, "user", "item"))
        plain.write_bytes(body.replace(b",", b" "))
        marked.write_bytes(b"\xef\xbb\xbf" + body.replace(b",", b" "))
        assert outcome(lambda: load_lightgcn(marked)) == outcome(lambda: load_lightgcn(plain))


@FUZZ
@given(lines=st.integers(20, 300), length=st.integers(2_000, 40_000), row=st.integers(0, 299), column=st.integers(0, 2),
       separator=st.sampled_from([b",", b"\t"]))
def test_fuzz_one_long_token_among_regular_lines(lines, length, row, column, separator):
    """Every line well-formed but one field very long: the fixed-width fast path would be all padding."""
    table = [[str(k % 17).encode(), str(k % 13).encode(), b"4"] for k in range(lines)]
    table[row % lines][column] = b"7" * length if column == 2 else b"u" * length
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.csv"
        path.write_bytes(b"\n".join(separator.join(fields) for fields in table) + b"\n")
        assert_dataset_or_one_line_error(lambda: load_csv(path, 0, 1, 2, has_header=False), [path])
