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
import scipy.sparse

from recgrad._checks import positive_float, positive_int
from recgrad.engine import use_compiled
from recgrad.evaluation import top_k
from recgrad.kernels.topk import top_k_masked


class ExactIndex:
    """Exact scan: a matrix product, then the top N outside the excluded rows in the compiled
    masked scan (`recgrad.kernels.topk`, as `recommend`), or, when the process's default engine
    (`recgrad.engine`) is "numpy", -inf on the excluded rows and `recgrad.evaluation.top_k`.

    Equal scores are ordered by the lower row position, as `recommend` orders them.
    """

    def __init__(self, vectors, ids=None):
        self.vectors, self.ids = _check_table(vectors, ids)

    def search(self, queries, N, exclude):
        queries, N = _check_query(queries, N, exclude, self.vectors)
        scores = np.asarray(queries @ self.vectors.T, dtype=self.vectors.dtype)
        excluded = [_positions(self.ids, rows) for rows in exclude]
        if use_compiled(None, scores.dtype in (np.float32, np.float64), f"the exact scan of {scores.dtype} scores"):
            mask = scipy.sparse.csr_matrix(
                (np.ones(sum(map(len, excluded)), dtype=np.int8), np.concatenate([self.ids[:0], *excluded]),
                 np.concatenate([[0], np.cumsum([len(rows) for rows in excluded])])), shape=scores.shape)
            positions, best, _ = top_k_masked(scores, min(N, len(self.ids)), mask=mask)
        else:
            for row, rows in enumerate(excluded):
                scores[row, rows] = -np.inf
            positions, best = top_k(scores, min(N, len(self.ids)))
        return _padded(np.where(np.isneginf(best), -1, self.ids[positions]), best, N)


class HNSWIndex:
    """Approximate top-N: faiss's IndexHNSWFlat with the inner-product metric (the `ann` extra).

    Args:
        vectors: (n, dim) rows (cosine: pass unit rows). ids: their names (default 0..n-1).
        M: graph degree (faiss's; memory n * M * 2 ints).
        ef_construction: candidate list while building (more: a better graph, a slower build).
            128, not faiss's 40 or the 64 of earlier versions: on 100,000 Gaussian rows x 64 it
            lifts recall@20 at efSearch 256 from 0.940 to 0.973 (0.978 at 200), so "auto" stops
            at 256 instead of 512 and queries run about twice as fast, for a 1.7x longer build.
        ef_search: candidate list while searching (more: higher recall, slower), or "auto"
            (the default): the smallest of 32, 64, 128, ... (up to n) whose mean recall@N on the
            calibration queries, against the exact top N, reaches `target_recall`. A fixed number
            cannot serve every catalogue: the same efSearch 128 gives recall@20 0.997 on Gowalla's
            trained item table and 0.52 on 1M i.i.d. Gaussian rows (docs/performance.md).
        target_recall: the recall@N that "auto" aims for, in (0, 1].
        calibration_queries: (q, dim) queries like the ones the index will answer (a served
            model's user vectors); None: a seeded sample of 500 rows of `vectors`, the queries of
            "similar items". Rows overstate the recall of queries from elsewhere: on 5,000 x 64
            Gaussian rows, efSearch 32 finds 0.97 of a row's top 20 but 0.85 of a fresh Gaussian
            query's.
        calibration_N: the N of the recall "auto" measures (the served default, 20).
        threads: faiss's OpenMP threads for build and search (None: faiss's default, every core).

    After "auto", `ef_search` holds the chosen value and `calibration_recall` the mean recall@N it
    measured (None for a fixed ef_search). If no ef up to n reaches the target, the largest is
    kept with the recall it reached. The calibration costs one exact scan of the queries and a
    search per ladder step: seconds, against minutes of building at a million rows.

    Reference: Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search using
    Hierarchical Navigable Small World graphs", TPAMI 2020; faiss.IndexHNSWFlat.
    """

    def __init__(self, vectors, ids=None, M=32, ef_construction=128, ef_search="auto", threads=None,
                 target_recall=0.95, calibration_queries=None, calibration_N=20):
        try:
            import faiss
        except ModuleNotFoundError:
            raise ModuleNotFoundError("the faiss index needs faiss-cpu: pip install 'recgrad[ann]'") from None
        self.vectors, self.ids = _check_table(vectors, ids)
        auto = isinstance(ef_search, str) and ef_search == "auto"
        if not auto:
            try:
                ef_search = positive_int(ef_search, "ef_search")
            except ValueError:
                raise ValueError(f'ef_search: expected "auto" or a positive int, got {ef_search!r}') from None
        else:
            target_recall = positive_float(target_recall, "target_recall")
            if target_recall > 1:
                raise ValueError(f"target_recall: expected a number in (0, 1], got {target_recall!r}")
            calibration_N = positive_int(calibration_N, "calibration_N")
            if calibration_queries is None:
                sample = np.random.default_rng(0).choice(len(self.vectors), min(500, len(self.vectors)), replace=False)
                calibration_queries = self.vectors[np.sort(sample)]
            calibration_queries = np.asarray(calibration_queries)
            if calibration_queries.ndim != 2 or calibration_queries.shape[0] == 0 \
                    or calibration_queries.shape[1] != self.vectors.shape[1]:
                raise ValueError(f"calibration_queries: expected a non-empty (q, {self.vectors.shape[1]}) array, "
                                 f"got shape {calibration_queries.shape}")
        if threads is not None:
            faiss.omp_set_num_threads(positive_int(threads, "threads"))
        self.index = faiss.IndexHNSWFlat(self.vectors.shape[1], positive_int(M, "M"), faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = positive_int(ef_construction, "ef_construction")
        self.index.add(np.ascontiguousarray(self.vectors, dtype=np.float32))
        self.ef_search, self.calibration_recall = ef_search, None
        if auto:
            self.ef_search, self.calibration_recall = self._calibrate(calibration_queries, calibration_N,
                                                                      target_recall)

    def _calibrate(self, queries, N, target):
        """(ef, mean recall@N) of the smallest ef of the doubling ladder reaching `target`."""
        N = min(N, len(self.ids))
        exact = ExactIndex(self.vectors, self.ids)
        none = [self.ids[:0]] * len(queries)
        block = max(1, 2**24 // len(self.ids))  # exact scores of at most 64 MB at a time
        chunks = [queries[start:start + block] for start in range(0, len(queries), block)]
        truth = np.concatenate([exact.search(chunk, N, none[:len(chunk)])[0] for chunk in chunks])
        ef = 32
        while True:
            self.ef_search = min(ef, len(self.ids))
            found, _ = self.search(queries, N, none)
            recall = mean_recall(found, truth)
            if recall >= target or self.ef_search == len(self.ids):
                return self.ef_search, recall
            ef *= 2

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


def mean_recall(found, truth):
    """Mean over queries of |found ∩ truth| / N: an index's top N (n, N) against the exact top N."""
    return float(np.mean([np.intersect1d(a, e).size / truth.shape[1] for a, e in zip(found, truth)]))


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
