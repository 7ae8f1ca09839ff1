"""Fold-in of one new user (numba): SGD on the user's row alone, the item table frozen.

Reference and test oracle: `recgrad.serving.foldin.fold_in_reference` (NumPy, the loss classes
of `recgrad.losses`). The step is the hogwild SGD step of the fused MF training loop
(`recgrad.kernels.mf`, module doc) restricted to the user's row: for step t with positive
i = order[t] and candidates c = [i, j_1, ..., j_K],

    p <- p - lr_t (beta p + sum_k alpha_k Q[c_k] + l2 p)

where alpha, beta are the sample's loss-gradient coefficients (`kernels.mf._coefficients`: BPR,
BCE, InfoNCE or CCL; dot or cosine) and l2 p is LightGCN's batch L2 at B = 1. The item rows get no
update. lr_t = lr (1 + cos(pi t / steps)) / 2 anneals the rate to 0 over the steps (an SGD whose
rate goes to 0 converges on the strongly convex objective that the frozen table leaves).

Negatives: `negatives` (steps, K C) when given (the tests pass the reference's), else drawn
uniformly over the items with the training loop's generator and collision rule (a draw that is
one of the user's `positives` is re-drawn); with C > 1 (dynamic negative sampling) negative k is
the best-scoring of draws kC .. kC + C - 1 under the current p (`kernels.mf._hardest`).
"""

import math

import numba
import numpy as np

from recgrad.kernels.mf import _coefficients, _draw_negatives, _hardest, _stream

LOSSES = {"bpr": 0, "bce": 1, "infonce": 2, "ccl": 3}


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "nsz", "contract"})
def fold_in_steps(user, items, order, positives, negatives, k, per, loss, w, cosine, inv_tau, margin, negative_weight,
                  lr, l2, key):
    """Run len(order) SGD steps on user[0] in place.

    user (1, dim): the start vector, overwritten. items (n_items, dim), same dtype: frozen.
    order (steps,) int64: the positive of each step. positives: the user's items, sorted int32
    (the collision rule). negatives (steps, k * per) int64, or shape (0, k * per) to draw them
    from the stream `key` (uint64). loss: LOSSES code; w: one sample's weight in the loss's mean
    (BPR 1/K, BCE 1/(K+1), InfoNCE and CCL 1). cosine: score by the cosine (True for CCL).
    inv_tau: InfoNCE's 1 / tau; margin, negative_weight: CCL's.
    """
    steps = order.size
    k1 = k + 1
    dim = user.shape[1]
    indptr = np.array([0, positives.size], np.int64)
    no_alias_prob = np.zeros(0)
    no_alias_item = np.zeros(0, np.int64)
    no_log_q = np.zeros(0)
    state = _stream(key, 0)
    raw = np.empty(k * per, np.int64)
    cand = np.empty(k1, np.int64)
    alpha = np.empty(k1)
    gamma = np.empty(k1)
    grad = np.empty(dim, user.dtype)
    pu = user[0]
    for t in range(steps):
        rate = user.dtype.type(0.5 * lr * (1.0 + math.cos(math.pi * t / steps)))
        if negatives.shape[0]:
            raw[:] = negatives[t]
        else:
            state = _draw_negatives(state, 0, items.shape[0], indptr, positives, no_alias_prob, no_alias_item,
                                    True, raw)
        cand[0] = order[t]
        if per == 1:
            cand[1:] = raw
        else:
            _hardest(user, items, 0, raw, per, cosine, cand[1:])
        _, beta, _ = _coefficients(user, items, 0, cand, k1, loss, cosine, inv_tau, margin, negative_weight, no_log_q,
                                   w, alpha, gamma)
        own = user.dtype.type(beta + l2)
        for d in range(dim):
            grad[d] = own * pu[d]
        for j in range(k1):
            a = user.dtype.type(alpha[j])
            q = items[cand[j]]
            for d in range(dim):
                grad[d] += a * q[d]
        for d in range(dim):
            pu[d] -= rate * grad[d]
