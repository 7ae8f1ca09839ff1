"""Top-N by inner product over a table of vectors: the exact scan, or an HNSW graph (faiss).

Both answer `search(queries (n, dim), N, exclude) -> (ids (n, N), scores (n, N))`: for each query
the N rows with the largest <query, row>, best first, never a row listed in its `exclude` (a
1-D array of row ids per query); a query left with fewer than N rows pads with id -1, score -inf
(the `Recommender.recommend` convention). Rows are named by `ids` (default 0..n-1), so an index
over a subset of the items answers in item ids.

Exclusion is exact for both: the HNSW search fetches N + len(exclude) neighbours, drops the
excluded ones, and asks again with twice as many while fewer than N remain and rows are left to
fetch. Cosine similarity is the inner product of unit rows: pass l2-normalised vectors.
"""

import numpy as np

from recgrad._checks import positive_int
from recgrad.evaluation import top_k


class ExactIndex:
    """Exact scan: a matrix product, -inf on the excluded rows, `recgrad.evaluation.top_k`.

    Equal scores are ordered by the lower row position, as `recommend` orders them.
    """

    def __init__(self, vectors, ids=None):
        self.vectors, self.ids = _check_table(vectors, ids)

    def search(self, queries, N, exclude):
        queries, N = _check_query(queries, N, exclude, self.vectors)
        scores = np.asarray(queries @ self.vectors.T, dtype=self.vectors.dtype)
        for row, excluded in enumerate(exclude):
            scores[row, _positions(self.ids, excluded)] = -np.inf
        positions, best = top_k(scores, min(N, len(self.ids)))
        return _padded(np.where(np.isneginf(best), -1, self.ids[positions]), best, N)


class HNSWIndex:
    """Approximate top-N: faiss's IndexHNSWFlat with the inner-product metric (the `ann` extra).

    Args:
        vectors: (n, dim) rows (cosine: pass unit rows). ids: their names (default 0..n-1).
        M: graph degree (faiss's; memory n * M * 2 ints).
        ef_construction: candidate list while building (more: a better graph, a slower build).
        ef_search: candidate list while searching, at least N (more: higher recall, slower).
        threads: faiss's OpenMP threads for build and search (None: faiss's default, every core).

    Reference: Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search using
    Hierarchical Navigable Small World graphs", TPAMI 2020; faiss.IndexHNSWFlat.
    """

    def __init__(self, vectors, ids=None, M=32, ef_construction=64, ef_search=128, threads=None):
        try:
            import faiss
        except ModuleNotFoundError:
            raise ModuleNotFoundError("the faiss index needs faiss-cpu: pip install 'recgrad[ann]'") from None
        self.vectors, self.ids = _check_table(vectors, ids)
        self.ef_search = positive_int(ef_search, "ef_search")
        if threads is not None:
            faiss.omp_set_num_threads(positive_int(threads, "threads"))
        self.index = faiss.IndexHNSWFlat(self.vectors.shape[1], positive_int(M, "M"), faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = positive_int(ef_construction, "ef_construction")
        self.index.add(np.ascontiguousarray(self.vectors, dtype=np.float32))

    def search(self, queries, N, exclude):
        queries, N = _check_query(queries, N, exclude, self.vectors)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n_rows = len(self.ids)
        ids = np.full((len(queries), N), -1, dtype=np.int64)
        scores = np.full((len(queries), N), -np.inf, dtype=self.vectors.dtype)
        pending = np.arange(len(queries))
        fetch = {int(row): min(n_rows, N + len(exclude[row])) for row in pending}
        while pending.size:
            k = max(fetch[int(row)] for row in pending)
            self.index.hnsw.efSearch = max(self.ef_search, k)
            found_scores, found = self.index.search(queries[pending], k)
            retry = []
            for slot, row in enumerate(pending):
                hits = found[slot]
                valid = hits >= 0
                hits, values = self.ids[hits[valid]], found_scores[slot][valid]
                keep = ~np.isin(hits, exclude[row])
                hits, values = hits[keep][:N], values[keep][:N]
                if hits.size < N and k < n_rows:
                    fetch[int(row)] = min(n_rows, 2 * k)
                    retry.append(row)
                    continue
                ids[row, : hits.size], scores[row, : hits.size] = hits, values
            pending = np.array(retry, dtype=np.int64)
        return ids, scores


def _check_table(vectors, ids):
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.dtype.kind != "f":
        raise ValueError(f"vectors: expected a non-empty (n, dim) float array, got {vectors.dtype} {vectors.shape}")
    ids = np.arange(vectors.shape[0]) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (vectors.shape[0],) or np.any(np.diff(ids) <= 0):
        raise ValueError(f"ids: expected {vectors.shape[0]} increasing row ids, got shape {ids.shape}")
    return vectors, ids


def _check_query(queries, N, exclude, vectors):
    queries = np.asarray(queries, dtype=vectors.dtype)
    if queries.ndim != 2 or queries.shape[1] != vectors.shape[1]:
        raise ValueError(f"queries: expected shape (n, {vectors.shape[1]}), got {queries.shape}")
    if len(exclude) != len(queries):
        raise ValueError(f"exclude: expected one array per query ({len(queries)}), got {len(exclude)}")
    return queries, positive_int(N, "N")


def _positions(ids, excluded):
    """Positions in the sorted `ids` of the excluded ids that are there (others are not candidates)."""
    excluded = np.asarray(excluded, dtype=np.int64)
    positions = np.searchsorted(ids, excluded)
    inside = positions < ids.size
    inside[inside] = ids[positions[inside]] == excluded[inside]
    return positions[inside]


def _padded(ids, scores, N):
    """Pad (n, k) results to N columns with id -1 and score -inf."""
    missing = N - ids.shape[1]
    if missing <= 0:
        return ids, scores
    return (np.pad(ids, ((0, 0), (0, missing)), constant_values=-1),
            np.pad(scores, ((0, 0), (0, missing)), constant_values=-np.inf))
