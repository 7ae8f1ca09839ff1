"""SimpleX's cosine contrastive loss over a dot-product model's user and item representations.

    L = mean_b (1 - cos(a_b, p_b)) + w / K sum_k max(0, cos(a_b, n_bk) - m)

a_b = model.encode("user", u_b), p_b and n_bk = model.encode("item", ...); the negatives are the
user's own (B, K) or shared by the batch (K,), encoded once per batch. The loss and its gradient
are `recgrad.losses.CosineContrastiveLoss` (Mao et al., CIKM 2021). The loss is on cosines
whatever the model scores with: train an MF(normalize=True) to rank by the cosine it learns (a
plain MF then ranks by the dot product, each cosine times the item's norm).
"""

from __future__ import annotations

import numpy as np

from recgrad.losses import CosineContrastiveLoss
from recgrad.models.base import Recommender

__all__ = ["CCLObjective"]


class CCLObjective:
    """CCL through `model.encode` / `model.encode_backward`.

    Args:
        margin: m in [-1, 1); a negative costs nothing below it. negative_weight: w >= 0, the weight
            of the mean over the K negatives.
    """

    def __init__(self, margin: float = 0.9, negative_weight: float = 1.0) -> None:
        self.loss = CosineContrastiveLoss(margin=margin, negative_weight=negative_weight)

    def __call__(self, model: Recommender, users: np.ndarray, positives: np.ndarray,
                 negatives: np.ndarray | None) -> float:
        if negatives is None:
            raise ValueError("negatives: the cosine contrastive loss needs drawn negatives, not in-batch ones")
        batch = users.size
        anchor = model.encode("user", users)
        item_vectors = model.encode("item", np.concatenate([positives, negatives.reshape(-1)]))
        dim = item_vectors.shape[1]
        negative_in = item_vectors[batch:]
        if negatives.ndim == 2:
            negative_in = negative_in.reshape(batch, negatives.shape[1], dim)
        loss = self.loss(anchor, item_vectors[:batch], negative_in)
        d_anchor, d_positive, d_negatives = self.loss.backward()
        model.encode_backward("user", d_anchor)
        model.encode_backward("item", np.concatenate([d_positive, d_negatives.reshape(-1, dim)]))
        return float(loss)
