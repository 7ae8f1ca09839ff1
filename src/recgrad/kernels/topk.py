"""Fused mask-and-top-K over a block of full-ranking scores (numba), parallel over rows.

Reference and test oracle: ``recgrad.evaluation.top_k`` on the masked scores, followed by the
full-ranking rule "an id whose score is -inf becomes the padding -1". This kernel gives the same
ids and scores, bit for bit, without writing -inf into the block and without temporaries.

Per row u of ``scores`` (one user), with the user's excluded items ``mask_indices[mask_indptr[u]:
mask_indptr[u + 1]]`` (sorted ascending, a canonical CSR row):

1. A buffer of at most k (score, id) pairs is kept sorted, best first. Items are offered in
   ascending id. An item enters when its score is strictly greater than the threshold, the
   buffer's last score once the buffer is full (-inf before); it is inserted after every
   buffered item with a score >= its own. Because ids arrive in ascending order, equal scores
   end up ordered by lower id, and at the K boundary an item tied with the last kept one does
   not get in: exactly the reference rule (higher score first, ties by lower id), with no sort.
2. The whole row is read in chunks of ``_CHUNK`` = 64 scores. For each chunk one vectorised
   loop builds a 64-bit word whose bit t says "score t is not <= threshold" (above it, or NaN).
   A zero word (almost every chunk once the buffer has filled: on a random 41k-item row about
   75 of 640 chunks have a bit set for K = 20) costs only that loop; otherwise the set bits are
   visited lowest first (``trailing_zeros``), so only the passing items are looked at, one
   unpredictable branch per candidate instead of one per score.
3. Each candidate is checked again against the threshold (it may have risen within the chunk),
   then against the excluded items: a pointer walks the sorted excluded list only as far as
   the candidate's id, so excluded items cost nothing unless they would have entered. The tail
   after the last whole chunk is offered item by item the same way.
4. Scores equal to -inf never pass (they would become padding anyway); NaN is not <= anything,
   so it always becomes a candidate; an excluded NaN is skipped (the reference overwrites it
   with -inf), any other NaN flags the row and the caller raises ValueError, as the reference
   does.

Rows shorter than k (few candidates) are padded with id -1 and score -inf.

Hits: when ``test_indptr``/``test_indices`` (the rows' held-out items, canonical CSR) are given,
``hits[u, j]`` = ids[u, j] is one of them (binary search), computed in the same pass.

Threads: rows are distributed over numba's thread pool (``prange``); each row is computed by one
thread alone, so the result does not depend on the number of threads.
"""

import numba
import numpy as np
import scipy.sparse
from numba.cpython.unsafe.numbers import trailing_zeros

_CHUNK = 64  # scores per skip test: one bit each in a uint64


@numba.njit(cache=True, nogil=True, inline="always")
def _insert(buf_s, buf_i, count, k, s, j):
    """Insert (s, j) into the buffer sorted best first; equal scores keep the earlier id first."""
    pos = count if count < k else k - 1
    while pos > 0 and buf_s[pos - 1] < s:
        buf_s[pos] = buf_s[pos - 1]
        buf_i[pos] = buf_i[pos - 1]
        pos -= 1
    buf_s[pos] = s
    buf_i[pos] = j
    return count + 1 if count < k else k


@numba.njit(cache=True, nogil=True, inline="always")
def _bits_above(chunk, threshold):
    """uint64 whose bit t is set when chunk[t] is not <= threshold (above it, or NaN).

    A loop over a chunk view with a constant trip count and an OR of shifted bits: the compiler
    turns it into vector compares (it would not vectorise an early-exit or a bool reduction).
    """
    bits = np.uint64(0)
    for t in range(_CHUNK):
        bits |= np.uint64(not (chunk[t] <= threshold)) << np.uint64(t)
    return bits


@numba.njit(cache=True, nogil=True, inline="always")
def _offer(row, t, excl, e, e_hi, k, buf_s, buf_i, count, threshold):
    """Offer item t to the buffer unless excluded; returns (count, threshold, e, nan seen).

    e indexes the sorted excluded ids excl[e:e_hi]; it only moves forward, as t does.
    """
    s = row[t]
    nan = False
    if not (s <= threshold):  # checked again: the threshold may have risen within the chunk
        while e < e_hi and excl[e] < t:
            e += 1
        if not (e < e_hi and excl[e] == t):
            if s != s:
                nan = True
            else:
                count = _insert(buf_s, buf_i, count, k, s, t)
                if count == k:
                    threshold = buf_s[k - 1]
    return count, threshold, e, nan


@numba.njit(cache=True, nogil=True)
def _row_top_k(row, excl, e_lo, e_hi, k, buf_s, buf_i):
    """Top-k of row without the sorted excluded ids excl[e_lo:e_hi]; returns (count, nan seen)."""
    n = row.size
    count = 0
    buf_s[0] = -np.inf
    threshold = buf_s[0]  # -inf in the scores' dtype, so float32 compares stay float32
    nan = False
    e = e_lo
    whole = n - n % _CHUNK
    for j in range(0, whole, _CHUNK):
        bits = _bits_above(row[j : j + _CHUNK], threshold)
        while bits:  # the candidates of this chunk, lowest id first
            t = j + trailing_zeros(bits)
            bits &= bits - np.uint64(1)
            count, threshold, e, seen = _offer(row, t, excl, e, e_hi, k, buf_s, buf_i, count, threshold)
            nan |= seen
    for t in range(whole, n):
        count, threshold, e, seen = _offer(row, t, excl, e, e_hi, k, buf_s, buf_i, count, threshold)
        nan |= seen
    return count, nan


@numba.njit(cache=True, nogil=True)
def _is_member(indices, lo, hi, item):
    """Binary search for item in the sorted indices[lo:hi]."""
    end = hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < item:
            lo = mid + 1
        else:
            hi = mid
    return lo < end and indices[lo] == item


@numba.njit(cache=True, nogil=True, parallel=True)
def masked_top_k(scores, k, mask_indptr, mask_indices, test_indptr, test_indices, ids, top, hits, nan_rows):
    """Fill ids/top (n_rows, k) with each row's top-k outside its mask; hits when test_indptr.size.

    scores: (n_rows, n_items) float32 or float64, C-contiguous. mask_indptr: (n_rows + 1,)
    int64 and mask_indices: int64 sorted per row (an empty mask: indptr of zeros). test_indptr:
    (n_rows + 1,) or empty to skip hits. nan_rows[u] is set to 1 when row u holds a NaN outside
    its mask. ids/top/hits are written completely (padding -1 / -inf / False).
    """
    n_rows, n_items = scores.shape
    with_hits = test_indptr.size > 0
    for u in numba.prange(n_rows):
        buf_s = top[u]
        buf_i = ids[u]
        count, nan = _row_top_k(
            scores[u], mask_indices, mask_indptr[u], mask_indptr[u + 1], k, buf_s, buf_i
        )
        nan_rows[u] = nan
        for j in range(count, k):
            buf_s[j] = -np.inf
            buf_i[j] = -1
        if with_hits:
            t_lo = test_indptr[u]
            t_hi = test_indptr[u + 1]
            for j in range(k):
                hits[u, j] = buf_i[j] >= 0 and _is_member(test_indices, t_lo, t_hi, buf_i[j])


def top_k_masked(scores, k, mask=None, relevant=None):
    """Per-row top-k of ``scores`` outside ``mask``: returns ``(ids, top_scores, hits)``.

    scores: (n_rows, n_items) float32 or float64 array (a non-contiguous one is copied first).
    k: int >= 1. mask: None or a scipy sparse matrix with n_rows rows whose stored entries are
    the items to skip in each row. relevant: None or a scipy sparse matrix with n_rows rows of
    held-out items; then ``hits`` is the bool (n_rows, k) array "ids[u, j] is a stored entry of
    relevant's row u", else ``hits`` is None.

    ids: int64 (n_rows, k), best first; top_scores: the matching scores in the input dtype.
    Equal to ``evaluation.top_k`` on the scores with the masked entries set to -inf, followed
    by ``ids[top_scores == -inf] = -1``: a row with fewer than k items scoring above -inf outside
    its mask ends with padding (id -1, score -inf). Raises ValueError when a score outside the
    mask is NaN.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not isinstance(scores, np.ndarray) or scores.dtype not in (np.float32, np.float64) or scores.ndim != 2:
        raise TypeError(
            "scores must be a 2-D float32 or float64 numpy array, got "
            f"{getattr(scores, 'dtype', type(scores).__name__)} of shape {np.shape(scores)}"
        )
    n_rows = scores.shape[0]
    k = int(k)
    scores = np.ascontiguousarray(scores)
    ids = np.empty((n_rows, k), np.int64)
    top = np.empty((n_rows, k), scores.dtype)
    no_rows = np.zeros(0, np.int64)
    if mask is None:
        mask_indptr, mask_indices = np.zeros(n_rows + 1, np.int64), no_rows
    else:
        mask_indptr, mask_indices = _csr_arrays(mask, n_rows, "mask")
    if relevant is None:
        test_indptr, test_indices = no_rows, no_rows
        hits = np.empty((0, k), np.bool_)
    else:
        test_indptr, test_indices = _csr_arrays(relevant, n_rows, "relevant")
        hits = np.empty((n_rows, k), np.bool_)
    nan_rows = np.zeros(n_rows, np.uint8)
    masked_top_k(scores, k, mask_indptr, mask_indices, test_indptr, test_indices, ids, top, hits, nan_rows)
    if nan_rows.any():
        raise ValueError(f"scores contain NaN outside the mask (row {int(np.argmax(nan_rows))})")
    return ids, top, (hits if relevant is not None else None)


def _csr_arrays(matrix, n_rows, name):
    """(indptr, indices) as int64 of a canonical CSR copy of a sparse matrix with n_rows rows."""
    if not scipy.sparse.issparse(matrix):
        raise TypeError(f"{name} must be a scipy sparse matrix with one row per score row")
    if matrix.shape[0] != n_rows:
        raise ValueError(f"{name} has {matrix.shape[0]} rows but scores has {n_rows}")
    csr = scipy.sparse.csr_matrix(matrix)
    if not csr.has_canonical_format:  # sorted, duplicate-free indices: the scan relies on it
        csr = csr.copy()
        csr.sum_duplicates()
    return csr.indptr.astype(np.int64, copy=False), csr.indices.astype(np.int64, copy=False)
