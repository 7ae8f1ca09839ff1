"""Pairwise objectives on a recommender's scores s = model(u, [i, j_1 .. j_K]), shape (B, 1+K).

    BPR  L = mean_{b,k} softplus(s_bk - s_b0)          (Rendle et al., UAI 2009; LightGCN's loss)
    BCE  L = mean BCE-with-logits(s, [1, 0, .., 0])    (NCF's log loss: He et al., WWW 2017)

The losses and their gradients are `recgrad.losses.BPRLoss` and `BCEWithLogitsLoss`; the score
gradient is sent back through `model.backward`, which leaves the parameters' gradients.
Negatives: (B, K) per user, or (K,) shared by the batch (broadcast to every user).
"""

from __future__ import annotations

import numpy as np

from recgrad.losses import BCEWithLogitsLoss, BPRLoss
from recgrad.models.base import Recommender

__all__ = ["BPRObjective", "BCEObjective"]


def _scores(model, users, positives, negatives):
    if negatives is None:
        raise ValueError("negatives: a pairwise objective needs drawn negatives, not in-batch ones")
    if negatives.ndim == 1:
        negatives = np.broadcast_to(negatives, (users.size, negatives.size))
    return model.forward(users, np.concatenate([positives[:, None], negatives], axis=1))


class BPRObjective:
    """Bayesian personalised ranking: softplus(s_neg - s_pos), averaged over the batch and the K negatives."""

    def __init__(self):
        self.loss = BPRLoss()

    def __call__(self, model: Recommender, users: np.ndarray, positives: np.ndarray,
                 negatives: np.ndarray | None) -> float:
        scores = _scores(model, users, positives, negatives)
        loss = self.loss(scores[:, 0], scores[:, 1:])
        d_pos, d_neg = self.loss.backward()
        model.backward(np.concatenate([d_pos[:, None], d_neg], axis=1))
        return float(loss)


class BCEObjective:
    """Binary cross-entropy with logits: the positive labelled 1, each negative 0, averaged over B (1+K)."""

    def __init__(self):
        self.loss = BCEWithLogitsLoss()

    def __call__(self, model: Recommender, users: np.ndarray, positives: np.ndarray,
                 negatives: np.ndarray | None) -> float:
        scores = _scores(model, users, positives, negatives)
        labels = np.zeros(scores.shape, dtype=scores.dtype)
        labels[:, 0] = 1.0
        loss = self.loss(scores, labels)
        model.backward(self.loss.backward())
        return float(loss)
