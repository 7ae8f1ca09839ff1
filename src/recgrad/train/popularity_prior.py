"""The popularity prior: rank by s(u, i) + beta log(1 + n_i), n_i the item's training interactions.

A model that scores by the cosine (an MF or two-tower with normalize, e.g. trained with CCL) is blind
to popularity by construction: every item vector has length 1. When the items a user will pick next
are more popular than the cosine alone predicts (a split in time, where the catalogue's popular items
keep drawing the new interactions), adding a popularity term to the ranking recovers it. The term is
fixed, not trained: the model is trained as before and `FactorModel.set_item_prior` adds
beta log(1 + n_i) wherever it ranks (evaluation, recommend, serving). This is the "adjusting" step of
PDA (Zhang et al., "Causal Intervention for Leveraging Popularity Bias in Recommendation", SIGIR
2021: ranking by f(u, i) * m_i^gamma, here in log space with the log-count as the popularity), and the
logit adjustment of Menon et al. (ICLR 2021) with the sign that favours the popular items.

beta is a number, or "auto": chosen on the evaluation split (the validation set under selection
"validation") for the selected epoch's model, from 0 and a geometric grid scaled to the model's
scores: beta = ratio * spread(s) / spread(log(1 + n)), ratio in 2^(-k/2) for k = 0..14 (1 down to
1/128), spread the standard deviation (of the scores over all items for each of the users evaluated,
averaged; of the log-counts over the items). Measured on Gowalla (docs/results.md): the cosine MF of
`recipes/gowalla-mf-best.toml` gains about 0.009 Recall@20 and 0.012 NDCG@20 on the test set with the
beta the validation set chooses; a dot-product MF-BPR gains nothing (its item norms already carry
popularity), and the search chooses 0 there or close to it.
"""

import os

import numpy as np

from recgrad.evaluation import evaluate_recommender
from recgrad.train.callbacks import Callback
from recgrad.train.checkpoint import atomic_write

__all__ = ["PopularityPrior", "log_counts", "beta_grid"]

RATIOS = tuple(2.0 ** (-k / 2) for k in range(15))


def log_counts(train):
    """log(1 + n_i) for every item of the training matrix (n_i its stored interactions), float64."""
    counts = np.bincount(train.tocsr().indices, minlength=train.shape[1])
    return np.log1p(counts.astype(np.float64))


def beta_grid(model, users, popularity):
    """0 and the betas of RATIOS scaled by spread(scores) / spread(popularity) (module doc)."""
    model.set_item_prior(None)
    scores = model.score_all(users)
    spread = float(np.mean(np.std(scores, axis=1, dtype=np.float64)))
    scale = spread / max(float(np.std(popularity)), 1e-12)
    return [0.0] + [ratio * scale for ratio in RATIOS]


class PopularityPrior(Callback):
    """Apply the popularity prior (module doc) to a FactorModel's rankings.

    beta a number: the prior is in place from the start, in every evaluation. beta "auto": the epochs
    are evaluated and selected without it; at the end the selected model's beta is chosen on the
    evaluation split by the selection metric (ties: the smaller beta), set on the model, and best.npz
    and last.npz are written again with it (with an out_dir). Sets trainer.popularity_prior (the
    beta in use) and adds {"popularity_prior": beta, "metric at beta": value, ...} as
    trainer.prior_search. Must run before `TestReport`, which evaluates the selected model as it
    leaves it here.
    """

    def __init__(self, beta, out_dir=None, evaluate=evaluate_recommender):
        self.beta, self.out_dir, self.evaluate_fn = beta, out_dir, evaluate

    def on_fit_start(self, trainer):
        self.popularity = log_counts(trainer.train)
        trainer.prior_search = None
        fixed = 0.0 if self.beta == "auto" else float(self.beta)
        self._set(trainer.model, fixed)
        trainer.popularity_prior = fixed

    def _set(self, model, beta):
        model.set_item_prior(None if beta == 0 else beta * self.popularity)

    def on_fit_end(self, trainer):
        best = trainer.best_parameters()
        if self.beta != "auto" or trainer.eval_split is None or best is None:
            return
        model, dataset = trainer.model, trainer.dataset
        last = model.state_dict()
        model.load_state_dict(best)
        target = dataset.validation if trainer.eval_split == "validation" else dataset.test
        users = np.flatnonzero(np.diff(target.tocsr().indptr) > 0)
        sample = np.random.default_rng(0).choice(users, min(users.size, 1000), replace=False)
        search = {}
        chosen, chosen_value = 0.0, -np.inf
        for beta in beta_grid(model, np.sort(sample), self.popularity):
            self._set(model, beta)
            metrics = self.evaluate_fn(model, dataset, trainer.eval_split, ks=trainer.topk,
                                       metrics=(trainer.metric.partition("@")[0],))
            value = metrics[trainer.metric]
            search[f"{beta:.6g}"] = value
            if value > chosen_value:
                chosen, chosen_value = beta, value
        self._set(model, chosen)
        trainer.popularity_prior = chosen
        trainer.prior_search = {"popularity_prior": chosen, trainer.metric: chosen_value, "grid": search}
        if self.out_dir is not None:
            self._save(model, "best.npz")
        model.load_state_dict(last)
        if self.out_dir is not None:
            self._save(model, "last.npz")

    def _save(self, model, name):
        atomic_write(os.path.join(self.out_dir, name), lambda handle: model.save(handle))
