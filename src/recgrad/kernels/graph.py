"""Graph propagation (numba): the mean of K sparse-matrix powers applied to a dense table.

    out = 1/(K+1) * sum_{k=0..K} A^k X        A (n, n) CSR (indptr, indices, data), X (n, d)

Reference and test oracle: ``recgrad.models.lightgcn.propagate`` with engine "numpy" (K scipy
products ``A @ E``). Each layer is one pass over the rows of A, parallel over rows (``prange``):
row r of the next layer is sum_p data[p] * E[indices[p]], added into the running sum in the same
pass; the layers are sequential. Every row is computed by one thread alone, in the order of its
stored entries, so the result does not depend on the number of threads.
"""

import numba
import numpy as np


@numba.njit(parallel=True, cache=True, nogil=True)
def _layer(indptr, indices, data, current, following, total):
    """following = A @ current and total += following, one row per iteration."""
    dim = current.shape[1]
    for row in numba.prange(current.shape[0]):
        for d in range(dim):
            following[row, d] = 0.0
        for p in range(indptr[row], indptr[row + 1]):
            column, weight = indices[p], data[p]
            for d in range(dim):
                following[row, d] += weight * current[column, d]
        for d in range(dim):
            total[row, d] += following[row, d]


@numba.njit(parallel=True, cache=True, nogil=True)
def _scale(total, factor):
    for row in numba.prange(total.shape[0]):
        for d in range(total.shape[1]):
            total[row, d] *= factor


def layer_mean(indptr, indices, data, table, layers):
    """1/(layers+1) * sum_{k=0..layers} A^k table, as a new array of table's shape and dtype.

    indptr (n+1,), indices (nnz,) and data (nnz,) are A's CSR arrays (data in table's dtype);
    table (n, d) C-contiguous float32 or float64; layers >= 0.
    """
    total = table.copy()
    current = table
    following = np.empty_like(table)
    spare = np.empty_like(table)
    for _ in range(layers):
        _layer(indptr, indices, data, current, following, total)
        current, following = following, (spare if current is table else current)
    _scale(total, table.dtype.type(1.0 / (layers + 1)))
    return total
