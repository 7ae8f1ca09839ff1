"""What happens around the training loop: evaluation, model selection, files, progress.

A callback is an object with any of these methods, called by `Trainer.fit` in list order:

    on_fit_start(trainer)              after set-up (and after a resumed run's state is loaded)
    on_batch_end(trainer, loss, size)  after each optimizer step of the NumPy loop (the compiled
                                       MF loop runs a whole epoch in one call and has no batch events)
    on_epoch_end(trainer, record)      record: the epoch's dict (epoch, loss, train_seconds, ...),
                                       already in trainer.history; a callback may add keys to it
    on_interrupt(trainer)              Ctrl-C: the batch finished, the run is about to stop
    on_fit_end(trainer)                the run finished (epochs done or stopped early)
    state_dict() / load_state_dict(s)  what an exact resume needs (saved in the checkpoint)

`trainer.stop_training = True` ends the run after the current epoch. Add your own by passing
`Trainer(..., callbacks=[MyCallback()])`; no subclassing. The Trainer's own list, in order:
Evaluation, ModelSelection, ModelFiles (with out_dir), ProgressPrinter (with progress),
Checkpointing, MetricsLog and LearningCurve (with out_dir).
"""

import json
import math
import os
import sys
import time

from tqdm.auto import tqdm

from recgrad.evaluation import evaluate_baseline, evaluate_recommender, protocol_for
from recgrad.metrics import METRIC_NAMES
from recgrad.train.checkpoint import atomic_write, save_checkpoint

__all__ = ["Callback", "Evaluation", "ModelSelection", "TestReport", "ModelFiles", "ProgressPrinter",
           "Checkpointing", "MetricsLog", "LearningCurve", "evaluate_test", "write_test_metrics"]


class Callback:
    """Every event as a no-op. Subclassing it is optional: any object with some of the methods works."""

    def on_fit_start(self, trainer):
        pass

    def on_batch_end(self, trainer, loss, size):
        pass

    def on_epoch_end(self, trainer, record):
        pass

    def on_interrupt(self, trainer):
        pass

    def on_fit_end(self, trainer):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class Evaluation(Callback):
    """Every `every` epochs (and after the last one) add the evaluation set's metrics to the record.

    The evaluation set, which selects the model, is the dataset's validation matrix (full ranking,
    training items masked) with selection "validation"; with selection "test", or when the data
    has no validation set, it is the test set: the sampled NCF protocol when the data has test
    negatives, else full ranking. The popularity baseline is evaluated once on the same set. Sets
    trainer.eval_split, eval_protocol, metric (the selection metric), topk and popularity.

    Args:
        every: evaluate every this many epochs. topk: cut-offs (default (20,), or (10,) for the
        sampled protocol). metric: "<name>@<K>" (default recall@20, or ndcg@10 sampled); its K is
        added to topk. selection: "validation" or "test" (above). evaluate: the function
        (model, dataset, split, ks, metrics) -> metrics that evaluates (default
        `recgrad.evaluation.evaluate_recommender`; `RayCluster.evaluate` shards it).
    """

    def __init__(self, every=1, topk=None, metric=None, selection="validation", evaluate=evaluate_recommender):
        self.every, self.topk_arg, self.metric_arg, self.selection = every, topk, metric, selection
        self.evaluate_fn = evaluate

    def plan(self, dataset):
        """(split, protocol, selection metric, cut-offs) for `dataset`; ValueError for a metric the
        protocol does not compute (checked before a run writes anything)."""
        if dataset.validation is not None and self.selection == "validation":
            split = "validation"
        elif dataset.test is not None or dataset.test_negatives is not None:
            split = "test"
        else:
            split = None
        protocol = None if split is None else protocol_for(dataset, split)
        sampled = protocol == "sampled"
        metric = self.metric_arg or ("ndcg@10" if sampled else "recall@20")
        name, _, k = metric.partition("@")
        allowed = ("hr", "ndcg") if sampled else METRIC_NAMES
        if name not in allowed or not k.isdigit() or int(k) < 1:
            raise ValueError(f"metric: expected '<name>@<K>' with name in {', '.join(allowed)}, got {metric!r}")
        topk = tuple(sorted(set(self.topk_arg or ((10,) if sampled else (20,))) | {int(k)}))
        return split, protocol, metric, topk

    def on_fit_start(self, trainer):
        dataset = trainer.dataset
        split, protocol, metric, topk = self.plan(dataset)
        trainer.eval_split, trainer.eval_protocol, trainer.metric, trainer.topk = split, protocol, metric, topk
        self.metric_names = tuple(dict.fromkeys(("recall", "ndcg", metric.partition("@")[0])))
        trainer.popularity = None
        if split is not None:
            trainer.popularity = evaluate_baseline(dataset, split, ks=trainer.topk, metrics=self.metric_names)
            trainer.popularity.pop("users", None)

    def due(self, trainer):
        return trainer.eval_split is not None and (trainer.epoch % self.every == 0 or trainer.epoch == trainer.epochs)

    def on_epoch_end(self, trainer, record):
        if not self.due(trainer):
            return
        start = time.perf_counter()
        record.update(self.evaluate(trainer))
        record["eval_seconds"] = time.perf_counter() - start

    def evaluate(self, trainer):
        """The current model's metrics on the evaluation set ({} when there is none)."""
        if trainer.eval_split is None:
            return {}
        metrics = self.evaluate_fn(trainer.model, trainer.dataset, trainer.eval_split, ks=trainer.topk,
                                   metrics=self.metric_names)
        metrics.pop("users", None)
        return metrics


class ModelSelection(Callback):
    """Track the best evaluation of trainer.metric (marks record["best"]); stop after `patience`
    evaluations without improvement (None: never). Sets trainer.best_epoch / best_value."""

    def __init__(self, patience=None):
        self.patience = patience
        self.bad_evaluations = 0

    def on_fit_start(self, trainer):
        if trainer.best_epoch is None:
            trainer.best_value = -math.inf

    def on_epoch_end(self, trainer, record):
        if trainer.metric not in record:
            return
        if record[trainer.metric] > trainer.best_value:
            trainer.best_value, trainer.best_epoch, self.bad_evaluations = record[trainer.metric], trainer.epoch, 0
            record["best"] = True
            trainer.best_state = {name: value.copy() for name, value in trainer.model.state_dict().items()}
            return
        self.bad_evaluations += 1
        if self.patience is not None and self.bad_evaluations >= self.patience:
            trainer.stop_training = trainer.stopped_early = True

    def state_dict(self):
        return {"bad_evaluations": self.bad_evaluations}

    def load_state_dict(self, state):
        self.bad_evaluations = state["bad_evaluations"]


class TestReport(Callback):
    """When the model was selected on validation data: the selected model's metrics on the test set,
    evaluated once, at the end (trainer.test_metrics, trainer.test_protocol; RUN/test_metrics.json
    with an out_dir). The model left in the trainer is the last epoch's, as before. evaluate: as
    `Evaluation`'s."""

    def __init__(self, out_dir=None, evaluate=evaluate_recommender):
        self.out_dir = out_dir
        self.evaluate_fn = evaluate

    def on_fit_end(self, trainer):
        dataset = trainer.dataset
        trainer.test_metrics = trainer.test_protocol = None
        if trainer.eval_split != "validation" or (dataset.test is None and dataset.test_negatives is None):
            return
        best = trainer.best_parameters()
        if best is None:
            return
        last = trainer.model.state_dict()
        trainer.model.load_state_dict(best)
        try:
            trainer.test_metrics, trainer.test_protocol = evaluate_test(trainer.model, dataset, trainer.topk,
                                                                        self.evaluate_fn)
        finally:
            trainer.model.load_state_dict(last)
        if self.out_dir is not None:
            about = {"epoch": trainer.best_epoch}
            if trainer.popularity_prior:
                about["popularity_prior"] = trainer.popularity_prior
            if trainer.prior_search:
                about["popularity_prior_search"] = trainer.prior_search["grid"]
            write_test_metrics(self.out_dir, about, trainer.test_metrics, trainer.test_protocol)


def evaluate_test(model, dataset, topk, evaluate=evaluate_recommender):
    """(metrics, protocol) of `model` on the test split: HR@10 and NDCG@10 under the sampled NCF
    protocol, else Recall and NDCG at `topk` by full ranking (training and validation items masked)."""
    protocol = protocol_for(dataset, "test")
    sampled = protocol == "sampled"
    result = evaluate(model, dataset, "test", ks=(10,) if sampled else topk,
                      metrics=("hr", "ndcg") if sampled else ("recall", "ndcg"))
    result.pop("users", None)
    return result, protocol


def write_test_metrics(out_dir, about, metrics, protocol):
    """RUN/test_metrics.json (atomic): `about` (the epoch, ...), the protocol and the metrics."""
    text = json.dumps({**about, "protocol": protocol, **metrics}, indent=2) + "\n"
    atomic_write(os.path.join(out_dir, "test_metrics.json"), lambda handle: handle.write(text.encode()))


class ModelFiles(Callback):
    """RUN/last.npz after every epoch and RUN/best.npz at every new best (`Recommender.save`, atomic)."""

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_epoch_end(self, trainer, record):
        if record.get("best"):
            self.save(trainer, "best.npz")
        self.save(trainer, "last.npz")

    def save(self, trainer, name):
        atomic_write(os.path.join(self.out_dir, name), lambda handle: trainer.model.save(handle))


class ProgressPrinter(Callback):
    """A tqdm bar over the batches (on a terminal only) and one line per epoch on stderr."""

    def __init__(self):
        self.bar = None

    def on_batch_end(self, trainer, loss, size):
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            self.bar = tqdm(total=trainer.batches_per_epoch, initial=trainer.batch - 1, leave=False, unit="batch",
                            desc=f"epoch {trainer.epoch + 1}/{trainer.epochs}", file=sys.stderr)
        self.bar.update(1)
        if trainer.batch % 10 == 0 or trainer.batch == trainer.batches_per_epoch:
            self.bar.set_postfix(loss=f"{trainer.loss_sum / trainer.samples:.4f}",
                                 samples_per_s=f"{trainer.samples / max(trainer.seconds, 1e-9):.0f}")

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_epoch_end(self, trainer, record):
        self.close()
        tqdm.write(self.line(trainer, record), file=sys.stderr)

    def on_interrupt(self, trainer):
        self.close()

    @staticmethod
    def line(trainer, record):
        parts = [f"epoch {record['epoch']}/{trainer.epochs}", f"loss {record['loss']:.5f}",
                 f"{record['train_seconds']:.1f}s", f"{record['samples_per_second']:.0f} samples/s"]
        if trainer.metric in record:
            keys = [key for key in record if "@" in key]
            parts.append(" ".join(f"{key} {record[key]:.4f}" for key in keys))
            if trainer.popularity is not None:
                parts.append("(popularity " + " ".join(f"{key} {trainer.popularity[key]:.4f}" for key in keys) + ")")
            if record.get("best"):
                parts.append("*")
        if trainer.stopped_early:
            parts.append(f"early stop: no {trainer.metric} gain in {trainer.patience} evaluations")
        return "  ".join(parts)


class Checkpointing(Callback):
    """RUN/checkpoint.npz (`Trainer.state_dict()`, atomic) after every epoch and on Ctrl-C."""

    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, "checkpoint.npz")

    def on_epoch_end(self, trainer, record):
        save_checkpoint(self.path, trainer.state_dict())

    def on_interrupt(self, trainer):
        save_checkpoint(self.path, trainer.state_dict())


class MetricsLog(Callback):
    """RUN/metrics.jsonl: one JSON object per epoch. At the start it is rewritten from the history
    (empty for a new run), so after a resume it agrees with the checkpoint."""

    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, "metrics.jsonl")

    def on_fit_start(self, trainer):
        text = "".join(json.dumps(record) + "\n" for record in trainer.history)
        atomic_write(self.path, lambda handle: handle.write(text.encode()))

    def on_epoch_end(self, trainer, record):
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


class LearningCurve(Callback):
    """RUN/learning_curve.png: the training loss and the selection metric (with popularity) per epoch,
    redrawn after each evaluation and at the end."""

    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, "learning_curve.png")
        self.drawn = None  # (epochs, best epoch) of the figure on disk

    def on_epoch_end(self, trainer, record):
        if trainer.metric in record:
            self.draw(trainer)

    def on_fit_end(self, trainer):
        if self.drawn != (len(trainer.history), trainer.best_epoch):  # the last epoch is usually drawn already
            self.draw(trainer)

    def draw(self, trainer):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        history = trainer.history
        figure = Figure(figsize=(9, 3.5), layout="constrained")
        FigureCanvasAgg(figure)
        loss_axis, metric_axis = figure.subplots(1, 2)
        loss_axis.plot([r["epoch"] for r in history], [r["loss"] for r in history], marker=".")
        loss_axis.set(xlabel="epoch", ylabel="training loss", title=f"{trainer.loss} loss")
        evaluated = [r for r in history if trainer.metric in r]
        metric_axis.plot([r["epoch"] for r in evaluated], [r[trainer.metric] for r in evaluated], marker=".",
                         label="model")
        if trainer.popularity is not None:
            metric_axis.axhline(trainer.popularity[trainer.metric], color="gray", linestyle="--", label="popularity")
        if trainer.best_epoch is not None:
            metric_axis.axvline(trainer.best_epoch, color="green", linestyle=":",
                                label=f"best (epoch {trainer.best_epoch})")
        metric_axis.set(xlabel="epoch", ylabel=trainer.metric, title=f"{trainer.metric} on {trainer.eval_split}")
        for axis in (loss_axis, metric_axis):
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        figure.legend(*metric_axis.get_legend_handles_labels(), loc="outside lower center", ncols=3)
        atomic_write(self.path, lambda handle: figure.savefig(handle, format="png"))
        self.drawn = (len(history), trainer.best_epoch)
