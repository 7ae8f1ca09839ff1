"""The Trainer: batches of positives and negatives through an objective and an optimizer, epoch
after epoch, with callbacks for everything else.

One step of the NumPy loop (`Trainer.train_batch`), for a batch of B training pairs (u_b, i_b):

    negatives = negatives.draw(users, positives)     (B, K) per user, (K,) shared, None in-batch
    loss  = objective(model, users, positives, negatives)   leaves the gradients (recgrad.objectives)
    loss += regularizer(model, B)                    LightGCN's batch L2, gradient added to the rows
    optimizer.step() for each optimizer

An epoch visits every training interaction once in a seeded shuffle (or, with epoch_sampling
"users", draws nnz pairs user-first as the NGCF/LightGCN code does; `recgrad.samplers.epoch_order`).
Where the compiled MF loop computes the same algorithm (`recgrad.train.compiled_mf.covers`: MF
with per-user or shared negatives and any optimizer by name) and the engine allows it
(`recgrad.engine`), a whole epoch runs there instead, with no Python between the steps.

After each epoch the callbacks run (`recgrad.train.callbacks`): evaluation, model selection and
early stopping, the model files, progress, metrics.jsonl, the learning curve and the checkpoint.
Learning-rate schedule "cosine" anneals every optimizer's lr from `lr` to `lr_min` over the run's
epochs with `CosineAnnealingLR`, stepped once at the end of each epoch.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from recgrad import engine as engines
from recgrad.data import Dataset
from recgrad.evaluation import evaluate_recommender
from recgrad.models.base import FactorModel
from recgrad.nn.module import Module, RowSparseGrad
from recgrad.optim.optimizer import Optimizer
from recgrad.samplers import NegativeSampler, as_canonical_csr, epoch_batches
from recgrad.train import build, grow
from recgrad.train import settings as run_settings
from recgrad.train.callbacks import (
    Checkpointing,
    Evaluation,
    LearningCurve,
    MetricsLog,
    ModelFiles,
    ModelSelection,
    ProgressPrinter,
    TestReport,
)
from recgrad.train.checkpoint import CheckpointError, load_checkpoint
from recgrad.train.compiled_mf import CompiledMFLoop, covers
from recgrad.train.popularity_prior import PopularityPrior

__all__ = ["Trainer"]


class Trainer:
    """Train a recgrad recommender on a `recgrad.data.Dataset`.

    Args:
        model: a recommender (MF, TwoTower, GMF, MLP, NeuMF, LightGCN): forward(users, items (B, 1+K)) -> scores,
            backward(grad_scores). InfoNCE needs a dot-product model (MF, TwoTower, LightGCN).
        callbacks: extra callbacks (`recgrad.train.callbacks`), run after the Trainer's own
            evaluation and model selection and before its files are written.
        out_dir: run directory (created): metrics.jsonl, best.npz and last.npz, checkpoint.npz,
            learning_curve.png, test_metrics.json. None writes nothing (the best model is kept in
            `best_state` either way).
        progress: a progress bar on a terminal and one line per epoch on stderr.
        cluster: a started `recgrad.distributed.RayCluster`: the epochs run as distributed SGD over
            blocks on its workers and the full-ranking evaluations are sharded across them (MF,
            hogwild, uniform negatives: `settings.DISTRIBUTED`); None trains in this process.
        **settings: run settings, each declared with its default, allowed values and help in
            `recgrad.train.settings` (loss, optimizer, lr, lr_schedule, lr_min, batch_size, epochs,
            negatives, negatives_mode, dns_candidates, sampler, popularity_alpha, temperature,
            similarity, logq_correction, l2, weight_decay, epoch_sampling, engine, seed,
            eval_every, patience, topk, metric, popularity_prior). Two of them also take an object: optimizer=
            an `recgrad.optim.Optimizer` over model.parameters() (used as given), sampler= a
            `recgrad.samplers` sampler built for the training data.

    Evaluation set: the dataset's validation matrix when present; otherwise the sampled NCF
    protocol when it has test negatives; otherwise the test matrix (`callbacks.Evaluation`).
    """

    def __init__(self, model: Module, callbacks: Iterable = (), out_dir: str | os.PathLike | None = None,
                 progress: bool = True, cluster: Any = None, **settings: Any) -> None:
        if not isinstance(model, Module):
            raise TypeError(f"model: expected a recgrad Module (a recommender), got {type(model).__name__}")
        self.model = model
        optimizer, sampler = settings.get("optimizer"), settings.get("sampler")
        self._optimizer_object = optimizer if isinstance(optimizer, Optimizer) else None
        self._sampler_object = sampler if isinstance(sampler, NegativeSampler) else None
        if self._optimizer_object is not None:
            if settings.get("weight_decay") is not None:
                raise ValueError("weight_decay: set it on the optimizer instance you pass, not on the Trainer")
            settings["optimizer"] = "adam"  # resolve as a named minibatch optimizer; the object's class name below
        if self._sampler_object is not None:
            if settings.get("popularity_alpha") is not None:
                raise ValueError("popularity_alpha: set alpha on the sampler instance you pass")
            del settings["sampler"]
        kind = build.model_setting(model)  # the defaults depend on the model (DERIVED_DEFAULTS)
        names = run_settings.trainer_settings() + (("model",) if kind else ())
        self.settings = run_settings.resolve({**settings, "model": kind} if kind else settings, names=names)
        self.settings.pop("model", None)
        if self._optimizer_object is not None:
            self.settings["optimizer"] = type(self._optimizer_object).__name__
        if self._sampler_object is not None:
            self.settings["sampler"] = type(self._sampler_object).__name__
        values = self.settings
        if values["loss"] in ("infonce", "ccl") and not isinstance(model, FactorModel):
            raise ValueError(f"loss: {values['loss']!r} needs a dot-product model (MF, TwoTower, LightGCN), "
                             f"got {type(model).__name__}")
        if values["optimizer"] == "hogwild" and type(model).__name__ != "MF":
            raise ValueError(f"optimizer: 'hogwild' trains MF models only, got {type(model).__name__}")
        self.loss, self.epochs, self.patience = values["loss"], values["epochs"], values["patience"]
        self.out_dir = None if out_dir is None else os.fspath(out_dir)
        if self._optimizer_object is not None:
            self.optimizers, self._densify = [self._optimizer_object], []
        else:
            self.optimizers, self._densify = build.build_optimizers(values, model)
        self.schedulers = build.build_schedulers(values, self.optimizers)
        self.regularizer = build.build_regularizer(values)
        self.cluster = cluster
        evaluate = evaluate_recommender if cluster is None else cluster.evaluate
        self.evaluation = Evaluation(values["eval_every"], values["topk"], values["metric"], values["selection"],
                                     evaluate=evaluate)
        prior = values.get("popularity_prior") or 0.0
        if prior != 0.0 and not isinstance(model, FactorModel):
            raise ValueError(f"popularity_prior: ranks a dot-product model (MF, TwoTower, LightGCN), "
                             f"got {type(model).__name__}")
        self.popularity_prior, self.prior_search = 0.0, None
        selection = [self.evaluation, ModelSelection(values["patience"])]
        if prior != 0.0:  # before TestReport, which evaluates the selected model with the prior in place
            selection.append(PopularityPrior(prior, self.out_dir, evaluate))
        self.callbacks = [*selection, TestReport(self.out_dir, evaluate), *callbacks]
        if self.out_dir is not None:
            self.callbacks.append(ModelFiles(self.out_dir))
        if progress:
            self.callbacks.append(ProgressPrinter())
        if self.out_dir is not None:
            self.callbacks += [MetricsLog(self.out_dir), LearningCurve(self.out_dir), Checkpointing(self.out_dir)]
        self.history, self.best_state, self.popularity = [], None, None
        self.test_metrics = self.test_protocol = None
        self.metric, self.topk, self.eval_split, self.eval_protocol = values["metric"], values["topk"], None, None

    def config(self) -> dict:
        """The resolved settings (JSON-able): what the checkpoint records and a resume must match."""
        return dict(self.settings)

    # ----------------------------------------------------------------------------------- set-up
    def prepare(self, dataset: Dataset) -> None:
        """Set up for `dataset` (fit calls it): sampler, negatives, objective, the loop, a fresh position."""
        train = dataset.train
        shape = (getattr(self.model, "n_users", train.shape[0]), getattr(self.model, "n_items", train.shape[1]))
        if train.shape != shape:
            raise ValueError(f"dataset: train has shape {train.shape} but the model has {shape[0]} users and "
                             f"{shape[1]} items")
        if train.nnz == 0:
            raise ValueError("dataset: the training matrix has no interactions")
        values = self.settings
        self.dataset, self.train = dataset, as_canonical_csr(train, "dataset.train")
        self._shuffle_rng, sampler_rng = build.seeded_generators(values["seed"])
        if self._sampler_object is not None:
            self.sampler = self._sampler_object
            if self.sampler.train.shape != train.shape:
                raise ValueError(f"sampler: built for shape {self.sampler.train.shape}, the data has {train.shape}")
        else:
            self.sampler = build.build_sampler(values, self.train, sampler_rng)
        self.negatives = build.build_negatives(values, self.sampler, self.train, self.model)
        self.objective = build.build_objective(values, self.negatives)
        covered, why = covers(self.model, values, self._sampler_object is None, self._optimizer_object is None)
        self.compiled = None
        if self.cluster is not None:
            self.compiled = self.cluster.epoch_loop(self.model, self.train, self.optimizers[0], self._shuffle_rng,
                                                    _loop_settings(values))
        elif engines.use_compiled(values["engine"], covered, why):
            self.compiled = CompiledMFLoop(self.model, self.train, optimizer=self.optimizers[0],
                                           shuffle_rng=self._shuffle_rng, **_loop_settings(values))
        self.batch_size = 1 if values["optimizer"] == "hogwild" else values["batch_size"]
        self.batches_per_epoch = -(-self.train.nnz // self.batch_size)
        self.epoch, self.batch = 0, 0
        self._epoch_shuffle_state = self._shuffle_rng.bit_generator.state
        self.loss_sum, self.samples, self.seconds = 0.0, 0, 0.0
        self.best_value, self.best_epoch, self.stopped_early, self.stop_training = -math.inf, None, False, False
        self.history = []

    # ----------------------------------------------------------------------------------- a step
    def train_batch(self, users: np.ndarray, positives: np.ndarray) -> float:
        """One optimizer step of the NumPy loop on a batch; returns the batch's loss (objective + L2)."""
        self.model.zero_grad()
        negatives = self.negatives.draw(users, positives)
        loss = self.objective(self.model, users, positives, negatives)
        loss += self.regularizer(self.model, users.size)
        for param in self._densify:
            if isinstance(param.grad, RowSparseGrad):
                param.grad = param.grad.to_dense(param.data.shape)
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    # ------------------------------------------------------------------------------------ fit
    def fit(self, dataset: Dataset, resume: bool = False, grow_from: dict | None = None) -> dict:
        """Train for `epochs` epochs (or until early stopping); returns the result dict.

        resume=True continues from out_dir/checkpoint.npz exactly: same parameters, optimizer
        moments, sampler and shuffle RNG states, position inside the epoch, best metric, history.
        grow_from= another run's checkpoint (`load_checkpoint`) over fewer users and items: this
        run starts from its parameters and optimizer state, grown to the dataset's users and items,
        and from its random streams, at epoch 0 (`recgrad.train.grow`); the dataset must be
        re-indexed to that run's id maps (`recgrad.data.align_ids`).
        On Ctrl-C (SIGINT) the current batch finishes (the compiled loop: the current epoch), a
        checkpoint is written and KeyboardInterrupt is raised.

        Returns {"best_epoch", "best_metric" (the name), "best_value", "best_metrics" (the
        evaluation at the best epoch), "popularity", "history", "epochs_run", "stopped_early",
        "eval_protocol", "eval_split", "test_metrics" and "test_protocol" (the selected model on the
        test set, when validation selected it), "topk" (the evaluated cut-offs)}.
        """
        if resume and grow_from is not None:
            raise ValueError("resume, grow_from: a run either resumes its own checkpoint or grows from another's")
        self.prepare(dataset)
        if resume:
            if self.out_dir is None:
                raise ValueError("resume: needs out_dir (the run directory holding checkpoint.npz)")
            self.load_state_dict(load_checkpoint(os.path.join(self.out_dir, "checkpoint.npz")))
        elif grow_from is not None:
            grow.start_grown(self, grow_from)
            self._load_streams(grow_from)
        if self.out_dir is not None:
            os.makedirs(self.out_dir, exist_ok=True)
        self._fire("on_fit_start")
        self._stop_requested = False
        restore_handler = self._install_interrupt_handler()
        try:
            while self.epoch < self.epochs and not self.stop_training:
                self._run_epoch()
                if self._stop_requested:  # Ctrl-C during the evaluation: stop at the epoch boundary
                    raise _Interrupted
        except _Interrupted:
            self._fire("on_interrupt")
            raise KeyboardInterrupt(
                f"training interrupted in epoch {self.epoch + 1} after batch {self.batch}"
                + (f"; checkpoint written to {self.out_dir}" if self.out_dir else "")
            ) from None
        finally:
            restore_handler()
        self._fire("on_fit_end")
        return self.result()

    def _fire(self, event, *args):
        for callback in self.callbacks:
            method = getattr(callback, event, None)
            if method is not None:
                method(self, *args)

    def _run_epoch(self):
        self._shuffle_rng.bit_generator.state = self._epoch_shuffle_state
        if self.compiled is not None:
            self.compiled.epoch = self.epoch
            stats = self.compiled.train_epoch()
            self.samples, self.seconds = stats["samples"], stats["seconds"]
            self.loss_sum = stats["loss"] * stats["samples"]
        else:
            for users, positives in epoch_batches(self.train, self.batch_size, self._shuffle_rng,
                                                  start_batch=self.batch, sampling=self.settings["epoch_sampling"]):
                start = time.perf_counter()
                loss = self.train_batch(users, positives)
                self.seconds += time.perf_counter() - start
                self.loss_sum += loss * users.size
                self.samples += users.size
                self.batch += 1
                self._fire("on_batch_end", loss, users.size)
                if self._stop_requested:
                    raise _Interrupted
        self._end_epoch()

    def _end_epoch(self):
        self.epoch += 1
        record = {
            "epoch": self.epoch,
            "loss": self.loss_sum / self.samples,
            "train_seconds": self.seconds,
            "samples_per_second": self.samples / max(self.seconds, 1e-12),
            "lr": self.optimizers[0].param_groups[0]["lr"],
        }
        for scheduler in self.schedulers:
            scheduler.step()
        self.history.append(record)
        self.batch, self.loss_sum, self.samples, self.seconds = 0, 0.0, 0, 0.0
        self._epoch_shuffle_state = self._shuffle_rng.bit_generator.state
        self._fire("on_epoch_end", record)

    def best_parameters(self) -> dict | None:
        """The selected (best-epoch) model's parameters: kept in memory, or RUN/best.npz after a resume."""
        if self.best_state is not None:
            return self.best_state
        if self.out_dir is not None and self.best_epoch is not None:
            from recgrad.models import load_model

            return load_model(os.path.join(self.out_dir, "best.npz")).state_dict()
        return None

    def evaluate(self) -> dict:
        """Metrics of the current model on the evaluation set (see the class doc); {} when there is none."""
        return self.evaluation.evaluate(self)

    def result(self) -> dict:
        best = next((r for r in self.history if r["epoch"] == self.best_epoch), None)
        return {
            "best_epoch": self.best_epoch,
            "best_metric": self.metric,
            "best_value": None if self.best_epoch is None else self.best_value,
            "best_metrics": None if best is None else {k: v for k, v in best.items() if "@" in k},
            "popularity": self.popularity,
            "history": list(self.history),
            "epochs_run": self.epoch,
            "stopped_early": self.stopped_early,
            "eval_protocol": self.eval_protocol,
            "eval_split": self.eval_split,
            "test_metrics": self.test_metrics,
            "test_protocol": self.test_protocol,
            "topk": None if self.topk is None else list(self.topk),
            "popularity_prior": self.popularity_prior,
            "prior_search": self.prior_search,
        }

    # ------------------------------------------------------------------------------ the state
    def state_dict(self) -> dict:
        """Everything an exact resume needs (`recgrad.train.checkpoint` writes it)."""
        return {
            "settings": self.config(),
            "epoch": self.epoch, "batch": self.batch,
            "loss_sum": self.loss_sum, "samples": self.samples, "seconds": self.seconds,
            "best_value": None if self.best_epoch is None else self.best_value,
            "best_epoch": self.best_epoch, "stopped_early": self.stopped_early,
            "history": self.history,
            "shuffle_rng": self._epoch_shuffle_state,
            "negatives": self.negatives.state_dict(),
            "model": self.model.state_dict(),
            "model_rngs": {path: rng.bit_generator.state for path, rng in _generators(self.model)},
            "optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
            "schedulers": [scheduler.state_dict() for scheduler in self.schedulers],
            "callbacks": [[type(cb).__name__, cb.state_dict()] for cb in self.callbacks if hasattr(cb, "state_dict")],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`; ValueError when it was written with other settings."""
        try:
            changed = run_settings.resume_conflicts(state["settings"], self.config())
            if changed:
                raise ValueError("resume: the checkpoint was written with different settings: " + ", ".join(changed))
            self.model.load_state_dict(state["model"])
            if len(state["optimizers"]) != len(self.optimizers):
                raise ValueError(f"resume: the checkpoint holds {len(state['optimizers'])} optimizers, "
                                 f"expected {len(self.optimizers)}")
            for optimizer, saved_state in zip(self.optimizers, state["optimizers"]):
                optimizer.load_state_dict(saved_state)
            for scheduler, saved_state in zip(self.schedulers, state["schedulers"]):
                scheduler.load_state_dict(saved_state)
            self._load_streams(state)
            saved_callbacks = dict((name, s) for name, s in state["callbacks"])
            for callback in self.callbacks:
                if hasattr(callback, "load_state_dict") and type(callback).__name__ in saved_callbacks:
                    callback.load_state_dict(saved_callbacks[type(callback).__name__])
            self.epoch, self.batch = state["epoch"], state["batch"]
            self.loss_sum, self.samples, self.seconds = state["loss_sum"], state["samples"], state["seconds"]
            self.best_epoch, self.stopped_early = state["best_epoch"], state["stopped_early"]
            self.best_value = -math.inf if state["best_value"] is None else state["best_value"]
            self.stop_training = self.stopped_early
            self.history = state["history"]
        except (KeyError, TypeError, IndexError) as error:
            raise CheckpointError(f"resume: the checkpoint is missing or has a malformed entry ({error})") from None

    def _load_streams(self, state: dict) -> None:
        """The random streams of a state dict: the model's generators, the negatives', the shuffle's."""
        rngs = dict(_generators(self.model))
        for key, saved_state in state["model_rngs"].items():
            rngs[key].bit_generator.state = saved_state
        self.negatives.load_state_dict(state["negatives"])
        self._epoch_shuffle_state = state["shuffle_rng"]

    # ------------------------------------------------------------------------------ interrupts
    def _install_interrupt_handler(self):
        """On SIGINT set a flag that the batch loop checks (a second Ctrl-C interrupts at once).

        Returns the function that puts the previous handler back. Outside the main thread Python
        cannot install signal handlers, and Ctrl-C there is not caught.
        """
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True

        previous = signal.signal(signal.SIGINT, handler)
        return lambda: signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


class _Interrupted(Exception):
    """Raised inside the batch loop after SIGINT, so that the checkpoint is written between batches."""


def _loop_settings(values):
    """The settings the compiled loop takes: the trainer's own, minus those it reads from the optimizer."""
    return {key: value for key, value in values.items() if key not in ("optimizer", "lr", "weight_decay")}


def _generators(model):
    """(dotted path, Generator) of every numpy Generator a sub-module holds (e.g. dropout's)."""
    found = []

    def walk(module, prefix):
        for name, value in vars(module).items():
            if isinstance(value, np.random.Generator):
                found.append((prefix + name, value))
            elif isinstance(value, Module):
                walk(value, prefix + name + ".")

    walk(model, "")
    return found
