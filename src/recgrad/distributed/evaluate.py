"""Full-ranking evaluation with the item table sharded: each shard's top-K, then an exact merge.

Each worker scores the users against its shard of the items only, masks the users' seen items of
that shard and keeps its top K (`BlockWorker.top_k`, the compiled `recgrad.kernels.topk` scan).
The driver merges the N lists of K into the top K over the whole catalogue (`merge_top_k`).

Why the merge is exact: recgrad ranks by a total order, higher score first and equal scores by
lower item id (`recgrad.evaluation.top_k`). A shard's items keep ascending global id order, so its
top K is the first K of its items under the same order. An item of the global top K has fewer
than K items before it in the whole catalogue, hence fewer than K in its own shard: it is in its
shard's list. So the global top K is the first K of the union of the shard lists under that
order, which `merge_top_k` takes with a sort by (-score, id). Padding (id -1, score -inf: a shard
with fewer than K unseen items) sorts last and stays padding, as in `full_ranking`.

The metrics are then `recgrad.metrics.per_user_metrics` of the merged lists, averaged over the
users with a relevant item: the numbers `recgrad.evaluation.full_ranking` gives for the same
scores. The scores themselves are the same dot products computed by a GEMM per shard instead
of one over the catalogue; BLAS may round a product differently for another matrix shape
(last-bit differences that can swap two nearly tied items). With exactly representable tables
(small integers) the scores are exact and the results equal bit for bit (tested).
"""

import numpy as np

from recgrad.metrics import METRIC_NAMES, _check_ks, _check_metric_names, per_user_metrics

__all__ = ["merge_top_k", "metrics_from_top_k"]


def merge_top_k(ids, scores, k):
    """The top k of each row over several shards' top lists: (ids, scores), both (n, k).

    ids, scores: sequences of (n, k_s) arrays, one per shard (global ids, padding -1 / -inf). Order:
    higher score first, equal scores by lower id; an id scoring -inf is padding (-1).
    """
    all_ids = np.concatenate([np.asarray(part, np.int64) for part in ids], axis=1)
    all_scores = np.concatenate([np.asarray(part) for part in scores], axis=1)
    if all_ids.shape != all_scores.shape:
        raise ValueError(f"ids and scores disagree in shape: {all_ids.shape} vs {all_scores.shape}")
    padding = np.isneginf(all_scores) | (all_ids < 0)
    key_ids = np.where(padding, np.iinfo(np.int64).max, all_ids)
    key_scores = np.where(padding, np.inf, -all_scores)
    order = np.lexsort((key_ids, key_scores), axis=-1)[:, :k]
    top_ids = np.take_along_axis(all_ids, order, axis=1)
    top_scores = np.take_along_axis(all_scores, order, axis=1)
    short = np.take_along_axis(padding, order, axis=1)
    top_ids[short] = -1
    top_scores[short] = -np.inf
    if top_ids.shape[1] < k:  # fewer candidates than k in all shards together
        extra = k - top_ids.shape[1]
        top_ids = np.pad(top_ids, ((0, 0), (0, extra)), constant_values=-1)
        top_scores = np.pad(top_scores, ((0, 0), (0, extra)), constant_values=-np.inf)
    return top_ids, top_scores


def metrics_from_top_k(ids, relevant, ks=(20,), metrics=("recall", "ndcg")):
    """{"recall@20": ..., "users": n}: the per-user metrics of ranked ids (n, K) against `relevant`
    (CSR, n rows, each with a relevant item), averaged as `recgrad.evaluation.full_ranking` does."""
    ks = _check_ks(ks)
    names = _check_metric_names(metrics, METRIC_NAMES)
    values = per_user_metrics(ids, relevant, ks, names)
    result = {key: float(np.mean(value)) if len(value) else float("nan") for key, value in values.items()}
    result["users"] = int(ids.shape[0])
    return result
