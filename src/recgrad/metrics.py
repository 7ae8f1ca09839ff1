"""Top-K ranking metrics as pure, vectorised functions of a batch of rankings.

Inputs shared by every top-K metric:

- ``ranked``: int array (n_users, K_max), the recommended item ids of each user, best first.
  A row may end early with the padding id -1, which is never a hit (it still occupies its
  position: a -1 at rank 3 leaves rank 4 with discount 1/log2(5)). Ids must be >= -1 and a
  row must not repeat an item (a repeated hit would be counted twice).
- ``relevant``: the held-out relevant items, rows aligned with ``ranked``. Either a scipy
  sparse matrix (users x items; every stored nonzero entry is relevant, the value is ignored,
  binary relevance) or a list of 1-D int arrays, one per row of ``ranked``.

Notation (per user): h_j in {0, 1} is 1 when the item at rank j (j = 1..K) is relevant,
R = the user's number of relevant items, hits@K = sum_{j<=K} h_j.

Every ``*_at_k`` returns a float64 array of length n_users. A user with R = 0 gets NaN
(recall, NDCG and MAP are 0/0 there; the others are set to NaN too so that forgetting to
exclude such users is loud instead of silently pulling the mean down). Average with
``mean_over_users`` or select with ``has_relevant``. ``compute_metrics`` does both.

The conventions follow the LightGCN/NGCF evaluation code (binary relevance, Recall divides by R,
Precision by K, IDCG over min(K, R)). See docs/evaluation.md for the formulas and choices.
"""

import numpy as np
import scipy.sparse

from recgrad._arrays import as_float_array

METRIC_NAMES = ("recall", "ndcg", "hr", "precision", "mrr", "map")


def as_relevance_csr(relevant, n_rows, n_items=None, name="relevant"):
    """Return ``relevant`` as a canonical binary scipy CSR matrix with ``n_rows`` rows.

    A sparse matrix keeps its shape; stored zeros are dropped, duplicates merged, every stored
    entry becomes 1. A list of int arrays becomes a CSR with ``n_items`` columns (default:
    the largest listed id + 1). Raises ValueError when the row count differs from ``n_rows``.
    """
    if scipy.sparse.issparse(relevant):
        csr = scipy.sparse.csr_matrix(relevant, copy=True)
        csr.sum_duplicates()
        csr.eliminate_zeros()
        csr.data = np.ones_like(csr.data, dtype=np.int8)
        if csr.shape[0] != n_rows:
            raise ValueError(f"{name} has {csr.shape[0]} rows but {n_rows} were expected")
        return csr
    if isinstance(relevant, (str, bytes)) or not hasattr(relevant, "__len__"):
        raise TypeError(f"{name}: expected a scipy sparse matrix or a list of int arrays")
    if len(relevant) != n_rows:
        raise ValueError(f"{name} has {len(relevant)} rows but {n_rows} were expected")
    rows = [np.asarray(r).reshape(-1) for r in relevant]
    for i, r in enumerate(rows):
        if r.size and (r.dtype.kind not in "iu" or r.min() < 0):
            raise ValueError(f"{name}[{i}] must hold non-negative int item ids")
    lengths = np.array([r.size for r in rows], dtype=np.int64)
    indices = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    width = int(indices.max()) + 1 if indices.size else 0
    if n_items is None:
        n_items = width
    elif width > n_items:
        raise ValueError(f"{name} holds item id {width - 1} but there are only {n_items} items")
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    csr = scipy.sparse.csr_matrix(
        (np.ones(indices.size, np.int8), indices, indptr), shape=(n_rows, n_items)
    )
    csr.sum_duplicates()
    csr.data[:] = 1
    return csr


def _check_ranked(ranked):
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be 2-D (n_users, K), got shape {ranked.shape}")
    if ranked.dtype.kind not in "iu":
        raise TypeError(f"ranked must hold int item ids, got dtype {ranked.dtype}")
    ranked = ranked.astype(np.int64, copy=False)
    if ranked.size and ranked.min() < -1:
        raise ValueError("ranked holds an id < -1; only -1 is allowed as padding")
    if ranked.shape[1] > 1:
        s = np.sort(ranked, axis=1)
        dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
        if dup.any():
            row = int(np.nonzero(dup.any(axis=1))[0][0])
            raise ValueError(f"ranked row {row} repeats an item id")
    return ranked


def hit_matrix(ranked, relevant):
    """Return (hits, n_relevant): hits[u, j] is True when ranked[u, j] is relevant for user u.

    ``hits`` is a bool array shaped like ``ranked``; ``n_relevant`` is R per user (int64).
    Vectorised: each (user, item) pair is encoded as user * n_items + item and looked up with
    one ``searchsorted`` in the sorted keys of the canonical CSR (no loop over users).
    """
    ranked = _check_ranked(ranked)
    n_rows = ranked.shape[0]
    top_id = int(ranked.max()) if ranked.size else -1
    csr = as_relevance_csr(relevant, n_rows, n_items=None)
    if not scipy.sparse.issparse(relevant):
        csr.resize((n_rows, max(csr.shape[1], top_id + 1)))
    n_items = csr.shape[1]
    if top_id >= n_items:
        raise ValueError(f"ranked holds item id {top_id} but relevant has only {n_items} columns")
    n_relevant = np.diff(csr.indptr).astype(np.int64)
    row_of_entry = np.repeat(np.arange(n_rows, dtype=np.int64), n_relevant)
    keys = row_of_entry * n_items + csr.indices.astype(np.int64)  # sorted: canonical CSR
    query = np.arange(n_rows, dtype=np.int64)[:, None] * n_items + ranked
    pos = np.searchsorted(keys, query)
    found = keys[np.minimum(pos, keys.size - 1)] == query if keys.size else np.zeros_like(query, bool)
    hits = found & (ranked >= 0)
    return hits, n_relevant


def has_relevant(relevant, n_rows=None):
    """Bool mask of the users with at least one relevant item (the users a mean runs over)."""
    if n_rows is None:
        n_rows = relevant.shape[0] if scipy.sparse.issparse(relevant) else len(relevant)
    return np.diff(as_relevance_csr(relevant, n_rows).indptr) > 0


def mean_over_users(values):
    """Mean of per-user metric values over the users where it is defined (not NaN).

    Returns NaN when no user has a relevant item (no warning).
    """
    values = np.asarray(values, dtype=np.float64)
    defined = ~np.isnan(values)
    return float(values[defined].mean()) if defined.any() else float("nan")


def _check_k(k, k_max):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k > k_max:
        raise ValueError(f"k={k} exceeds the {k_max} ranked columns; pass a longer ranking")
    return int(k)


def _undefined_as_nan(values, n_relevant):
    values = values.astype(np.float64, copy=False)
    values[n_relevant == 0] = np.nan
    return values


def _discounts(k):
    """d_j = 1 / log2(j + 1) for ranks j = 1..k."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _recall(hits, n_rel, k):
    with np.errstate(invalid="ignore", divide="ignore"):
        return _undefined_as_nan(hits[:, :k].sum(axis=1) / n_rel, n_rel)


def _precision(hits, n_rel, k):
    return _undefined_as_nan(hits[:, :k].sum(axis=1) / k, n_rel)


def _hit_rate(hits, n_rel, k):
    return _undefined_as_nan(hits[:, :k].any(axis=1), n_rel)


def _ndcg(hits, n_rel, k):
    d = _discounts(k)
    dcg = hits[:, :k] @ d
    ideal = np.concatenate([[0.0], np.cumsum(d)])[np.minimum(n_rel, k)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return _undefined_as_nan(dcg / ideal, n_rel)


def _mrr(hits, n_rel, k):
    h = hits[:, :k]
    first = np.argmax(h, axis=1)  # first True, or 0 when none
    return _undefined_as_nan(np.where(h.any(axis=1), 1.0 / (first + 1.0), 0.0), n_rel)


def _map(hits, n_rel, k):
    h = hits[:, :k]
    precision_at_j = np.cumsum(h, axis=1) / np.arange(1, k + 1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (precision_at_j * h).sum(axis=1) / np.minimum(n_rel, k)
    return _undefined_as_nan(ap, n_rel)


_FROM_HITS = {
    "recall": _recall,
    "ndcg": _ndcg,
    "hr": _hit_rate,
    "precision": _precision,
    "mrr": _mrr,
    "map": _map,
}


def recall_at_k(ranked, relevant, k):
    """Recall@K = hits@K / R per user (LightGCN divides by R, not by min(K, R))."""
    hits, n_rel = hit_matrix(ranked, relevant)
    return _recall(hits, n_rel, _check_k(k, hits.shape[1]))


def precision_at_k(ranked, relevant, k):
    """Precision@K = hits@K / K per user (padding -1 counts as a miss, K is not shortened)."""
    hits, n_rel = hit_matrix(ranked, relevant)
    return _precision(hits, n_rel, _check_k(k, hits.shape[1]))


def hit_rate_at_k(ranked, relevant, k):
    """HR@K = 1 if hits@K > 0 else 0, per user."""
    hits, n_rel = hit_matrix(ranked, relevant)
    return _hit_rate(hits, n_rel, _check_k(k, hits.shape[1]))


def ndcg_at_k(ranked, relevant, k):
    """NDCG@K = DCG@K / IDCG@K with binary relevance, per user.

    DCG@K = sum_{j=1..K} h_j / log2(j + 1);  IDCG@K = sum_{j=1..min(K, R)} 1 / log2(j + 1),
    the DCG of a ranking that puts all relevant items first (as the LightGCN/NGCF code).
    """
    hits, n_rel = hit_matrix(ranked, relevant)
    return _ndcg(hits, n_rel, _check_k(k, hits.shape[1]))


def mrr_at_k(ranked, relevant, k):
    """MRR@K = 1 / (rank of the first relevant item) if it is within the top K, else 0."""
    hits, n_rel = hit_matrix(ranked, relevant)
    return _mrr(hits, n_rel, _check_k(k, hits.shape[1]))


def map_at_k(ranked, relevant, k):
    """AP@K = (1 / min(K, R)) * sum_{j=1..K} P@j * h_j, per user (MAP@K is its mean).

    P@j = hits@j / j. Normalising by min(K, R) rather than R makes a perfect top-K score 1 even
    when R > K (the convention of ml_metrics' apk and of RecBole's MAP); dividing by R instead
    would cap AP@K at K / R.
    """
    hits, n_rel = hit_matrix(ranked, relevant)
    return _map(hits, n_rel, _check_k(k, hits.shape[1]))


def _check_metric_names(metrics, allowed):
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    for name in names:
        if name not in allowed:
            raise ValueError(f"metrics: unknown metric {name!r}; choose from {', '.join(allowed)}")
    return names


def _check_ks(ks):
    ks = (ks,) if isinstance(ks, (int, np.integer)) else tuple(ks)
    if not ks:
        raise ValueError("ks must name at least one cut-off")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"ks: every cut-off must be a positive int, got {k!r}")
    return tuple(int(k) for k in ks)


def per_user_metrics(ranked, relevant, ks=(10, 20), metrics=METRIC_NAMES):
    """Per-user values of every requested metric at every K, from one hit matrix.

    Returns a dict ``{"recall@20": array (n_users,), ...}``; NaN for users with R = 0.
    """
    hits, n_rel = hit_matrix(ranked, relevant)
    return metrics_from_hits(hits, n_rel, ks, metrics)


def metrics_from_hits(hits, n_relevant, ks=(10, 20), metrics=METRIC_NAMES):
    """Per-user metrics from a hit matrix: hits (n_users, K_max) bool, hits[u, r] = the item at rank
    r + 1 is relevant; n_relevant (n_users,) = R. Same keys and values as `per_user_metrics`
    (which builds the hit matrix from a ranking; the evaluation kernel marks hits itself)."""
    ks = _check_ks(ks)
    names = _check_metric_names(metrics, METRIC_NAMES)
    return {f"{name}@{k}": _FROM_HITS[name](hits, n_relevant, _check_k(k, hits.shape[1])) for name in names for k in ks}


def compute_metrics(ranked, relevant, ks=(10, 20), metrics=METRIC_NAMES):
    """Mean of each metric over the users with at least one relevant item.

    Returns ``{"recall@10": float, ..., "users": int}``: keys are ``f"{name}@{k}"`` for every
    name in ``metrics`` (from "recall", "ndcg", "hr", "precision", "mrr", "map") and every k in
    ``ks``; "users" is how many users the means run over.
    """
    values = per_user_metrics(ranked, relevant, ks, metrics)
    result = {key: mean_over_users(v) for key, v in values.items()}
    result["users"] = int(np.count_nonzero(has_relevant(relevant, np.asarray(ranked).shape[0])))
    return result


def auc(scores_pos, scores_neg):
    """Area under the ROC curve: the probability that a positive outscores a negative.

    AUC = (1 / (P N)) * sum_{p, n} ([s_p > s_n] + 0.5 [s_p = s_n]), ties count one half.

    Computed without the P x N pair matrix, through the Mann-Whitney statistic: with r_p the
    rank (1-based, ties averaged) of positive p among all P + N scores,
    AUC = (sum_p r_p - P (P + 1) / 2) / (P N).

    1-D inputs (P,) and (N,) give a float. 2-D inputs (n, P) and (n, N) give one AUC per row,
    e.g. the sampled case of one positive (n, 1) against its own negatives (n, 99).
    """
    pos = as_float_array(scores_pos, "scores_pos")
    neg = as_float_array(scores_neg, "scores_neg")
    if pos.ndim != neg.ndim or pos.ndim not in (1, 2):
        raise ValueError(
            f"scores_pos and scores_neg must both be 1-D or both 2-D, got {pos.shape} and {neg.shape}"
        )
    if pos.ndim == 2 and pos.shape[0] != neg.shape[0]:
        raise ValueError(f"scores_pos has {pos.shape[0]} rows but scores_neg has {neg.shape[0]}")
    n_pos, n_neg = pos.shape[-1], neg.shape[-1]
    if n_pos == 0 or n_neg == 0:
        raise ValueError("auc needs at least one positive and one negative score")
    if np.isnan(pos).any() or np.isnan(neg).any():
        raise ValueError("auc: scores contain NaN")
    from scipy.stats import rankdata  # here, not at the top: scipy.stats takes over a second to import

    ranks = rankdata(np.concatenate([pos, neg], axis=-1), method="average", axis=-1)
    u = ranks[..., :n_pos].sum(axis=-1) - n_pos * (n_pos + 1) / 2.0
    result = u / (n_pos * n_neg)
    return float(result) if pos.ndim == 1 else result
