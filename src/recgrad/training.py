"""The Trainer: batches of sampled positives and negatives, a loss, an optimizer, evaluation, checkpoints.

One training step, for a batch of B training pairs (u_b, i_b) (an epoch visits every interaction
once, in a seeded shuffle, or with epoch_sampling="users" draws nnz pairs user-first as the
NGCF/LightGCN code does; see `recgrad.samplers.epoch_order`):

    bpr      s = model(u, [i, j_1..j_K])  (B, 1+K);  L = mean_bk softplus(s_bk - s_b0)
    bce      the same scores as logits, labels [1, 0, ..., 0];  L = mean BCE-with-logits
             (NCF's recipe: GMF/NeuMF with 4 sampled negatives per positive)
    infonce  a_b = user representation, p_b = item representation of i_b, negatives per user
             (B, K, D), shared by the batch (K, D) or in-batch (the other positives);
             L = mean_b -log softmax([s(a_b, p_b), s(a_b, n_1), ...] / tau)[0]

plus, when l2 > 0, LightGCN's regulariser on the embedding rows this batch looked up,

    R = l2 * 0.5 * (sum of |e|^2 over every looked-up row occurrence) / B,   dR/de = l2 * e / B,

(with one negative: l2 * 0.5 * (|e_u|^2 + |e_i+|^2 + |e_i-|^2) summed over the batch / B), whose
gradient is added to the embedding gradients directly (it is not optimizer weight decay, which
would shrink every row at every step). The reported loss is L + R.

Optimizer modes. "adam", "adamw" and "sgd" are the dense algorithms (exactly torch.optim's):
every row of every table moves at every step (Adam's moments decay for rows without a gradient);
row-sparse embedding gradients are expanded to dense arrays before the step. "sparse_adam" is the
lazy mode: embedding tables built with sparse=True get `SparseAdam` (only the batch's rows move;
`weight_decay` is its decoupled decay of those rows) and any dense parameters (tower weights) get
Adam. "sgd" without weight decay keeps row-sparse gradients as they are: plain SGD on the rows
present is the dense SGD step exactly.

Dynamic negative sampling (DNS; Zhang, Chen, Wang & Yu, "Optimizing top-n collaborative filtering
via dynamic negative item sampling", SIGIR 2013; RecBole's `dynamic` sampling with `candidate_num`):
with dns_candidates = C > 1 and per-user negatives, the sampler draws K C candidates per positive
and negative k is the one of candidates kC .. kC + C - 1 that the current model scores highest
(`model.score`, before the step; the first of equal scores). The loss and its gradient are then the
plain ones on the chosen negatives: the choice is not differentiated. A hard negative carries far
more gradient than a random one, so fewer, cheaper steps reach a given quality.

Log-Q correction (Yi et al., RecSys 2019), for InfoNCE: every logit is corrected to
s(a, v) / tau - log q(v), positive included, where q is the sampler's distribution (per_user and
shared negatives; a uniform sampler makes it a constant shift, i.e. no change) or, in-batch, the
frequency of the item among training interactions (in-batch negatives are drawn in proportion to it).

Learning-rate schedule: lr_schedule="cosine" anneals every optimizer's lr from `lr` to
`lr_min` over the run's `epochs` with `recgrad.optim.CosineAnnealingLR` (torch's), stepped once at
the end of each epoch: epoch e (1-based) trains at lr_min + (lr - lr_min) * (1 + cos(pi (e-1) / epochs)) / 2.
Its state is checkpointed, so a resumed run continues the same schedule.

Run directory (`out_dir`): metrics.jsonl (a JSON object per epoch), best.npz and last.npz (models
written by `Recommender.save`), checkpoint.npz, learning_curve.png. Checkpoint/resume semantics:
docs/training.md.
"""

import json
import math
import os
import signal
import sys
import tempfile
import threading
import time

import numpy as np
from tqdm.auto import tqdm

from recgrad._checks import non_negative_float, non_negative_int, positive_float, positive_int
from recgrad.evaluation import evaluate_baseline, evaluate_recommender, protocol_for
from recgrad.losses import BCEWithLogitsLoss, BPRLoss, InfoNCELoss, l2_normalize, l2_normalize_backward
from recgrad.metrics import METRIC_NAMES
from recgrad.kernels.mf import fused_trainer_from_config
from recgrad.kernels.optim import is_fusable
from recgrad.models.base import FactorModel
from recgrad.models.embedding import Embedding
from recgrad.models.mf import MF
from recgrad.nn.module import Module, RowSparseGrad
from recgrad.optim.adam import Adam
from recgrad.optim.adamw import AdamW
from recgrad.optim.lr_scheduler import CosineAnnealingLR
from recgrad.optim.optimizer import Optimizer
from recgrad.optim.sgd import SGD
from recgrad.optim.sparse_adam import SparseAdam
from recgrad.samplers import (NegativeSampler, PopularitySampler, UniformSampler, as_canonical_csr,
                              check_epoch_sampling, epoch_batches)

__all__ = ["Trainer"]

LOSSES = ("bpr", "bce", "infonce")
OPTIMIZERS = ("adam", "adamw", "sgd", "sparse_adam")
SAMPLERS = ("uniform", "popularity")
NEGATIVES_MODES = ("per_user", "shared", "in_batch")
LR_SCHEDULES = (None, "cosine")
# K when `negatives` is None: LightGCN's 1 for BPR, NCF's 4 for BCE; InfoNCE 64 per user (a (B, K, D)
# block) or 1024 shared by the batch (the probe on Gowalla found 1024-4096 shared negatives work well).
DEFAULT_NEGATIVES = {"bpr": 1, "bce": 4, ("infonce", "per_user"): 64, ("infonce", "shared"): 1024}
CHECKPOINT_FORMAT = 1
# Settings that change what an epoch computes: a resumed run must use the checkpoint's values.
_RESUME_KEYS = ("loss", "optimizer", "lr", "batch_size", "negatives", "negatives_mode", "sampler", "l2",
                "weight_decay", "temperature", "similarity", "logq_correction", "popularity_alpha", "seed",
                "lr_schedule", "lr_min", "engine", "epoch_sampling", "dns_candidates")
# Values of keys that checkpoints written before the key existed implicitly had.
_RESUME_DEFAULTS = {"epoch_sampling": "interactions", "dns_candidates": 1}
ENGINES = ("numpy", "fused")


class Trainer:
    """Train a recgrad recommender on a `recgrad.data.Dataset`.

    Args:
        model: a recommender (MF, TwoTower, GMF, NeuMF): forward(users, items (B, 1+K)) -> scores,
            backward(grad_scores). InfoNCE needs a dot-product model (MF, TwoTower).
        loss: "bpr", "bce" or "infonce".
        optimizer: "adam", "adamw", "sgd", "sparse_adam" (see the module doc), or an
            `recgrad.optim.Optimizer` built over model.parameters() (used as given).
        lr: learning rate (the initial one under a schedule). lr_schedule: None (constant lr) or
            "cosine" (module doc), annealing to lr_min (default 0.0) at the end of `epochs`.
        weight_decay: the optimizer's (Adam/SGD: L2 in the gradient; AdamW and
            SparseAdam: decoupled); None takes the optimizer's PyTorch default (1e-2 for AdamW, 0
            otherwise). With an optimizer instance, set it on the instance (passing it raises).
        batch_size: training interactions per step. epochs: total epochs (a resumed run counts
            the epochs already done).
        negatives: K, negatives per positive (per_user) or per batch (shared); default 1 for
            BPR, 4 for BCE, 64 (per_user) or 1024 (shared) for InfoNCE; must be None for in_batch.
        sampler: "uniform" (default; LightGCN's: positives excluded), "popularity"
            (count^popularity_alpha, positives excluded), or a sampler from recgrad.samplers.
        dns_candidates: C, candidates per negative for dynamic negative sampling (module doc);
            default 1 (plain sampling). Needs negatives_mode "per_user".
        negatives_mode: "per_user" (default), "shared" (one set of K negatives for the whole batch,
            drawn from the sampler's q without excluding anyone's positives) or "in_batch"
            (InfoNCE only: the batch's other positives are the negatives).
        l2: LightGCN's batch-embedding regulariser (module doc); 0 disables it.
        temperature, similarity ("dot" or "cosine"), logq_correction: InfoNCE only (defaults
            0.1, "dot", False).
        popularity_alpha: exponent of the popularity sampler (default 0.75); only with
            sampler="popularity".
        eval_every: evaluate every this many epochs (and after the last one).
        patience: stop after this many evaluations without improvement of `metric` (None: never).
        ks: cut-offs evaluated, default (20,) for full ranking and (10,) for the sampled protocol.
        metric: the early-stopping / best-model metric, default "recall@20" (full ranking) or
            "ndcg@10" (sampled protocol); its K is added to `ks` if missing.
        seed: seeds the shuffle and the sampler (int).
        out_dir: run directory (created); None writes nothing.
        progress: show a tqdm bar (only on a terminal) and print a line per epoch to stderr.
        epoch_sampling: "interactions" (default: every training interaction once per epoch, shuffled)
            or "users" (nnz draws of a uniform user, then a uniform positive of theirs: the NGCF and
            LightGCN code's sampler, which weighs every user equally); `recgrad.samplers.epoch_order`.
        engine: "numpy" (default: the readable minibatch step above) or "fused": the compiled MF
            loop of `recgrad.kernels.mf` (MF with per-user negatives and optimizer "sparse_adam" or
            "sgd"). Fused "sparse_adam" is the same lazy Adam over the same batches and negatives
            as "numpy" up to float rounding; fused "sgd" is hogwild SGD with a step per
            interaction (implicit's algorithm), so its lr means something else than minibatch SGD's.
            The fused loop checkpoints at epoch boundaries only (Ctrl-C finishes the epoch).

    Evaluation set: the dataset's validation matrix when present (full ranking, training items
    masked); otherwise the sampled NCF protocol when it has test_negatives; otherwise the test
    matrix (full ranking). The popularity baseline is evaluated once on the same set and reported
    beside every evaluation.
    """

    def __init__(self, model, loss="bpr", optimizer="adam", lr=1e-3, batch_size=2048, epochs=20, negatives=None,
                 sampler="uniform", negatives_mode="per_user", l2=0.0, weight_decay=None, temperature=None,
                 similarity=None, logq_correction=None, popularity_alpha=None, eval_every=1, patience=None,
                 ks=None, metric=None, seed=0, out_dir=None, progress=True, lr_schedule=None, lr_min=None,
                 engine="numpy", epoch_sampling="interactions", dns_candidates=1):
        if not isinstance(model, Module):
            raise TypeError(f"model: expected a recgrad Module (a recommender), got {type(model).__name__}")
        self.model = model
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
        self.loss = loss
        if negatives_mode not in NEGATIVES_MODES:
            raise ValueError(f"negatives_mode: expected one of {NEGATIVES_MODES}, got {negatives_mode!r}")
        if negatives_mode == "in_batch" and loss != "infonce":
            raise ValueError("negatives_mode: 'in_batch' needs loss='infonce'")
        self.negatives_mode = negatives_mode
        if negatives_mode == "in_batch":
            if negatives is not None:
                raise ValueError("negatives: in_batch mode uses the batch's positives; leave negatives=None")
        else:
            default = DEFAULT_NEGATIVES.get(loss) or DEFAULT_NEGATIVES[(loss, negatives_mode)]
            negatives = default if negatives is None else positive_int(negatives, "negatives")
        self.negatives = negatives
        self.dns_candidates = positive_int(dns_candidates, "dns_candidates")
        if self.dns_candidates > 1 and negatives_mode != "per_user":
            raise ValueError(f"dns_candidates: dynamic negative sampling needs negatives_mode 'per_user', "
                             f"got {negatives_mode!r}")
        if self.dns_candidates > 1 and logq_correction:
            raise ValueError("logq_correction: the negatives DNS chooses do not follow the sampler's q; "
                             "use dns_candidates=1 with logq_correction")
        if isinstance(optimizer, Optimizer):
            if weight_decay is not None:
                raise ValueError("weight_decay: set it on the optimizer instance you pass, not on the Trainer")
            self.optimizer_name = type(optimizer).__name__
        elif optimizer in OPTIMIZERS:
            self.optimizer_name = optimizer
        else:
            raise ValueError(f"optimizer: expected one of {OPTIMIZERS} or a recgrad.optim.Optimizer, got {optimizer!r}")
        self._optimizer_arg = optimizer
        self.lr = positive_float(lr, "lr")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule: expected one of {LR_SCHEDULES}, got {lr_schedule!r}")
        if lr_schedule is None and lr_min is not None:
            raise ValueError("lr_min: applies only with an lr_schedule")
        self.lr_schedule = lr_schedule
        self.lr_min = non_negative_float(0.0 if lr_min is None else lr_min, "lr_min")
        if self.lr_min >= self.lr and lr_schedule is not None:
            raise ValueError(f"lr_min: expected a value below lr={self.lr}, got {self.lr_min}")
        if weight_decay is None:
            weight_decay = 1e-2 if optimizer == "adamw" else 0.0
        self.weight_decay = non_negative_float(weight_decay, "weight_decay")
        self.batch_size = positive_int(batch_size, "batch_size")
        self.epochs = non_negative_int(epochs, "epochs")
        self.l2 = non_negative_float(l2, "l2")
        for name, value in (("temperature", temperature), ("similarity", similarity),
                            ("logq_correction", logq_correction)):
            if loss != "infonce" and value is not None:
                raise ValueError(f"{name}: applies only to loss='infonce' (got loss={loss!r})")
        self.temperature = positive_float(0.1 if temperature is None else temperature, "temperature")
        self.similarity = "dot" if similarity is None else similarity
        if self.similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity: expected 'dot' or 'cosine', got {similarity!r}")
        self.logq_correction = bool(logq_correction)
        if isinstance(sampler, NegativeSampler):
            if popularity_alpha is not None:
                raise ValueError("popularity_alpha: set alpha on the sampler instance you pass")
            self.sampler_name = type(sampler).__name__
        elif sampler in SAMPLERS:
            if popularity_alpha is not None and sampler != "popularity":
                raise ValueError("popularity_alpha: applies only to sampler='popularity'")
            self.sampler_name = sampler
        else:
            raise ValueError(f"sampler: expected one of {SAMPLERS} or a recgrad.samplers sampler, got {sampler!r}")
        self._sampler_arg = sampler
        self.popularity_alpha = 0.75 if popularity_alpha is None else float(popularity_alpha)
        self.eval_every = positive_int(eval_every, "eval_every")
        self.patience = None if patience is None else positive_int(patience, "patience")
        self._ks_arg = None if ks is None else tuple(positive_int(k, "ks") for k in np.atleast_1d(ks).tolist())
        self._metric_arg = metric
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        self.seed = int(seed)
        self.out_dir = None if out_dir is None else os.fspath(out_dir)
        self.progress = bool(progress)
        if engine not in ENGINES:
            raise ValueError(f"engine: expected one of {ENGINES}, got {engine!r}")
        if engine == "fused":
            if not isinstance(model, MF):
                raise ValueError(f"engine: 'fused' trains MF models only, got {type(model).__name__}")
            if optimizer not in ("sparse_adam", "sgd") or negatives_mode != "per_user":
                raise ValueError("engine: 'fused' needs optimizer 'sparse_adam' or 'sgd' and negatives_mode 'per_user'")
        self.engine = engine
        self.epoch_sampling = check_epoch_sampling(epoch_sampling)
        if loss == "infonce" and not isinstance(model, FactorModel):
            raise ValueError(f"loss: 'infonce' needs a dot-product model (MF, TwoTower), got {type(model).__name__}")
        self._embeddings = [module for module in _modules(model) if isinstance(module, Embedding)]
        self.history = []
        self.popularity = None
        self.best_state = None
        self._stop_requested = False

    # ----------------------------------------------------------------------------------- set-up
    def config(self):
        """The settings as a JSON-able dict (what the checkpoint records)."""
        return {
            "loss": self.loss, "optimizer": self.optimizer_name, "lr": self.lr, "batch_size": self.batch_size,
            "epochs": self.epochs, "negatives": self.negatives, "negatives_mode": self.negatives_mode,
            "sampler": self.sampler_name, "l2": self.l2, "weight_decay": self.weight_decay,
            "temperature": self.temperature if self.loss == "infonce" else None,
            "similarity": self.similarity if self.loss == "infonce" else None,
            "logq_correction": self.logq_correction, "popularity_alpha": self.popularity_alpha,
            "eval_every": self.eval_every, "patience": self.patience, "ks": list(self.ks), "metric": self.metric,
            "seed": self.seed, "lr_schedule": self.lr_schedule, "lr_min": self.lr_min, "engine": self.engine,
            "epoch_sampling": self.epoch_sampling, "dns_candidates": self.dns_candidates,
        }

    def _prepare(self, dataset):
        train = dataset.train
        if train.shape != (getattr(self.model, "n_users", train.shape[0]), getattr(self.model, "n_items", train.shape[1])):
            raise ValueError(
                f"dataset: train has shape {train.shape} but the model has "
                f"{self.model.n_users} users and {self.model.n_items} items"
            )
        if train.nnz == 0:
            raise ValueError("dataset: the training matrix has no interactions")
        self.train = as_canonical_csr(train, "dataset.train")
        self._init_evaluation(dataset)
        shuffle_seed, sampler_seed = np.random.SeedSequence(self.seed).spawn(2)
        self._shuffle_rng = np.random.default_rng(shuffle_seed)
        if isinstance(self._sampler_arg, NegativeSampler):
            self.sampler = self._sampler_arg
            if self.sampler.train.shape != train.shape:
                raise ValueError(f"sampler: built for shape {self.sampler.train.shape}, the data has {train.shape}")
        elif self._sampler_arg == "popularity":
            self.sampler = PopularitySampler(train, alpha=self.popularity_alpha, seed=np.random.default_rng(sampler_seed))
        else:
            self.sampler = UniformSampler(train, seed=np.random.default_rng(sampler_seed))
        self._optimizers, self._densify = self._build_optimizers()
        self._schedulers = []
        if self.lr_schedule == "cosine" and self.epochs > 0:
            self._schedulers = [CosineAnnealingLR(opt, T_max=self.epochs, eta_min=self.lr_min) for opt in self._optimizers]
        self._build_loss()
        self._fused = None
        if self.engine == "fused":
            self._fused = fused_trainer_from_config(
                self.model, self.train, self.config(),
                optimizer=self._optimizers[0] if self.optimizer_name == "sparse_adam" else None,
                shuffle_rng=self._shuffle_rng)
        if self.negatives_mode == "in_batch" and self.logq_correction:
            counts = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float64)
            with np.errstate(divide="ignore"):
                self._in_batch_log_q = np.log(counts / counts.sum())
        self.epoch, self._batch = 0, 0
        self._epoch_shuffle_state = self._shuffle_rng.bit_generator.state
        self._loss_sum, self._samples, self._seconds = 0.0, 0, 0.0
        self.best_value, self.best_epoch, self._bad_evals, self.stopped_early = -math.inf, None, 0, False
        self.history = []

    def _init_evaluation(self, dataset):
        if dataset.validation is not None:
            self.eval_split = "validation"
        elif dataset.test is not None or dataset.test_negatives is not None:
            self.eval_split = "test"
        else:
            self.eval_split = None
        self.eval_protocol = None if self.eval_split is None else protocol_for(dataset, self.eval_split)
        ks = self._ks_arg or ((10,) if self.eval_protocol == "sampled" else (20,))
        metric = self._metric_arg or ("ndcg@10" if self.eval_protocol == "sampled" else "recall@20")
        name, _, k = metric.partition("@")
        allowed = ("hr", "ndcg") if self.eval_protocol == "sampled" else METRIC_NAMES
        if name not in allowed or not k.isdigit() or int(k) < 1:
            raise ValueError(f"metric: expected '<name>@<K>' with name in {allowed}, got {metric!r}")
        self.metric = metric
        self.ks = tuple(sorted(set(ks) | {int(k)}))
        self._metric_names = tuple(dict.fromkeys(("recall", "ndcg", name)))
        self._dataset = dataset
        self.popularity = None
        if self.eval_split is not None:
            self.popularity = evaluate_baseline(dataset, self.eval_split, ks=self.ks, metrics=self._metric_names)
            self.popularity.pop("users", None)

    def _build_optimizers(self):
        """(optimizers, params whose row-sparse grads are expanded to dense before the step)."""
        params = self.model.parameters()
        if isinstance(self._optimizer_arg, Optimizer):
            return [self._optimizer_arg], []
        name, lr, wd = self._optimizer_arg, self.lr, self.weight_decay
        # The fused steps are the reference steps bit for bit (recgrad.kernels.optim), in one pass.
        fused = all(is_fusable(p.data) for p in params)
        if name == "sparse_adam":
            table_ids = {id(e.weight) for e in self._embeddings if e.sparse}
            if not table_ids:
                raise ValueError("optimizer: 'sparse_adam' needs embedding tables built with sparse=True")
            tables = [p for p in params if id(p) in table_ids]
            dense = [p for p in params if id(p) not in table_ids]
            optimizers = [SparseAdam(tables, lr=lr, weight_decay=wd, fused=fused)]
            if dense:
                optimizers.append(Adam(dense, lr=lr, weight_decay=wd, fused=fused))
            return optimizers, []
        if name == "adam":
            return [Adam(params, lr=lr, weight_decay=wd, fused=fused)], params
        if name == "adamw":
            return [AdamW(params, lr=lr, weight_decay=wd, fused=fused)], params
        return [SGD(params, lr=lr, weight_decay=wd, fused=fused)], (params if wd != 0.0 else [])

    def _build_loss(self):
        if self.loss == "bpr":
            self._loss_fn = BPRLoss()
        elif self.loss == "bce":
            self._loss_fn = BCEWithLogitsLoss()
        else:
            # With log-Q the similarity is taken here (cosine: after normalising) and the
            # corrected logits are built by the augmentation in `_infonce_step`, so the loss
            # itself is the dot-product InfoNCE.
            similarity = "dot" if self.logq_correction else self.similarity
            self._loss_fn = InfoNCELoss(temperature=self.temperature, similarity=similarity)

    # ----------------------------------------------------------------------------------- a step
    def _train_batch(self, users, positives):
        """One optimizer step on a batch; returns the batch's loss L + R as a Python float."""
        self.model.zero_grad()
        batch = users.size
        if self.loss == "infonce":
            loss = self._infonce_step(users, positives)
        else:
            loss = self._scores_step(users, positives)
        reg = self._l2_penalty(batch)
        self._add_l2_gradients(batch)
        for param in self._densify:
            if isinstance(param.grad, RowSparseGrad):
                param.grad = param.grad.to_dense(param.data.shape)
        for optimizer in self._optimizers:
            optimizer.step()
        return float(loss) + reg

    def _scores_step(self, users, positives):
        """BPR or BCE on the model's scores of [positive, K negatives]: forward, loss, backward."""
        batch = users.size
        if self.negatives_mode == "shared":
            negatives = np.broadcast_to(self.sampler.sample_shared(self.negatives), (batch, self.negatives))
        else:
            negatives = self._per_user_negatives(users)
        scores = self.model.forward(users, np.concatenate([positives[:, None], negatives], axis=1))
        if self.loss == "bpr":
            loss = self._loss_fn(scores[:, 0], scores[:, 1:])
            d_pos, d_neg = self._loss_fn.backward()
            grad = np.concatenate([d_pos[:, None], d_neg], axis=1)
        else:
            labels = np.zeros(scores.shape, dtype=scores.dtype)
            labels[:, 0] = 1.0
            loss = self._loss_fn(scores, labels)
            grad = self._loss_fn.backward()
        self.model.backward(grad)
        return loss

    def _infonce_step(self, users, positives):
        """Forward and backward of InfoNCE through the model's user/item representations."""
        batch, k = users.size, self.negatives
        if self.negatives_mode == "per_user":
            negatives = self._per_user_negatives(users).reshape(-1)
        elif self.negatives_mode == "shared":
            negatives = self.sampler.sample_shared(k)
        else:
            negatives = np.empty(0, dtype=np.int64)
        items = np.concatenate([positives, negatives])
        anchor = self.model.encode("user", users)
        item_vectors = self.model.encode("item", items)
        if self.logq_correction:
            log_q = self._in_batch_log_q[items] if self.negatives_mode == "in_batch" else self.sampler.log_q(items)
            anchor_in, item_in, normalized = self._logq_augment(anchor, item_vectors, log_q)
        else:
            anchor_in, item_in = anchor, item_vectors
        dim = item_in.shape[1]
        positive_in, negative_in = item_in[:batch], item_in[batch:]
        if self.negatives_mode == "per_user":
            negative_in = negative_in.reshape(batch, k, dim)
        elif self.negatives_mode == "in_batch":
            negative_in = None
        loss = self._loss_fn(anchor_in, positive_in, negative_in)
        grads = self._loss_fn.backward()
        d_anchor = grads[0]
        d_items = np.concatenate([grads[1]] + ([] if negative_in is None else [grads[2].reshape(-1, dim)]))
        if self.logq_correction:
            d_anchor, d_items = d_anchor[:, :-1], d_items[:, :-1]  # the augmented column is a constant
            if normalized is not None:
                (anchor_unit, anchor_norm), (item_unit, item_norm) = normalized
                d_anchor = l2_normalize_backward(d_anchor, anchor_unit, anchor_norm)
                d_items = l2_normalize_backward(d_items, item_unit, item_norm)
        self.model.encode_backward("user", d_anchor)
        self.model.encode_backward("item", d_items)
        return loss

    def _per_user_negatives(self, users):
        """(B, K) negatives from the sampler; with DNS the best-scoring of each group of C draws."""
        batch, k, per = users.size, self.negatives, self.dns_candidates
        drawn = self.sampler.sample(users, k * per)
        if per == 1:
            return drawn
        groups = self.model.score(users, drawn).reshape(batch, k, per)
        choice = np.argmax(groups, axis=2)[..., None]
        return np.take_along_axis(drawn.reshape(batch, k, per), choice, axis=2)[..., 0]

    def _logq_augment(self, anchor, items, log_q):
        """Vectors whose dot products, divided by tau, are the log-Q corrected logits.

        a' = [a, 1] and v' = [v, -tau log q(v)] give <a', v'> / tau = <a, v> / tau - log q(v)
        (cosine: a and v are unit-normalised first). Returns (a', v', normalisation caches or None).
        """
        normalized = None
        if self.similarity == "cosine":
            normalized = (l2_normalize(anchor), l2_normalize(items))
            anchor, items = normalized[0][0], normalized[1][0]
        column = (-self.temperature * log_q).astype(items.dtype)[:, None]
        anchor_aug = np.concatenate([anchor, np.ones((anchor.shape[0], 1), dtype=anchor.dtype)], axis=1)
        return anchor_aug, np.concatenate([items, column], axis=1), normalized

    def _l2_penalty(self, batch):
        """R = l2 * 0.5 * sum over the rows looked up in this step of |e|^2 / B (module doc)."""
        if self.l2 == 0.0:
            return 0.0
        total = 0.0
        for embedding in self._embeddings:
            rows = embedding.weight.data[embedding.cache.reshape(-1)]
            total += float(np.sum(rows * rows, dtype=np.float64))
        return self.l2 * 0.5 * total / batch

    def _add_l2_gradients(self, batch):
        """dR/de = l2 * e / B per looked-up row occurrence, added to the table's gradient.

        A row looked up c times gets c * l2 * e / B, added in place to the row of the gradient
        the backward produced (a RowSparseGrad over exactly these rows, or a dense array).
        """
        if self.l2 == 0.0:
            return
        scale = self.l2 / batch
        for embedding in self._embeddings:
            weight = embedding.weight
            rows, counts = np.unique(embedding.cache, return_counts=True)
            values = (scale * counts[:, None]).astype(weight.data.dtype) * weight.data[rows]
            grad = weight.grad
            if isinstance(grad, np.ndarray):
                grad[rows] += values
            elif isinstance(grad, RowSparseGrad) and np.array_equal(grad.rows, rows):
                grad.values += values
            else:
                weight.accumulate_grad(RowSparseGrad(rows, values))

    # ------------------------------------------------------------------------------------ fit
    def fit(self, dataset, resume=False):
        """Train for `epochs` epochs (or until early stopping); returns the result dict.

        resume=True continues from out_dir/checkpoint.npz exactly: same parameters, optimizer
        moments, sampler and shuffle RNG states, position inside the epoch, best metric and history.

        On Ctrl-C (SIGINT) the current batch finishes, a checkpoint is written and
        KeyboardInterrupt is raised; `fit(dataset, resume=True)` then continues where it stopped.

        Returns {"best_epoch", "best_metric" (the name), "best_value", "best_metrics" (the
        evaluation at the best epoch), "popularity", "history", "epochs_run", "stopped_early",
        "eval_protocol", "eval_split"}.
        """
        self._prepare(dataset)
        if resume:
            if self.out_dir is None:
                raise ValueError("resume: needs out_dir (the run directory holding checkpoint.npz)")
            self._load_checkpoint(os.path.join(self.out_dir, "checkpoint.npz"))
        if self.out_dir is not None:
            os.makedirs(self.out_dir, exist_ok=True)
            self._rewrite_metrics_file()
        self._stop_requested = False
        restore_handler = self._install_interrupt_handler()
        try:
            while self.epoch < self.epochs and not self.stopped_early:
                self._run_epoch()
                if self._stop_requested:  # Ctrl-C during the evaluation: stop at the epoch boundary
                    raise _Interrupted
        except _Interrupted:
            self._save_checkpoint()
            raise KeyboardInterrupt(
                f"training interrupted in epoch {self.epoch + 1} after batch {self._batch}"
                + (f"; checkpoint written to {self.out_dir}" if self.out_dir else "")
            ) from None
        finally:
            restore_handler()
        if self.out_dir is not None:
            self._plot()
        return self.result()

    def _run_epoch(self):
        if self._fused is not None:
            self._run_fused_epoch()
            return
        n_batches = -(-self.train.nnz // self.batch_size)
        self._shuffle_rng.bit_generator.state = self._epoch_shuffle_state
        batches = epoch_batches(self.train, self.batch_size, self._shuffle_rng, start_batch=self._batch,
                                sampling=self.epoch_sampling)
        show = self.progress and sys.stderr.isatty()
        with tqdm(total=n_batches, initial=self._batch, disable=not show, leave=False, unit="batch",
                  desc=f"epoch {self.epoch + 1}/{self.epochs}", file=sys.stderr) as bar:
            for users, positives in batches:
                start = time.perf_counter()
                loss = self._train_batch(users, positives)
                self._seconds += time.perf_counter() - start
                self._loss_sum += loss * users.size
                self._samples += users.size
                self._batch += 1
                bar.update(1)
                if show and (self._batch % 10 == 0 or self._batch == n_batches):
                    bar.set_postfix(loss=f"{self._loss_sum / self._samples:.4f}",
                                    samples_per_s=f"{self._samples / max(self._seconds, 1e-9):.0f}")
                if self._stop_requested:
                    raise _Interrupted
        self._end_epoch()

    def _run_fused_epoch(self):
        """One epoch of the compiled loop; its sampler streams are keyed by (seed, epoch)."""
        self._shuffle_rng.bit_generator.state = self._epoch_shuffle_state
        self._fused.epoch = self.epoch
        self._fused.lr = self._optimizers[0].param_groups[0]["lr"]  # hogwild follows the schedule too
        stats = self._fused.train_epoch()
        self._loss_sum, self._samples, self._seconds = stats["loss"] * stats["samples"], stats["samples"], stats["seconds"]
        self._end_epoch()

    def _end_epoch(self):
        self.epoch += 1
        record = {
            "epoch": self.epoch,
            "loss": self._loss_sum / self._samples,
            "train_seconds": self._seconds,
            "samples_per_second": self._samples / max(self._seconds, 1e-12),
            "lr": self._optimizers[0].param_groups[0]["lr"],
        }
        for scheduler in self._schedulers:
            scheduler.step()
        evaluate = self.eval_protocol is not None and (self.epoch % self.eval_every == 0 or self.epoch == self.epochs)
        if evaluate:
            start = time.perf_counter()
            metrics = self.evaluate()
            record.update(metrics)
            record["eval_seconds"] = time.perf_counter() - start
            value = metrics[self.metric]
            if value > self.best_value:
                self.best_value, self.best_epoch, self._bad_evals = value, self.epoch, 0
                record["best"] = True
                if self.out_dir is None:
                    self.best_state = self.model.state_dict()
                else:
                    self._save_model("best.npz")
            else:
                self._bad_evals += 1
                if self.patience is not None and self._bad_evals >= self.patience:
                    self.stopped_early = True
        self.history.append(record)
        self._batch, self._loss_sum, self._samples, self._seconds = 0, 0.0, 0, 0.0
        self._epoch_shuffle_state = self._shuffle_rng.bit_generator.state
        if self.progress:
            tqdm.write(self._summary_line(record), file=sys.stderr)
        if self.out_dir is not None:
            self._save_model("last.npz")
            self._save_checkpoint()
            with open(os.path.join(self.out_dir, "metrics.jsonl"), "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            if evaluate:
                self._plot()

    def _summary_line(self, record):
        parts = [f"epoch {record['epoch']}/{self.epochs}", f"loss {record['loss']:.5f}",
                 f"{record['train_seconds']:.1f}s", f"{record['samples_per_second']:.0f} samples/s"]
        if self.metric in record:
            keys = [key for key in record if "@" in key]
            parts.append(" ".join(f"{key} {record[key]:.4f}" for key in keys))
            if self.popularity is not None:
                parts.append("(popularity " + " ".join(f"{key} {self.popularity[key]:.4f}" for key in keys) + ")")
            if record.get("best"):
                parts.append("*")
        if self.stopped_early:
            parts.append(f"early stop: no {self.metric} gain in {self.patience} evaluations")
        return "  ".join(parts)

    def evaluate(self):
        """Metrics of the current model on the evaluation set (see the class doc); {} when there is none."""
        if self.eval_split is None:
            return {}
        result = evaluate_recommender(self.model, self._dataset, self.eval_split, ks=self.ks, metrics=self._metric_names)
        result.pop("users", None)
        return result

    def result(self):
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
        }

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

    # ----------------------------------------------------------------------------- checkpoints
    def _save_model(self, name):
        path = os.path.join(self.out_dir, name)
        _atomic_write(path, lambda handle: self.model.save(handle))

    def _save_checkpoint(self):
        """checkpoint.npz: model, optimizer state, RNG states, position, best metric, history (atomic)."""
        if self.out_dir is None:
            return
        arrays = {f"model.{name}": value for name, value in self.model.state_dict().items()}
        optimizer_trees = [_encode_tree(opt.state_dict(), arrays, f"optimizer.{i}") for i, opt in enumerate(self._optimizers)]
        meta = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config(),
            "epoch": self.epoch,
            "batch": self._batch,
            "loss_sum": self._loss_sum,
            "samples": self._samples,
            "seconds": self._seconds,
            "best_value": None if self.best_epoch is None else self.best_value,
            "best_epoch": self.best_epoch,
            "bad_evals": self._bad_evals,
            "stopped_early": self.stopped_early,
            "history": self.history,
            "shuffle_rng": self._epoch_shuffle_state,
            "sampler": self.sampler.state_dict(),
            "model_rngs": {path: rng.bit_generator.state for path, rng in _generators(self.model)},
            "optimizers": optimizer_trees,
            "schedulers": [scheduler.state_dict() for scheduler in self._schedulers],
        }
        arrays["meta"] = np.array(json.dumps(meta))
        _atomic_write(os.path.join(self.out_dir, "checkpoint.npz"), lambda handle: np.savez(handle, **arrays))

    def _load_checkpoint(self, path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"resume: no checkpoint at {path}")
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta = json.loads(str(arrays.pop("meta")[()]))
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"resume: {path} has checkpoint format {meta.get('format')}, expected {CHECKPOINT_FORMAT}")
        saved, current = meta["config"], self.config()
        changed = [f"{key}={saved.get(key)!r} (now {current[key]!r})" for key in _RESUME_KEYS
                   if saved.get(key, _RESUME_DEFAULTS.get(key)) != current[key]]
        if changed:
            raise ValueError("resume: the checkpoint was written with different settings: " + ", ".join(changed))
        self.model.load_state_dict({key[len("model."):]: value for key, value in arrays.items() if key.startswith("model.")})
        if len(meta["optimizers"]) != len(self._optimizers):
            raise ValueError(f"resume: the checkpoint holds {len(meta['optimizers'])} optimizers, expected {len(self._optimizers)}")
        for optimizer, tree in zip(self._optimizers, meta["optimizers"]):
            optimizer.load_state_dict(_decode_tree(tree, arrays))
        for scheduler, state in zip(self._schedulers, meta.get("schedulers", [])):
            scheduler.load_state_dict(state)
        rngs = dict(_generators(self.model))
        for key, state in meta["model_rngs"].items():
            rngs[key].bit_generator.state = state
        self.sampler.load_state_dict(meta["sampler"])
        self._epoch_shuffle_state = meta["shuffle_rng"]
        self.epoch, self._batch = meta["epoch"], meta["batch"]
        self._loss_sum, self._samples, self._seconds = meta["loss_sum"], meta["samples"], meta["seconds"]
        self.best_epoch, self._bad_evals = meta["best_epoch"], meta["bad_evals"]
        self.best_value = -math.inf if meta["best_value"] is None else meta["best_value"]
        self.stopped_early = meta["stopped_early"]
        self.history = meta["history"]

    def _rewrite_metrics_file(self):
        """metrics.jsonl = the history so far (empty for a fresh run): consistent with the checkpoint."""
        text = "".join(json.dumps(record) + "\n" for record in self.history)
        _atomic_write(os.path.join(self.out_dir, "metrics.jsonl"), lambda handle: handle.write(text.encode()))

    def _plot(self):
        """learning_curve.png: training loss and the evaluation metric (with popularity) per epoch."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(9, 3.5), layout="constrained")
        FigureCanvasAgg(figure)
        loss_axis, metric_axis = figure.subplots(1, 2)
        loss_axis.plot([r["epoch"] for r in self.history], [r["loss"] for r in self.history], marker=".")
        loss_axis.set(xlabel="epoch", ylabel="training loss", title=f"{self.loss} loss")
        evaluated = [r for r in self.history if self.metric in r]
        metric_axis.plot([r["epoch"] for r in evaluated], [r[self.metric] for r in evaluated], marker=".", label="model")
        if self.popularity is not None:
            metric_axis.axhline(self.popularity[self.metric], color="gray", linestyle="--", label="popularity")
        if self.best_epoch is not None:
            metric_axis.axvline(self.best_epoch, color="green", linestyle=":", label=f"best (epoch {self.best_epoch})")
        metric_axis.set(xlabel="epoch", ylabel=self.metric, title=f"{self.metric} on {self.eval_split}")
        metric_axis.legend(loc="lower right")
        _atomic_write(os.path.join(self.out_dir, "learning_curve.png"), lambda handle: figure.savefig(handle, format="png"))


class _Interrupted(Exception):
    """Raised inside the batch loop after SIGINT, so that the checkpoint is written between batches."""


def _atomic_write(path, write):
    """Call write(binary file handle) on a temp file in path's directory, fsync, then os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp", delete=False)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        if os.path.exists(handle.name):
            os.remove(handle.name)
        raise


def _modules(module):
    """The module and all its sub-modules, depth first."""
    found = [module]
    for _, child in module.children():
        found.extend(_modules(child))
    return found


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


def _encode_tree(value, arrays, prefix):
    """A JSON-able copy of a nested state (dicts, lists, tuples, scalars); arrays go to `arrays`.

    Dict keys keep their type (optimizer state is keyed by int) and tuples stay tuples, so that
    `_decode_tree` gives back an equal structure.
    """
    if isinstance(value, np.ndarray):
        arrays[prefix] = value
        return {"__array__": prefix}
    if isinstance(value, dict):
        return {"__dict__": [[key, _encode_tree(item, arrays, f"{prefix}.{key}")] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_encode_tree(item, arrays, f"{prefix}.{i}") for i, item in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, np.generic):
        return {"__scalar__": value.item(), "dtype": value.dtype.str}
    return value


def _decode_tree(value, arrays):
    if isinstance(value, list):
        return [_decode_tree(item, arrays) for item in value]
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]]
        if "__dict__" in value:
            return {key: _decode_tree(item, arrays) for key, item in value["__dict__"]}
        if "__tuple__" in value:
            return tuple(_decode_tree(item, arrays) for item in value["__tuple__"])
        if "__scalar__" in value:
            return np.array(value["__scalar__"], dtype=value["dtype"])[()]
    return value
