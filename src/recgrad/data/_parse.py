"""Reading delimited text into column arrays: a vectorised fast path, and a per-line path for errors.

The fast path reads the whole file, checks the field count of every line with array arithmetic on the
separator positions, splits once and converts whole columns with NumPy. If anything in it fails, the
per-line path reads the file again, which either raises `DataFormatError` at the first bad line
("path:LINE: what was wrong", 1-based physical line numbers) or, with `on_error="skip"`, drops and
counts the bad lines. Blank lines are ignored by both paths.

Column kinds: "index" is a non-negative integer (ids that are already internal indices), "id" is any
non-empty string (raw ids, mapped later), "float" is a finite number (ratings, timestamps).

Every file is text in UTF-8: a byte-order mark at its start is dropped, and a byte sequence that is
not UTF-8 is an error naming the line. Memory stays a small multiple of the file size: a column
whose fixed-width byte array would be mostly padding (one very long token among many short ones)
is kept as an object array instead, and an error message quotes at most `SHOWN_BYTES` of a token.
"""

import codecs
import csv
import math
import os
from pathlib import Path

import numpy as np

from recgrad.data.dataset import DataFormatError

ON_ERROR = ("raise", "skip")
MAX_INT_DIGITS = 18  # every integer of up to 18 digits fits in int64
SHOWN_BYTES = 40  # an error message quotes at most this much of a token
UTF8_BOM = codecs.BOM_UTF8
_EXAMPLES_KEPT = 5
_DECODE_CHUNK = 1 << 20
_PADDING_FACTOR = 8  # a fixed-width token array may be at most this many times the bytes it holds


def check_on_error(on_error):
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")


def read_bytes(path):
    """File content with line endings normalised to b'\\n'; FileNotFoundError naming a missing path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, expected a file")
    data = path.read_bytes()
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not data.strip():
        raise DataFormatError(f"{path}: file is empty")
    check_utf8(path, data)
    return data


def check_utf8(path, data, first_lineno=1):
    """DataFormatError naming the line of the first byte sequence of `data` that is not UTF-8.

    `first_lineno` is the line number of `data`'s first line (a chunk of a larger file). Decoded in
    chunks with an incremental decoder, so the check holds no decoded copy of the file.
    """
    if data.isascii():
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    for start in range(0, len(data), _DECODE_CHUNK):
        end = start + _DECODE_CHUNK
        try:
            decoder.decode(data[start:end], final=end >= len(data))
        except UnicodeDecodeError as error:
            # error.object is the chunk after the bytes the decoder held back from the previous one
            offset = start + error.start - (len(error.object) - (min(end, len(data)) - start))
            line = first_lineno + data.count(b"\n", 0, offset)
            column = offset - data.rfind(b"\n", 0, offset)
            raise DataFormatError(
                f"{path}:{line}: byte 0x{data[offset]:02x} at column {column} is not UTF-8; save the file as UTF-8"
            ) from None


def line_chunks(path, chunk_bytes=None):
    """Yield (line number of the first line, bytes) of whole lines of a UTF-8 text file.

    The file is read `chunk_bytes` at a time (None: in one piece); each chunk ends at a line end,
    so a line is never split, and memory stays about `chunk_bytes` plus the longest line. Line ends
    are normalised to b'\\n' and a leading byte-order mark is dropped, so the line numbers are those
    of `read_bytes`. A byte sequence that is not UTF-8 raises DataFormatError naming its line; a
    missing path raises FileNotFoundError.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, expected a file")
    lineno, carry, at_start = 1, b"", True
    with open(path, "rb") as handle:
        if chunk_bytes is not None:  # read() allocates the size asked for: no more than the file holds
            chunk_bytes = max(1, min(chunk_bytes, os.fstat(handle.fileno()).st_size + 1))
        while True:
            block = handle.read(-1 if chunk_bytes is None else chunk_bytes)
            at_end = chunk_bytes is None or not block
            data = carry + block
            if at_start and (len(data) >= len(UTF8_BOM) or at_end):
                at_start = False
                if data.startswith(UTF8_BOM):
                    data = data[len(UTF8_BOM):]
            if not at_end:
                held = 1 if data.endswith(b"\r") else 0  # its b"\n" may come with the next block
                limit = len(data) - held
                cut = max(data.rfind(b"\n", 0, limit), data.rfind(b"\r", 0, limit)) + 1
                if cut == 0 or at_start:
                    carry = data  # no whole line yet
                    continue
                data, carry = data[:cut], data[cut:]
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            check_utf8(path, data, lineno)
            yield lineno, data
            lineno += data.count(b"\n")
            if at_end:
                return


class Skipped:
    """Count and first few messages of the lines dropped under on_error='skip'."""

    def __init__(self):
        self.count = 0
        self.examples = []

    def add(self, message):
        self.count += 1
        if len(self.examples) < _EXAMPLES_KEPT:
            self.examples.append(message)


def shown(token):
    """A token quoted for an error message: at most SHOWN_BYTES of it, and its length when cut."""
    if isinstance(token, str):
        token = token.encode("utf-8", errors="replace")
    if len(token) <= SHOWN_BYTES:
        return repr(token.decode("utf-8", errors="replace"))
    return f"{token[:SHOWN_BYTES].decode('utf-8', errors='ignore')!r}... ({len(token)} bytes)"


def check_token(token, kind, label):
    """Return (value, None) or (None, what was wrong) for one field."""
    if kind == "index":
        if not token.isdigit():
            return None, f"{label} {shown(token)} is not a non-negative integer"
        if len(token) > MAX_INT_DIGITS:
            return None, f"{label} {shown(token)} has more than {MAX_INT_DIGITS} digits"
        return int(token), None
    if kind == "float":
        try:
            value = float(token)
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return value, None
        return None, f"{label} {shown(token)} is not a finite number"
    if token:
        return token, None
    return None, f"{label} is empty"


def _convert_column(tokens, kind):
    """Whole-column conversion for the fast path; None when any token is invalid."""
    if kind == "id":
        return None if (tokens == b"").any() else tokens
    if kind == "index":
        if not (np.char.isdigit(tokens) & (np.char.str_len(tokens) <= MAX_INT_DIGITS)).all():
            return None
        try:
            return tokens.astype(np.int64)
        except (ValueError, OverflowError):
            return None
    try:
        values = tokens.astype(np.float64)
    except (ValueError, OverflowError):
        return None
    return values if np.isfinite(values).all() else None


def fast_table(body, sep, ncols, wanted):
    """Vectorised parse of `body` (bytes, no header) into the columns `wanted` = [(index, kind)].

    A body of plain non-negative integers (no leading zeros) is parsed by `np.fromstring` in one go,
    "id" columns then come back as int64; anything else is split into byte tokens.
    Returns a list of arrays, or None when any line is irregular or any value invalid.
    """
    if sep == b"," and b'"' in body:
        return None
    body = body.strip(b"\n")
    if b"\n\n" in body:
        body = b"\n".join(line for line in body.split(b"\n") if line)
    buf = np.frombuffer(body, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    n_lines = len(newlines) + 1
    separators = np.flatnonzero(buf == sep[0])
    if len(separators) != (ncols - 1) * n_lines:
        return None
    before = np.searchsorted(separators, newlines)
    per_line = np.diff(np.concatenate(([0], before, [len(separators)])))
    if (per_line != ncols - 1).any():
        return None
    plain_integers = not body.translate(None, b"0123456789\n " + sep)
    if plain_integers and longest_digit_run(buf) <= MAX_INT_DIGITS and not _has_leading_zero(buf, sep[0]):
        numbers = np.fromstring(body if sep == b"\t" else body.replace(sep, b" "), dtype=np.int64, sep=" ")
        if numbers.size == n_lines * ncols:
            numbers = numbers.reshape(n_lines, ncols)
            return [numbers[:, index].astype(np.float64) if kind == "float" else numbers[:, index]
                    for index, kind in wanted]
    bounds = np.concatenate(([-1], np.sort(np.concatenate((separators, newlines))), [len(buf)]))
    if (np.diff(bounds).max() - 1) * len(bounds) > _PADDING_FACTOR * len(buf) + 4096:
        return None  # a fixed-width token array would be mostly padding: the per-line path keeps objects
    tokens = np.array(body.replace(b"\n", sep).split(sep)).reshape(n_lines, ncols)
    if sep != b" " and (b" " in body or b"\t" in body and sep != b"\t"):
        tokens = np.char.strip(tokens)
    columns = []
    for index, kind in wanted:
        column = _convert_column(tokens[:, index], kind)
        if column is None:
            return None
        columns.append(column)
    return columns


def is_canonical_integer(token):
    """A byte string that is a non-negative integer of at most MAX_INT_DIGITS digits, no leading zero."""
    return (token.isdigit() and len(token) <= MAX_INT_DIGITS and (len(token) == 1 or not token.startswith(b"0")))


def longest_digit_run(buf):
    """Length of the longest run of ASCII digits in a uint8 buffer."""
    non_digit = np.flatnonzero((buf < ord("0")) | (buf > ord("9")))
    return int(np.diff(np.concatenate(([-1], non_digit, [len(buf)]))).max()) - 1


def _has_leading_zero(buf, sep_byte):
    """True when some field of an all-digit body starts with '0' followed by another digit."""
    zero = np.flatnonzero(buf[:-1] == ord("0"))
    if len(zero) == 0:
        return False
    previous = np.where(zero > 0, buf[np.maximum(zero - 1, 0)], 10)
    at_field_start = (previous == sep_byte) | (previous == 10) | (previous == 32)
    next_is_digit = (buf[zero + 1] >= ord("0")) & (buf[zero + 1] <= ord("9"))
    return bool((at_field_start & next_is_digit).any())


def split_fields(line, sep):
    if sep == b"," and b'"' in line:
        return [field.encode() for field in next(csv.reader([line.decode("utf-8", errors="replace")]))]
    return line.split(sep)


def slow_table(path, body, first_lineno, sep, ncols, wanted, labels, on_error, skipped, shown_sep):
    """Per-line parse with exact line numbers; same result as `fast_table` on valid input.

    Returns None when no line of `body` is valid (every one skipped under on_error="skip").
    """
    values = [[] for _ in wanted]
    for offset, line in enumerate(body.split(b"\n")):
        if not line.strip():
            continue
        fields = split_fields(line, sep)
        problem = None
        row = []
        if len(fields) != ncols:
            problem = f"expected {ncols} fields separated by {shown_sep!r}, found {len(fields)}"
        else:
            for (index, kind), label in zip(wanted, labels):
                value, problem = check_token(fields[index].strip(), kind, label)
                if problem:
                    break
                row.append(value)
        if problem:
            message = f"{path}:{first_lineno + offset}: {problem}"
            if on_error == "raise":
                raise DataFormatError(message)
            skipped.add(message)
            continue
        for column, value in zip(values, row):
            column.append(value)
    if not values[0]:
        return None
    dtypes = {"index": np.int64, "float": np.float64}
    return [bytes_column(column) if kind == "id" else np.array(column, dtype=dtypes[kind])
            for column, (_, kind) in zip(values, wanted)]


def bytes_column(tokens):
    """A list of byte strings as a fixed-width bytes array, or as an object array when the width of
    the longest would make the fixed-width array more than _PADDING_FACTOR times their bytes."""
    longest = max(map(len, tokens))
    if longest * len(tokens) > _PADDING_FACTOR * sum(map(len, tokens)) + 4096:
        column = np.empty(len(tokens), dtype=object)
        column[:] = tokens
        return column
    return np.array(tokens)


def sniff_separator(path, line):
    for sep in (b"\t", b"::", b","):
        if sep in line:
            return sep
    raise DataFormatError(
        f"{path}: cannot tell the separator (no tab, '::' or comma on the first line); pass sep= (--sep)"
    )


def read_table(path, columns, sep=None, has_header=False, on_error="raise", skipped=None):
    """Read selected columns of a delimited file.

    Args:
        path: file path.
        columns: list of (selector, kind, label); selector is a header name (needs has_header) or a
            0-based column position.
        sep: field separator (str or bytes), None to sniff tab / '::' / comma from the first line.
        has_header: the first non-blank line holds column names (it is line 1 for error messages).
        on_error: "raise" or "skip".
        skipped: a `Skipped` accumulator shared across files.

    Returns:
        list of arrays, one per requested column (int64, float64 or bytes ids).
    """
    (columns_read,) = table_chunks(path, columns, sep, has_header, on_error, skipped)
    return columns_read


def table_chunks(path, columns, sep=None, has_header=False, on_error="raise", skipped=None, chunk_bytes=None):
    """`read_table` a chunk of lines at a time: yields the requested columns of each chunk.

    `chunk_bytes` (None: the whole file, one chunk) bounds the text held at once (`line_chunks`).
    An "id" column may come back as int64 from one chunk and as bytes from another (a chunk of plain
    integers takes `np.fromstring`); both spell the same ids. Errors are those of `read_table`,
    with the file's line numbers.
    """
    check_on_error(on_error)
    skipped = Skipped() if skipped is None else skipped
    layout = None
    seen_data = seen_valid = False
    for first_lineno, body in line_chunks(path, chunk_bytes):
        if layout is None:
            if not body.strip():
                continue
            stripped = body.lstrip(b"\n")
            first_lineno += len(body) - len(stripped)
            first_line, _, rest = stripped.partition(b"\n")
            body = rest if has_header else stripped
            first_lineno += 1 if has_header else 0
            layout = _table_layout(path, first_line, columns, sep, has_header)
        table_sep, ncols, wanted, shown_sep = layout
        if table_sep != shown_sep.encode():
            if b"\t" in body:
                raise DataFormatError(f"{path}: separator {shown_sep!r} given but the file also contains tabs")
            body = body.replace(shown_sep.encode(), b"\t")
        if not body.strip():
            continue
        seen_data = True
        labels = [label for _, _, label in columns]
        result = fast_table(body, table_sep, ncols, wanted)
        if result is None:
            result = slow_table(path, body, first_lineno, table_sep, ncols, wanted, labels, on_error, skipped,
                                shown_sep)
        if result is not None:
            seen_valid = True
            yield result
    if layout is None:
        raise DataFormatError(f"{path}: file is empty")
    if not seen_data and has_header:
        raise DataFormatError(f"{path}: has a header line but no data lines")
    if not seen_valid:
        raise DataFormatError(f"{path}: no valid lines ({skipped.count} malformed line(s) skipped)")


def _table_layout(path, first_line, columns, sep, has_header):
    """(separator as read, number of fields, [(position, kind)], separator as given) from the first line."""
    sep = sniff_separator(path, first_line) if sep is None else (sep.encode() if isinstance(sep, str) else sep)
    shown_sep = sep.decode()
    if len(sep) > 1:
        if b"\t" in first_line:
            raise DataFormatError(f"{path}: separator {shown_sep!r} given but the file also contains tabs")
        first_line = first_line.replace(sep, b"\t")
        sep = b"\t"
    if has_header:
        names = [field.decode("utf-8", errors="replace").strip().strip('"') for field in split_fields(first_line, sep)]
        ncols = len(names)
    else:
        names = None
        ncols = len(split_fields(first_line, sep))
    wanted = [(_resolve(path, selector, names, ncols), kind) for selector, kind, _ in columns]
    return sep, ncols, wanted, shown_sep


def _resolve(path, selector, names, ncols):
    if isinstance(selector, str):
        if names is None:
            raise ValueError(f"column {selector!r} is a name but {path} is read without a header; pass a position")
        if selector not in names:
            listed = ", ".join(shown(name) for name in names[:10]) + (", ..." if len(names) > 10 else "")
            raise DataFormatError(f"{path}: no column named {shown(selector)}; the header has {listed}")
        return names.index(selector)
    if not 0 <= selector < ncols:
        raise DataFormatError(
            f"{path}: column position {selector} out of range, the first line has {ncols} field(s)"
        )
    return selector


def read_adjacency(path, on_error="raise", skipped=None):
    """Read a LightGCN/NGCF file: each line `user item item ...`, whitespace separated.

    A line with a user and no items is allowed (the user exists but has no interactions there).
    Returns (users per interaction, items, every user that has a line), int64 arrays.
    """
    (arrays,) = adjacency_chunks(path, on_error, skipped)
    return arrays


def adjacency_chunks(path, on_error="raise", skipped=None, chunk_bytes=None):
    """`read_adjacency` a chunk of lines at a time (`line_chunks`; None: the whole file as one chunk)."""
    check_on_error(on_error)
    skipped = Skipped() if skipped is None else skipped
    seen_data = seen_valid = False
    for first_lineno, data in line_chunks(path, chunk_bytes):
        if not data.strip():
            continue
        seen_data = True
        arrays = _parse_adjacency(path, data, first_lineno, on_error, skipped)
        if len(arrays[2]):
            seen_valid = True
            yield arrays
    if not seen_data:
        raise DataFormatError(f"{path}: file is empty")
    if not seen_valid:
        raise DataFormatError(f"{path}: no valid lines ({skipped.count} malformed line(s) skipped)")


def _parse_adjacency(path, data, first_lineno, on_error, skipped):
    lines = data.split(b"\n")
    buf = np.frombuffer(data, dtype=np.uint8)
    if not data.translate(None, b"0123456789 \t\n") and longest_digit_run(buf) <= MAX_INT_DIGITS:
        counts = np.fromiter((len(line.split()) for line in lines), dtype=np.int64, count=len(lines))
        flat = np.fromstring(data, dtype=np.int64, sep=" ")
        if len(flat) == counts.sum():
            counts = counts[counts > 0]
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
            line_users = flat[starts]
            is_item = np.ones(len(flat), dtype=bool)
            is_item[starts] = False
            return np.repeat(line_users, counts - 1), flat[is_item], line_users
    users, items, line_users = [], [], []
    for offset, line in enumerate(lines):
        tokens = line.split()
        if not tokens:
            continue
        parsed = []
        problem = None
        for position, token in enumerate(tokens):
            value, problem = check_token(token, "index", "user id" if position == 0 else "item id")
            if problem:
                break
            parsed.append(value)
        if problem:
            message = f"{path}:{first_lineno + offset}: {problem}"
            if on_error == "raise":
                raise DataFormatError(message)
            skipped.add(message)
            continue
        line_users.append(parsed[0])
        users.extend([parsed[0]] * (len(parsed) - 1))
        items.extend(parsed[1:])
    return np.array(users, np.int64), np.array(items, np.int64), np.array(line_users, np.int64)


def read_negatives(path, on_error="raise", skipped=None):
    """Read an NCF `*.test.negative` file: each line `(user,item)\\tneg\\tneg...`.

    Every line must list as many negatives as the first valid line. Returns (users, items,
    negatives) with negatives an int64 array of shape (n_lines, n_negatives).
    """
    check_on_error(on_error)
    skipped = Skipped() if skipped is None else skipped
    data = read_bytes(path)
    flat = data.translate(None, b"()").replace(b",", b"\t")
    first_line = flat.lstrip(b"\n").partition(b"\n")[0]
    ncols = len(first_line.split(b"\t"))
    if ncols >= 3 and data.lstrip(b"\n").startswith(b"("):
        columns = fast_table(flat, b"\t", ncols, [(k, "index") for k in range(ncols)])
        if columns is not None and data.count(b"(") == len(columns[0]):
            table = np.column_stack(columns)
            return table[:, 0], table[:, 1], table[:, 2:]
    users, items, negatives = [], [], []
    n_negatives = None
    for offset, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        key, *rest = line.split(b"\t")
        problem = None
        inner = key.strip()
        parts = inner[1:-1].split(b",") if inner.startswith(b"(") and inner.endswith(b")") else []
        if len(parts) != 2:
            problem = f"expected '(user,item)' as the first field, found {shown(key)}"
        else:
            (user, problem) = check_token(parts[0].strip(), "index", "user id")
            if not problem:
                (item, problem) = check_token(parts[1].strip(), "index", "item id")
        row = []
        if not problem and n_negatives is not None and len(rest) != n_negatives:
            problem = f"expected {n_negatives} negatives as on the first line, found {len(rest)}"
        if not problem:
            for token in rest:
                value, problem = check_token(token.strip(), "index", "negative item id")
                if problem:
                    break
                row.append(value)
        if not problem and not row:
            problem = "no negatives after the (user,item) key"
        if problem:
            message = f"{path}:{offset + 1}: {problem}"
            if on_error == "raise":
                raise DataFormatError(message)
            skipped.add(message)
            continue
        n_negatives = len(row)
        users.append(user)
        items.append(item)
        negatives.append(row)
    if not users:
        raise DataFormatError(f"{path}: no valid lines ({skipped.count} malformed line(s) skipped)")
    return np.array(users, np.int64), np.array(items, np.int64), np.array(negatives, np.int64)
