"""Fold-in: the vector of a user who was not in the training data, against the frozen item table.

With the item vectors Q fixed, the part of the training objective that involves one user's row p
is, per training interaction (p, i) with sampled negatives j_1..j_K (the Trainer's module doc),

    l(p; i, j) + l2/2 |p|^2        l = BPR, BCE, InfoNCE or CCL of the scores <p, Q[c]> (or cosines)

and training visits it once per epoch per interaction. `FoldIn` minimises its average over the
user's items by the same SGD step the compiled training loop takes (`recgrad.kernels.foldin`),
on p alone: `steps` steps that cycle through the user's items in shuffled order, rate annealed
from `lr` to 0, starting from the mean of the user's item vectors (a point where every one of
their items already scores high; the zero vector has no direction to normalise for a cosine
model). For the dot product the objective is strongly convex in p (softplus and log-sum-exp of
linear functions plus the L2 term), so the annealed SGD approaches its unique minimiser.

Why it approximates training: a trained user's row is the minimiser of that same sum while the
item rows moved with it; fold-in keeps them where training left them. What differs is the
sampler (uniform here; a popularity or in-batch sampler in training is approximated by uniform
draws) and, for dynamic negative sampling, that the hard negatives are picked under p as it is
now, as training picks them. docs/serving.md measures how close the rankings land.

TwoTower: the user tower is not inverted; the fold-in vector lives in the tower's output space
(the item side's `item_factors`), with l2 applied to it as to an embedding row.
"""

import dataclasses

import numpy as np

from recgrad._checks import non_negative_float, positive_float, positive_int
from recgrad.engine import use_compiled
from recgrad.losses import (
    BCEWithLogitsLoss,
    BPRLoss,
    CosineContrastiveLoss,
    InfoNCELoss,
    l2_normalize,
    l2_normalize_backward,
)

LOSSES = ("bpr", "bce", "infonce", "ccl")
# Negatives per step when the run did not set them: the Trainer's defaults; in-batch InfoNCE
# (the batch's other positives) is approximated by this many uniform draws.
DEFAULT_NEGATIVES = {"bpr": 1, "bce": 4, "infonce": 64, "ccl": 256}


@dataclasses.dataclass(frozen=True)
class FoldIn:
    """The fold-in objective (the training run's loss and regulariser) and its optimiser.

    Args:
        loss: "bpr", "bce", "infonce" or "ccl" (the run's `loss`).
        negatives: negatives per step (the run's; None: DEFAULT_NEGATIVES[loss]).
        dns_candidates: dynamic negative sampling, each negative the best of this many draws.
        l2: the run's `l2` (LightGCN's batch L2 at one sample per step).
        temperature: InfoNCE's. margin, negative_weight: CCL's.
        cosine: score by the cosine (a normalised model, or a cosine InfoNCE); always with CCL, a
            loss on cosines.
        steps: SGD steps (the cost: steps * (K C + K + 1) dot products of length dim).
        lr: the first step's rate, annealed to 0 by a cosine over the steps.
        seed: the negatives' stream; the same seed and history give the same vector.
    """

    loss: str = "bpr"
    negatives: int | None = None
    dns_candidates: int = 1
    l2: float = 0.0
    temperature: float = 0.1
    margin: float = 0.9
    negative_weight: float = 150.0
    cosine: bool = False
    steps: int = 3000
    lr: float = 0.05
    seed: int = 0

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {self.loss!r}")
        negatives = DEFAULT_NEGATIVES[self.loss] if self.negatives is None else self.negatives
        object.__setattr__(self, "negatives", positive_int(negatives, "negatives"))
        positive_int(self.dns_candidates, "dns_candidates")
        non_negative_float(self.l2, "l2")
        positive_float(self.temperature, "temperature")
        CosineContrastiveLoss(self.margin, self.negative_weight)  # checks both
        if self.loss == "ccl":
            object.__setattr__(self, "cosine", True)
        positive_int(self.steps, "steps")
        positive_float(self.lr, "lr")

    @classmethod
    def from_run_config(cls, config, model):
        """The objective a `recgrad train` run trained `model` with (its resolved config dict)."""
        negatives = config.get("negatives")
        if config["loss"] == "infonce" and config.get("negatives_mode") == "shared" and negatives is None:
            negatives = 1024  # the Trainer's shared-negatives default
        return cls(
            loss=config["loss"], negatives=negatives, dns_candidates=config.get("dns_candidates") or 1,
            l2=config.get("l2") or 0.0, temperature=config.get("temperature") or 0.1,
            margin=0.9 if config.get("margin") is None else config["margin"],
            negative_weight=150.0 if config.get("negative_weight") is None else config["negative_weight"],
            cosine=bool(getattr(model, "normalize", False)) or config.get("similarity") == "cosine",
            seed=config.get("seed") or 0,
        )

    def _plan(self, history, n_items):
        """(the positive of every step, the start stream key): seeded by `seed` and the history."""
        rng = np.random.default_rng([self.seed, *history.tolist()])
        rounds = -(-self.steps // history.size)
        order = history[np.argsort(rng.random((rounds, history.size)), axis=1)].reshape(-1)[: self.steps]
        key = np.uint64(rng.integers(0, 2**63))
        return order.astype(np.int64), key

    def vector(self, item_vectors, history, negatives=None, engine=None):
        """The folded-in user vector (dim,) for the item ids `history` against `item_vectors`.

        item_vectors: (n_items, dim) frozen table (a model's `item_factors()`). history: 1-D
        array of distinct item ids (at least one). negatives: optional (steps, K C) draws (the
        tests share them with the reference); None draws them. engine: recgrad.engine's choice
        between the compiled steps and `fold_in_reference`.
        """
        history = np.unique(np.asarray(history, dtype=np.int64))
        n_items = item_vectors.shape[0]
        if history.size == 0:
            raise ValueError("history: a new user needs at least one known item to fold in")
        if history.size >= n_items:
            raise ValueError("history: the user has every item, so there is no negative to rank against")
        order, key = self._plan(history, n_items)
        start = np.asarray(item_vectors[history].mean(axis=0), dtype=item_vectors.dtype)
        width = self.negatives * self.dns_candidates
        if negatives is None:
            negatives = np.zeros((0, width), dtype=np.int64)
        elif negatives.shape != (self.steps, width):
            raise ValueError(f"negatives: expected shape ({self.steps}, {width}), got {negatives.shape}")
        if not use_compiled(engine, True, "fold-in"):
            if negatives.shape[0] == 0:
                negatives = self.draw_negatives(history, n_items, order)
            return fold_in_reference(self, start, item_vectors, order, negatives)
        from recgrad.kernels.foldin import LOSSES as CODES
        from recgrad.kernels.foldin import fold_in_steps

        user = start[None, :].copy()
        fold_in_steps(user, np.ascontiguousarray(item_vectors), order, history.astype(np.int32),
                      np.ascontiguousarray(negatives, dtype=np.int64), self.negatives, self.dns_candidates,
                      CODES[self.loss], self.sample_weight(), self.cosine, 1.0 / self.temperature,
                      float(self.margin), float(self.negative_weight), float(self.lr),
                      float(self.l2), key)
        return user[0]

    def sample_weight(self):
        """One step's weight in the loss's mean over its scores: BPR averages K pairs, BCE K + 1
        logits, InfoNCE and CCL are one term per positive (`recgrad.losses`' "mean" reductions)."""
        return {"bpr": 1.0 / self.negatives, "bce": 1.0 / (self.negatives + 1), "infonce": 1.0, "ccl": 1.0}[self.loss]

    def draw_negatives(self, history, n_items, order):
        """(steps, K C) uniform item ids that are not in `history` (NumPy's generator, seeded)."""
        rng = np.random.default_rng([self.seed, 1, *order[:1].tolist()])
        draws = rng.integers(0, n_items, size=(self.steps, self.negatives * self.dns_candidates))
        while True:
            clash = np.isin(draws, history)
            if not clash.any():
                return draws
            draws[clash] = rng.integers(0, n_items, size=int(clash.sum()))


def fold_in_reference(fold, start, item_vectors, order, negatives):
    """The NumPy reference of `recgrad.kernels.foldin.fold_in_steps` (the test oracle).

    Step t: candidates [order[t], hardest negatives of negatives[t]]; the loss of `recgrad.losses`
    on their scores with p; p <- p - lr_t (dl/dp + l2 p), lr_t = lr (1 + cos(pi t / steps)) / 2.
    """
    p = np.array(start, copy=True)
    k, per = fold.negatives, fold.dns_candidates
    for t, positive in enumerate(order):
        rate = 0.5 * fold.lr * (1.0 + np.cos(np.pi * t / order.size))
        raw = negatives[t]
        draws = item_vectors[raw]
        if per > 1:  # dynamic negative sampling: the best of each group of `per` draws (the first of ties)
            scores = draws @ p
            if fold.cosine:
                scores = scores / np.maximum(np.linalg.norm(draws, axis=1), 1e-12)
            raw = raw.reshape(k, per)[np.arange(k), np.argmax(scores.reshape(k, per), axis=1)]
        q = item_vectors[np.concatenate([[positive], raw])]
        p_unit, p_norm = l2_normalize(p[None, :]) if fold.cosine else (p[None, :], None)
        q_unit = l2_normalize(q)[0] if fold.cosine else q
        if fold.loss == "infonce":
            loss = InfoNCELoss(temperature=fold.temperature, similarity="cosine" if fold.cosine else "dot")
            loss(p[None, :], q[None, 0], q[None, 1:])
            grad = loss.backward()[0][0]
        elif fold.loss == "ccl":
            loss = CosineContrastiveLoss(fold.margin, fold.negative_weight)
            loss(p[None, :], q[None, 0], q[None, 1:])
            grad = loss.backward()[0][0]
        else:
            scores = q_unit @ p_unit[0]
            if fold.loss == "bpr":
                loss = BPRLoss()
                loss(scores[None, 0], scores[None, 1:])
                d_pos, d_neg = loss.backward()
                d_scores = np.concatenate([d_pos, d_neg[0]])
            else:
                loss = BCEWithLogitsLoss()
                labels = np.zeros((1, k + 1), dtype=scores.dtype)
                labels[0, 0] = 1.0
                loss(scores[None, :], labels)
                d_scores = loss.backward()[0]
            grad_unit = d_scores @ q_unit
            grad = l2_normalize_backward(grad_unit[None, :], p_unit, p_norm)[0] if fold.cosine else grad_unit
        p = p - (rate * (grad + fold.l2 * p)).astype(p.dtype)
    return p
