"""Refit: after the validation set has chosen the epoch, train again on every training interaction.

The validation set is carved from the training interactions (`recgrad.data.with_validation`), so the
model it selects never saw them. A refit trains a fresh model with the same settings and seed on
train + validation and stops after the selected epoch. The learning-rate schedule is the first
run's (a cosine over `epochs`, stopped at the chosen epoch), so the refit follows the same path on
more data; it has nothing left to select on and evaluates nothing until the test set, once, at the
end. The cost is a second run of `best_epoch` epochs. sklearn's `GridSearchCV(refit=True)` and the
tuned peers of scripts/peers.py do the same.

Whether a run refits is the `refit` setting; by default (`wants_refit`) it does when the
validation set holds out the full 10% of every user's interactions (data of at most 250,000
training interactions); on larger data it holds about 25,000, a few percent, and a second run
would cost more than those interactions bring (docs/results.md, "The default run").
"""

import dataclasses
import os

import scipy.sparse as sp

from recgrad.data import Dataset
from recgrad.evaluation import evaluate_recommender
from recgrad.train import build
from recgrad.train import settings as run_settings
from recgrad.train.callbacks import Callback, evaluate_test, write_test_metrics
from recgrad.train.checkpoint import atomic_write

__all__ = ["StopAfter", "merged_training", "refit", "wants_refit", "refit_run"]

TEST_FIELDS = ("test", "test_users", "test_items", "test_negatives")  # what the refit must not see


class StopAfter(Callback):
    """End the run after `epochs` epochs, whatever the schedule's length (the refit's chosen epoch)."""

    def __init__(self, epochs):
        self.epochs = int(epochs)

    def on_epoch_end(self, trainer, record):
        if trainer.epoch >= self.epochs:
            trainer.stop_training = True


def merged_training(dataset: Dataset) -> Dataset:
    """`dataset` with its validation interactions moved back into train (no validation set left).

    The training timestamps are dropped: they were aligned with the train matrix before the merge.
    """
    if dataset.validation is None:
        raise ValueError("dataset: no validation set to merge into train")
    train = sp.csr_matrix(dataset.train.maximum(dataset.validation), dtype=dataset.train.dtype)  # a pair in both: once
    train.sort_indices()
    return dataclasses.replace(dataset, train=train, validation=None, train_timestamps=None)


def wants_refit(values: dict, dataset: Dataset) -> bool:
    """Whether a run on `dataset` refits: never without validation selection on a validation set;
    else the `refit` setting when given, and by default when the validation set holds out the full
    ratio, that is on data of at most VALIDATION_SIZE / VALIDATION_RATIO training interactions."""
    if values.get("selection") != "validation" or dataset.validation is None:
        return False
    if values.get("refit") is not None:
        return bool(values["refit"])
    return dataset.train.nnz + dataset.validation.nnz <= build.VALIDATION_SIZE / build.VALIDATION_RATIO


def refit(values: dict, dataset: Dataset, epochs: int, cluster=None, progress=False):
    """A Trainer that trained a fresh model (`values`' settings and seed) on train + validation for
    `epochs` epochs. It sees neither the validation nor the test set: it evaluates and selects
    nothing, and its model is the last epoch's."""
    from recgrad.train import Trainer

    merged = merged_training(dataset)
    model = build.build_model(values, merged.n_users, merged.n_items, merged.train)
    trainer = Trainer(model, callbacks=[StopAfter(epochs)], progress=progress, cluster=cluster,
                      **{name: values[name] for name in run_settings.trainer_settings()})
    trainer.fit(dataclasses.replace(merged, **dict.fromkeys(TEST_FIELDS)))
    return trainer


def refit_run(values: dict, dataset: Dataset, result: dict, out_dir, cluster=None, progress=False) -> dict:
    """Refit a finished run (`Trainer.fit`'s `result`, selected on validation) into `out_dir`.

    The refit ranks with the popularity prior's beta the run chose (`recgrad.train.popularity_prior`),
    on the counts of train + validation. RUN/best.npz becomes the refit model (what `recgrad evaluate`
    and `recgrad recommend` use) and
    RUN/test_metrics.json its test metrics, beside those of the selected model; the other files
    (metrics.jsonl, last.npz, the checkpoint) stay the selection run's. Returns `result` with
    "refit_epochs", "selected_test_metrics" and "test_metrics" (the refit model's).
    """
    chosen = {"popularity_prior": result["popularity_prior"]} if values.get("popularity_prior") else {}
    trainer = refit({**values, **chosen}, dataset, result["best_epoch"], cluster=cluster, progress=progress)
    merged = dataclasses.replace(trainer.dataset, **{name: getattr(dataset, name) for name in TEST_FIELDS})
    metrics = protocol = None
    if merged.test is not None or merged.test_negatives is not None:
        evaluate = evaluate_recommender if cluster is None else cluster.evaluate
        metrics, protocol = evaluate_test(trainer.model, merged, tuple(result["topk"]), evaluate)
    if out_dir is not None:
        atomic_write(os.path.join(out_dir, "best.npz"), lambda handle: trainer.model.save(handle))
        if metrics is not None:
            about = {"epoch": result["best_epoch"], "refit": True, "selected_model": result["test_metrics"]}
            if trainer.popularity_prior:
                about["popularity_prior"] = trainer.popularity_prior
            write_test_metrics(out_dir, about, metrics, protocol)
    return {**result, "refit_epochs": trainer.epoch, "selected_test_metrics": result["test_metrics"],
            "test_metrics": metrics, "test_protocol": protocol}
