"""InfoNCE (sampled softmax) over a dot-product model's user and item representations.

    L = mean_b -log softmax([s(a_b, p_b), s(a_b, n_1), ..., s(a_b, n_K)] / tau)[0]

a_b = model.encode("user", u_b), p_b and n_k = model.encode("item", ...); s is the dot product or
the cosine; the negatives are the user's own (B, K), shared by the batch (K,) or the batch's other
positives (None). The loss and its gradient are `recgrad.losses.InfoNCELoss` (van den Oord et al.,
2018; as a recommender loss: sampled softmax, e.g. Yi et al., RecSys 2019).

Log-Q correction (Yi et al., RecSys 2019): every logit, the positive's included, becomes
s(a, v) / tau - log q(v), with q the distribution the negatives were drawn from (`log_q`). It is
computed by augmenting the vectors, a' = [a, 1] and v' = [v, -tau log q(v)], so that
<a', v'> / tau is the corrected logit and the dot-product InfoNCE applies unchanged; with cosine
similarity a and v are normalised first, and the gradient goes back through the normalisation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from recgrad.losses import InfoNCELoss, l2_normalize, l2_normalize_backward
from recgrad.models.base import Recommender

__all__ = ["InfoNCEObjective"]


class InfoNCEObjective:
    """InfoNCE through `model.encode` / `model.encode_backward`.

    Args:
        temperature: tau > 0. similarity: "dot" or "cosine".
        log_q: None, or a function item ids -> log q(item) (e.g. the negatives' `log_q`), which
            turns on the log-Q correction.
    """

    def __init__(self, temperature: float = 0.1, similarity: str = "dot",
                 log_q: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        if similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity: expected 'dot' or 'cosine', got {similarity!r}")
        self.temperature, self.similarity, self.log_q = float(temperature), similarity, log_q
        # With log-Q the similarity is taken in `_augment` and the augmented vectors go to the dot InfoNCE.
        self.loss = InfoNCELoss(temperature=self.temperature, similarity="dot" if log_q else similarity)

    def __call__(self, model: Recommender, users: np.ndarray, positives: np.ndarray,
                 negatives: np.ndarray | None) -> float:
        batch = users.size
        negative_ids = np.empty(0, dtype=np.int64) if negatives is None else negatives.reshape(-1)
        items = np.concatenate([positives, negative_ids])
        anchor = model.encode("user", users)
        item_vectors = model.encode("item", items)
        normalized = None
        if self.log_q is not None:
            anchor, item_vectors, normalized = self._augment(anchor, item_vectors, self.log_q(items))
        dim = item_vectors.shape[1]
        positive_in, negative_in = item_vectors[:batch], item_vectors[batch:]
        if negatives is None:
            negative_in = None
        elif negatives.ndim == 2:
            negative_in = negative_in.reshape(batch, negatives.shape[1], dim)
        loss = self.loss(anchor, positive_in, negative_in)
        grads = self.loss.backward()
        d_anchor = grads[0]
        d_items = np.concatenate([grads[1]] + ([] if negative_in is None else [grads[2].reshape(-1, dim)]))
        if self.log_q is not None:
            d_anchor, d_items = d_anchor[:, :-1], d_items[:, :-1]  # the augmented column is a constant
            if normalized is not None:
                (anchor_unit, anchor_norm), (item_unit, item_norm) = normalized
                d_anchor = l2_normalize_backward(d_anchor, anchor_unit, anchor_norm)
                d_items = l2_normalize_backward(d_items, item_unit, item_norm)
        model.encode_backward("user", d_anchor)
        model.encode_backward("item", d_items)
        return float(loss)

    def _augment(self, anchor, items, log_q):
        """(a', v', normalisation caches or None) with <a', v'> / tau = s(a, v) / tau - log q(v)."""
        normalized = None
        if self.similarity == "cosine":
            normalized = (l2_normalize(anchor), l2_normalize(items))
            anchor, items = normalized[0][0], normalized[1][0]
        column = (-self.temperature * log_q).astype(items.dtype)[:, None]
        anchor_aug = np.concatenate([anchor, np.ones((anchor.shape[0], 1), dtype=anchor.dtype)], axis=1)
        return anchor_aug, np.concatenate([items, column], axis=1), normalized
