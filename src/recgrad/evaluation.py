"""Evaluation protocols: full ranking over the catalogue, the NCF sampled protocol, popularity.

- ``top_k``: per-row top-K in NumPy (a sampled threshold, then a stable sort of the few
  candidates): the readable reference of the tie rule and the test oracle of the kernel.
- ``full_ranking``: the LightGCN/NGCF protocol (score every item, mask the user's training
  items, take the top K, average Recall/NDCG/... over the users with a test item), in blocks
  of users so memory stays bounded whatever the number of users; the mask and the top K run
  in the compiled kernel ``recgrad.kernels.topk`` (the default) or in NumPy (``engine="numpy"``).
- ``sampled_ranking``: the NCF protocol (rank the held-out item among 99 given negatives).
- ``popularity_scores`` / ``evaluate_popularity`` / ``evaluate_popularity_sampled``: the
  most-popular baseline under the same protocols, to print beside every model.
- ``format_metrics_table``: a plain-text table of several results.

Tie rules, memory bound and the sampled-vs-full caveat: docs/evaluation.md.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse
from threadpoolctl import threadpool_limits

from recgrad._arrays import as_float_array
from recgrad.engine import use_compiled
from recgrad.kernels import get_num_threads, num_threads
from recgrad.kernels.topk import top_k_masked
from recgrad.metrics import METRIC_NAMES, _check_ks, _check_metric_names, metrics_from_hits, per_user_metrics

# Default memory budget for one block of full-ranking scores: 64 MiB of float32.
SCORE_BLOCK_BYTES = 64 * 2**20


def top_k(scores, k):
    """Top-``k`` item ids and scores of each row, best first: returns ``(ids, top_scores)``.

    scores: (n_rows, n_items) or (n_items,) real array. ids: int64 with the same leading shape
    and last dimension k; top_scores: the matching scores (float dtype of the input).

    Order: higher score first; equal scores by lower item id, also at the K boundary (of several
    items tied for the last places, the lowest ids get in). The result equals
    ``np.argsort(-scores, kind="stable")[..., :k]`` but costs about one pass over the row:

    1. threshold: t0 = the k-th largest score of a strided subsample of the columns (every
       s-th, s = n_items // max(2048, 8k)), found with ``np.partition`` on the subsample.
       The k-th largest of a subset is <= the k-th largest of the row, so every item of the
       true top k (ties included) scores >= t0;
    2. candidates: the items with score >= t0 (about k * s per row, never fewer than k);
    3. exact order: a stable sort by -score of the candidates only (held in ascending id order,
       so equal scores keep the lower id first); keep k.

    When k > n_items the extra columns are padding: id -1, score -inf. NaN scores raise
    ValueError (numpy would sort NaN above +inf, silently putting it on top).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    scores = as_float_array(scores, "scores")
    if scores.ndim not in (1, 2):
        raise ValueError(f"scores must be 1-D or 2-D, got shape {scores.shape}")
    if scores.ndim == 1:
        ids, vals = top_k(scores[None, :], k)
        return ids[0], vals[0]
    n_rows, n_items = scores.shape
    kk = min(int(k), n_items)
    ids = np.full((n_rows, k), -1, np.int64)
    vals = np.full((n_rows, k), -np.inf, scores.dtype)
    if kk == 0 or n_rows == 0:
        return ids, vals
    cand_ids, cand_vals = _candidates(scores, kk)
    if np.isnan(cand_vals).any():  # NaN is never < t0, so a NaN anywhere lands among candidates
        raise ValueError("scores contain NaN")
    # candidates are in ascending id order (padding last), so a stable sort by -score alone
    # breaks ties by lower id
    order = np.argsort(-cand_vals, axis=1, kind="stable")[:, :kk]
    ids[:, :kk] = np.take_along_axis(cand_ids, order, axis=1)
    vals[:, :kk] = np.take_along_axis(cand_vals, order, axis=1)
    return ids, vals


def _candidates(scores, k):
    """Per row, the items scoring >= t0 (a lower bound of the k-th largest), padded.

    Returns (cand_ids, cand_vals), both (n_rows, C) with C the largest candidate count; the
    padding has id n_items (after every real id) and score -inf, so it never enters a top k.
    """
    n_rows, n_items = scores.shape
    stride = n_items // max(2048, 8 * k)
    if stride <= 1:
        return np.broadcast_to(np.arange(n_items, dtype=np.int64), scores.shape), scores
    sub = scores[:, ::stride]
    t0 = np.partition(sub, sub.shape[1] - k, axis=1)[:, sub.shape[1] - k]
    mask = np.less(scores, t0[:, None])
    np.logical_not(mask, out=mask)  # score >= t0, or NaN
    flat = np.flatnonzero(mask)  # row-major: ascending item id within a row
    rows, cols = np.divmod(flat, n_items)
    counts = np.bincount(rows, minlength=n_rows)
    slot = np.arange(flat.size) - np.repeat(np.cumsum(counts) - counts, counts)
    cand_ids = np.full((n_rows, int(counts.max())), n_items, np.int64)
    cand_ids[rows, slot] = cols
    cand_vals = np.full(cand_ids.shape, -np.inf, scores.dtype)
    cand_vals[rows, slot] = scores.reshape(-1)[flat]
    return cand_ids, cand_vals


def _check_csr(matrix, name):
    if not scipy.sparse.issparse(matrix):
        raise TypeError(f"{name} must be a scipy sparse users x items matrix")
    csr = scipy.sparse.csr_matrix(matrix, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    return csr


def default_block_size(n_items, itemsize=4, budget_bytes=SCORE_BLOCK_BYTES):
    """Users per block so one (block, n_items) score array fits ``budget_bytes`` (at least 1)."""
    return max(1, int(budget_bytes // (max(n_items, 1) * itemsize)))


def full_ranking(
    score_fn,
    train,
    test,
    ks=(20,),
    metrics=("recall", "ndcg"),
    users=None,
    block_size=None,
    exclude_train=True,
    engine=None,
    threads=1,
):
    """Full-ranking evaluation: every item is a candidate, the user's training items masked.

    For each block of test users (users with >= 1 test item, optionally restricted to
    ``users``): ``scores = score_fn(block)``, shape (len(block), n_items), e.g.
    ``lambda u: U[u] @ V.T``; the user's training items are excluded; the top K = max(ks)
    items are taken (higher score first, ties by lower item id: the ``top_k`` rule); an item
    scoring -inf is never listed (a short list ends with the padding -1). Per-user metric
    values from ``recgrad.metrics`` are averaged over all evaluated users.

    engine (``recgrad.engine``): by default (None, "auto", "compiled") the masking and the top K
    run in one compiled pass per block,
    parallel over the users (``recgrad.kernels.topk.top_k_masked``: each row is scanned once,
    its training items skipped, a sorted buffer of K kept; nothing is written into the scores).
    "numpy" is the reference: write -inf into the training items, ``top_k``, then turn ids
    scoring -inf into -1. Both give the same ids, hence the same metrics, on float32 and
    float64 scores (tested), and both raise ValueError when a score outside the mask is NaN.

    Memory: one block of scores (plus, with engine="numpy", top_k's temporaries: a bool array
    of the block's size and the candidates, about k * n_items / max(2048, 8k) per user).
    ``block_size=None`` picks ``default_block_size(n_items)``: 64 MiB of float32 scores (409
    users on Gowalla's 40,981 items); a float64 score_fn doubles that. Timings by block size
    and BLAS threads: docs/kernels.md.

    In-place contract (engine="numpy" only): the masking writes -inf into the array
    ``score_fn`` returns when that array is writeable and owns its memory, which saves a copy
    of every block. A fresh ``U[u] @ V.T`` is such an array; a view or a read-only array (e.g.
    ``np.broadcast_to``) is copied first. Do not return an array you keep and reuse. The
    compiled path only reads the scores (a non-contiguous array is copied).

    threads: how many blocks are evaluated at once (default 1). With 1, the blocks go one after
    another: ``score_fn`` on BLAS's own threads, then a one-thread top-K scan (BLAS's worker
    threads keep spinning for a while after each GEMM, so a scan on every core would compete
    with them). With N > 1, N worker threads each take whole blocks and compute their scores
    with one BLAS thread and scan them on one thread, so no core waits for another phase; on
    the 2-core machine of docs/performance.md this evaluates Gowalla in about 1.5 s instead of
    2.0 s. ``score_fn`` is then called from several threads at once and must be thread-safe (a
    ``U[u] @ V.T`` is; a model forward that caches activations is not). The result does not
    depend on ``threads``: the blocks are the same and their values are combined in order.
    While they run, BLAS is limited to one thread in the whole process (threadpoolctl).

    Returns ``{"recall@20": float, ..., "users": int}``. Results do not depend on the block
    size when ``score_fn`` is row-wise exact (BLAS may round a GEMM differently per shape).
    """
    compiled = use_compiled(engine, True, "full_ranking")  # the kernel covers every score array
    ks = _check_ks(ks)
    names = _check_metric_names(metrics, METRIC_NAMES)
    train = _check_csr(train, "train")
    test = _check_csr(test, "test")
    if train.shape != test.shape:
        raise ValueError(f"train has shape {train.shape} but test has shape {test.shape}")
    n_users, n_items = test.shape
    eval_users = np.nonzero(np.diff(test.indptr) > 0)[0]
    if users is not None:
        users = np.unique(np.asarray(users, dtype=np.int64).reshape(-1))
        if users.size and (users[0] < 0 or users[-1] >= n_users):
            raise ValueError(f"users must be ids in [0, {n_users})")
        eval_users = np.intersect1d(eval_users, users)
    if block_size is None:
        block_size = default_block_size(n_items)
    elif isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive int or None, got {block_size!r}")
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    k = max(ks)

    def evaluate_block(block):
        """The per-user metric values of one block of users (on one thread of the scan)."""
        with num_threads(1):
            scores = _block_scores(score_fn, block, n_items, in_place=not compiled)
            relevant = test[block]
            if compiled:  # the kernel also marks the hits, so no hit_matrix lookup
                _, _, hits = top_k_masked(scores, k, mask=train[block] if exclude_train else None, relevant=relevant)
                return metrics_from_hits(hits, np.diff(relevant.indptr), ks, names)
            if exclude_train:
                sub = train[block]
                rows = np.repeat(np.arange(block.size), np.diff(sub.indptr))
                scores[rows, sub.indices] = -np.inf
            ids, vals = top_k(scores, k)
            ids[np.isneginf(vals)] = -1
            return per_user_metrics(ids, relevant, ks, names)

    blocks = [eval_users[start : start + block_size] for start in range(0, eval_users.size, block_size)]
    if threads == 1 or len(blocks) < 2:
        per_block = [evaluate_block(block) for block in blocks]
    else:
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(min(int(threads), len(blocks))) as pool:
            per_block = list(pool.map(evaluate_block, blocks))  # in block order
    collected = {f"{name}@{kk}": [values[f"{name}@{kk}"] for values in per_block] for name in names for kk in ks}
    result = {
        key: float(np.concatenate(parts).mean()) if eval_users.size else float("nan")
        for key, parts in collected.items()
    }
    result["users"] = int(eval_users.size)
    return result


def _block_scores(score_fn, block, n_items, in_place):
    scores = np.asarray(score_fn(block))
    if scores.shape != (block.size, n_items):
        raise ValueError(
            f"score_fn returned shape {scores.shape} for {block.size} users; "
            f"expected ({block.size}, {n_items})"
        )
    scores = as_float_array(scores, "score_fn output")
    if in_place and (not scores.flags.writeable or scores.base is not None):
        scores = scores.copy()
    return scores


def sampled_ranking(score_fn_pairs, test_users, test_items, negatives, ks=(10,), block_size=4096):
    """The NCF protocol: rank each held-out positive among its given sampled negatives.

    test_users, test_items: int (n,), one held-out (user, item) per row; negatives: int
    (n, m), m = 99 in the NCF files. ``score_fn_pairs(users, items)`` takes two equal-length
    1-D int arrays and returns their scores (1-D); it is called on ``block_size`` rows at a time.

    rank = #{distinct negatives j != positive : s_j >= s_pos} (0-based). Ties are pessimistic:
    the positive ranks below every negative with an equal score (the NCF code appends the
    positive last and takes heapq.nlargest, which keeps the earlier item on ties). A negative
    equal to the held-out item, or repeated, is ignored (NCF keys scores by item id, so
    duplicates collapse; its ml-1m file lists the test item among the negatives for 156 users).
    HR@K = [rank < K]; NDCG@K = [rank < K] / log2(rank + 2). Returns the means and "users".

    Caveat: sampled metrics are not full-ranking metrics and can order two models differently
    (Krichene and Rendle, "On Sampled Metrics for Item Recommendation", KDD 2020). Report them
    only to compare with papers that used this protocol.
    """
    ks = _check_ks(ks)
    users = np.asarray(test_users).reshape(-1)
    items = np.asarray(test_items).reshape(-1)
    negatives = np.asarray(negatives)
    for name, arr in (("test_users", users), ("test_items", items), ("negatives", negatives)):
        if arr.size and arr.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold int ids, got dtype {arr.dtype}")
    if users.shape != items.shape:
        raise ValueError(f"test_users has {users.size} entries but test_items has {items.size}")
    if negatives.ndim != 2 or negatives.shape[0] != users.size:
        raise ValueError(f"negatives must be ({users.size}, m), got shape {negatives.shape}")
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    n, m = negatives.shape
    ranks = np.empty(n, dtype=np.int64)
    for start in range(0, n, block_size):
        sl = slice(start, start + block_size)
        cand = np.concatenate([items[sl, None], negatives[sl]], axis=1).astype(np.int64)
        rows = np.repeat(users[sl].astype(np.int64), m + 1)
        scores = as_float_array(score_fn_pairs(rows, cand.reshape(-1)), "score_fn_pairs output")
        if scores.shape != (rows.size,):
            raise ValueError(f"score_fn_pairs returned shape {scores.shape}; expected ({rows.size},)")
        scores = scores.reshape(cand.shape)
        if np.isnan(scores).any():
            raise ValueError("score_fn_pairs returned NaN")
        ranks[sl] = np.count_nonzero((scores[:, 1:] >= scores[:, :1]) & _counted(cand), axis=1)
    result = {}
    for k in ks:
        inside = ranks < k
        result[f"hr@{k}"] = float(inside.mean()) if n else float("nan")
        ndcg = np.where(inside, 1.0 / np.log2(ranks + 2.0), 0.0)
        result[f"ndcg@{k}"] = float(ndcg.mean()) if n else float("nan")
    result["users"] = int(n)
    return result


def _counted(cand):
    """Mask over the negatives (cand[:, 1:]): True for the first copy of each id != positive."""
    neg = cand[:, 1:]
    order = np.argsort(neg, axis=1, kind="stable")
    sorted_neg = np.take_along_axis(neg, order, axis=1)
    first = np.ones_like(sorted_neg, dtype=bool)
    first[:, 1:] = sorted_neg[:, 1:] != sorted_neg[:, :-1]
    keep = np.empty_like(first)
    np.put_along_axis(keep, order, first, axis=1)
    return keep & (neg != cand[:, :1])


def popularity_scores(train):
    """Item popularity: the number of training interactions of each item, int64 (n_items,)."""
    train = _check_csr(train, "train")
    return np.bincount(train.indices, minlength=train.shape[1]).astype(np.int64)


def evaluate_popularity(train, test, ks=(20,), metrics=("recall", "ndcg"), users=None, block_size=None):
    """The most-popular baseline under ``full_ranking``: every user gets the same scores.

    Score = training count of the item (ties: lower item id first, the ``top_k`` rule), the
    user's training items masked. Returns the same dict as ``full_ranking``.
    """
    pop = popularity_scores(train).astype(np.float32)
    return full_ranking(
        lambda block: np.broadcast_to(pop, (block.size, pop.size)),
        train,
        test,
        ks=ks,
        metrics=metrics,
        users=users,
        block_size=block_size,
    )


def evaluate_popularity_sampled(train, test_users, test_items, negatives, ks=(10,)):
    """The most-popular baseline under ``sampled_ranking`` (NCF protocol, pessimistic ties)."""
    pop = popularity_scores(train).astype(np.float64)
    return sampled_ranking(lambda u, i: pop[i], test_users, test_items, negatives, ks=ks)


def format_metrics_table(results, digits=4):
    """A plain-text table: one row per model/baseline, one column per metric key.

    results: ``{name: metrics dict}`` (insertion order kept). Columns are the union of the
    keys in first-seen order; floats are printed with ``digits`` decimals, ints as ints,
    a missing value as "-".
    """
    columns = []
    for metrics in results.values():
        for key in metrics:
            if key not in columns:
                columns.append(key)

    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return str(int(value))
        return f"{float(value):.{digits}f}"

    header = ["model"] + columns
    body = [[str(name)] + [cell(m.get(c)) for c in columns] for name, m in results.items()]
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]

    def line(row):
        first = row[0].ljust(widths[0])
        return "  ".join([first] + [v.rjust(w) for v, w in zip(row[1:], widths[1:])])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule] + [line(row) for row in body])


SPLITS = ("test", "validation")


def protocol_for(dataset, split="test"):
    """"sampled" when `split` is the test set of a dataset with NCF negatives, else "full"."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if getattr(dataset, split) is None and not (split == "test" and dataset.test_negatives is not None):
        raise ValueError(f"dataset {dataset.name!r} has no {split} set")
    return "sampled" if split == "test" and dataset.test_negatives is not None else "full"


def _seen_items(dataset, split):
    """Items masked when ranking for `split`: train, plus validation when the test set is ranked."""
    if split == "test" and dataset.validation is not None:
        return (dataset.train + dataset.validation).tocsr()
    return dataset.train


def model_score_fn(model):
    """Full-ranking scores of a recgrad recommender: user block -> (block, n_items).

    Dot-product models (with `ranking_user_factors`/`ranking_item_factors`: the factors, and the
    item prior's column when the model has one) compute their factors once and score a block with
    one GEMM; the others (GMF, MLP, NeuMF) use `model.score_all`.
    """
    if hasattr(model, "ranking_user_factors"):
        user_vectors, item_vectors = model.ranking_user_factors(), model.ranking_item_factors()
        return lambda block: user_vectors[block] @ item_vectors.T
    return model.score_all


def evaluate_recommender(model, dataset, split="test", ks=(20,), metrics=("recall", "ndcg")):
    """A model's metrics on `split` of a `recgrad.data.Dataset`, by the dataset's protocol.

    Full ranking (the user's training items masked, and validation items too when ranking the
    test set), or the NCF sampled protocol (HR and NDCG only) when the test set comes with
    sampled negatives. Returns the metrics dict of `full_ranking` / `sampled_ranking`.
    """
    if protocol_for(dataset, split) == "sampled":
        return sampled_ranking(model.score, dataset.test_users, dataset.test_items, dataset.test_negatives, ks=ks)
    # A factor model's score function is one GEMM on fixed factors, safe to call from several threads;
    # score_all of the others runs the model's layers, which keep their inputs for a backward pass.
    threads = get_num_threads() if hasattr(model, "user_factors") else 1
    return full_ranking(model_score_fn(model), _seen_items(dataset, split), getattr(dataset, split), ks=ks,
                        metrics=metrics, threads=threads)


def evaluate_baseline(dataset, split="test", ks=(20,), metrics=("recall", "ndcg")):
    """The popularity baseline under the same protocol and masking as `evaluate_recommender`."""
    if protocol_for(dataset, split) == "sampled":
        return evaluate_popularity_sampled(dataset.train, dataset.test_users, dataset.test_items,
                                           dataset.test_negatives, ks=ks)
    return evaluate_popularity(_seen_items(dataset, split), getattr(dataset, split), ks=ks, metrics=metrics)
