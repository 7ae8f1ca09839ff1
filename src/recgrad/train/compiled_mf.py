"""The compiled MF training loop: a whole epoch of `recgrad.kernels.mf` on an MF model's own tables.

This is the Python side of the kernels: it turns a model, its training matrix and run settings into
the arrays the kernels take, and keeps what a resume needs. It computes the same algorithm as the
Trainer's NumPy batch loop (`computes`) for an MF model (float32 or float64), the uniform or
popularity sampler by name, any loss (BPR, BCE, InfoNCE with dot or cosine similarity and the
log-Q correction, CCL), negatives per user (with dynamic negative sampling) or shared by the batch, and
every optimizer the settings name; the Trainer runs it there (`covers`) except with more than
`SHARED_NEGATIVES_MAX` shared negatives, which the NumPy loop's matrix products run faster:

- "adam", "adamw", "sgd": the dense algorithms as the Trainer builds them (`build.build_optimizers`:
  `Adam` with its L2 weight decay, `AdamW` with its decoupled decay, `SGD` with its weight decay, and
  an `SGD` object's momentum, dampening and Nesterov): each batch's row gradients are summed, then
  every row of both tables takes the optimizer's step (a row with no gradient still moves on its
  moments and decay), equal to the NumPy loop on the same batches and negatives up to float rounding;
- "sparse_adam": minibatch lazy Adam, the NumPy loop's `SparseAdam` step (only the batch's rows);
- "hogwild": SGD with a step per interaction (implicit's algorithm); its NumPy reference is the batch
  loop at batch size 1 with `SGD`, which one compiled thread reproduces exactly up to float rounding
  (with more threads, concurrent updates of a row may lose a few steps).

The optimizer's own state arrays (exp_avg, exp_avg_sq, step; momentum_buffer) are the kernels'
state, so its `state_dict()` checkpoints the run and a resume continues exactly. In-batch negatives,
sampler or optimizer objects passed to the Trainer, and other models run the NumPy loop.

The kernels draw negatives from their own random streams (keyed by seed and epoch; see the
kernels' module doc), so the compiled and NumPy loops visit the same positives in the same
batches but sample different negatives.
"""

import math
import time

import numba
import numpy as np

from recgrad.kernels.mf import LOSS_CODES, RULES, epoch_key, hogwild_epoch, minibatch_epoch, sampling_tables
from recgrad.models.mf import MF
from recgrad.optim.adam import Adam, bias_corrections
from recgrad.optim.adamw import AdamW
from recgrad.optim.sgd import SGD
from recgrad.optim.sparse_adam import SparseAdam
from recgrad.samplers import as_canonical_csr, epoch_order
from recgrad.train import build
from recgrad.train import settings as run_settings

__all__ = ["CompiledMFLoop", "covers", "computes"]

OPTIMIZERS = ("adam", "adamw", "sgd", "sparse_adam", "hogwild")
NEGATIVES_MODES = ("per_user", "shared")
_NAMES = {SparseAdam: "sparse_adam", Adam: "adam", AdamW: "adamw"}


# Shared negatives are scored one sample at a time in the kernel, the NumPy loop scores them with
# matrix products: with one thread on Gowalla (dim 64, batch 2048, cosine InfoNCE, sparse_adam) an
# epoch took 8.4 s compiled vs 11.0 s NumPy at K = 64, but 144 s vs 51 s at K = 1024.
SHARED_NEGATIVES_MAX = 64


def covers(model, values, sampler_is_named=True, optimizer_is_named=True):
    """(True, "") when the Trainer runs this run on the compiled loop, else (False, why not): where
    the loop computes the same algorithm (`computes`), except more than SHARED_NEGATIVES_MAX shared
    negatives, which the NumPy loop's matrix products run faster.
    """
    computed, why = computes(model, values, sampler_is_named, optimizer_is_named)
    if computed and values["negatives_mode"] == "shared" and values["negatives"] > SHARED_NEGATIVES_MAX:
        return False, (f"{values['negatives']} shared negatives (compiled: up to {SHARED_NEGATIVES_MAX}; the NumPy "
                       "loop's matrix products are faster beyond)")
    return computed, why


def computes(model, values, sampler_is_named=True, optimizer_is_named=True):
    """(True, "") when the compiled loop computes this run, else (False, what it does not cover).

    values: resolved run settings. sampler_is_named / optimizer_is_named: False when the caller
    passes its own sampler or optimizer object (the kernels draw and step themselves).
    """
    if type(model) is not MF:
        return False, f"the {type(model).__name__} model (the compiled loop trains MF)"
    if values["optimizer"] not in OPTIMIZERS or not optimizer_is_named:
        return False, f"optimizer {values['optimizer']!r} (compiled: {', '.join(OPTIMIZERS)} by name)"
    if values["negatives_mode"] not in NEGATIVES_MODES:
        return False, f"negatives_mode {values['negatives_mode']!r} (compiled: {', '.join(NEGATIVES_MODES)})"
    if not sampler_is_named:
        return False, "a sampler object (compiled: the uniform and popularity samplers by name)"
    if model.user_embedding.weight.data.dtype not in (np.float32, np.float64):
        return False, f"{model.user_embedding.weight.data.dtype} tables"
    return True, ""


class CompiledMFLoop:
    """Epochs of MF training with the compiled kernels, on the model's own tables (updated in place).

    Args:
        model: a `recgrad.models.MF` (float32 or float64).
        train_csr: scipy sparse user x item matrix of training interactions (shape = the model's).
        optimizer: a name of `OPTIMIZERS` (the optimizer is then built as the Trainer builds it), or
            the optimizer whose hyper-parameters and state the loop uses and updates, over exactly
            [user table, item table]: a `SparseAdam`, `Adam` or `AdamW` (without amsgrad), or an
            `SGD`, which steps per interaction (hogwild; plain SGD, only its lr is read) when no
            batch_size is given and per batch (its momentum, dampening, Nesterov, weight decay) when
            one is. The lr is read at each epoch, so that a schedule applies.
        shuffle_rng: a numpy Generator for the epoch order (e.g. the Trainer's, so that its
            checkpoint holds the shuffle state); default: seeded from the seed as the Trainer's.
        exclude_positives: re-draw per-user negatives that are the user's positives (default True,
            as the NumPy samplers; shared negatives exclude nothing).
        **settings: run settings (`recgrad.train.settings`), e.g. loss="bpr", lr=0.05, negatives=1,
            negatives_mode="shared", dns_candidates=32, l2=0.03, seed=0; checked there.

    `train_epoch()` runs one epoch and returns {"loss", "samples", "seconds", "samples_per_second",
    "batch_losses" (minibatch optimizers)}. Threads: `recgrad.kernels.set_num_threads`.

    Example:
        >>> from recgrad.data import synthetic
        >>> data = synthetic(n_users=200, n_items=300, seed=0)
        >>> model = MF(data.n_users, data.n_items, dim=16, sparse=True, rng=0)
        >>> loop = CompiledMFLoop(model, data.train, optimizer="sparse_adam", lr=1e-2)
        >>> loop.train_epoch()["loss"] < 0.7
        True
    """

    def __init__(self, model, train_csr, optimizer="sparse_adam", shuffle_rng=None, exclude_positives=True,
                 **settings):
        if isinstance(optimizer, str):
            settings["optimizer"], optimizer = optimizer, None
        elif isinstance(optimizer, SparseAdam | Adam | AdamW | SGD):
            group = optimizer.param_groups[0]
            if type(optimizer) is SGD:
                settings["optimizer"] = "hogwild" if settings.get("batch_size") is None else "sgd"
            else:
                settings["optimizer"] = _NAMES[type(optimizer)]
            settings["lr"] = group["lr"]
            if group["weight_decay"] or settings["optimizer"] != "hogwild":
                settings["weight_decay"] = group["weight_decay"]
        values = run_settings.resolve(settings, names=run_settings.trainer_settings())
        if not isinstance(model, MF):
            raise TypeError(f"model: expected a recgrad.models.MF, got {type(model).__name__}")
        covered, why = computes(model, values)
        if not covered:
            raise ValueError(f"the compiled MF loop does not cover {why}")
        self.model, self.values = model, values
        self.train = as_canonical_csr(train_csr)
        if self.train.shape != (model.n_users, model.n_items):
            raise ValueError(f"train_csr: shape {self.train.shape}, the model has {model.n_users} users "
                             f"and {model.n_items} items")
        if self.train.nnz == 0:
            raise ValueError("train_csr: no interactions")
        self.shared = values["negatives_mode"] == "shared"
        self.exclude_positives = bool(exclude_positives) and not self.shared
        self._indptr, self._indices, self._alias_prob, self._alias_item = sampling_tables(
            self.train, values["sampler"], values["popularity_alpha"] or 0.75, self.exclude_positives)
        self._log_q = np.zeros(0)
        if values["logq_correction"] and values["sampler"] == "popularity":  # uniform: a constant shift
            weights = np.bincount(self._indices, minlength=self.train.shape[1]).astype(np.float64) \
                ** float(values["popularity_alpha"])
            with np.errstate(divide="ignore"):
                self._log_q = np.log(weights / weights.sum())
        # An MF(normalize=True) scores by the cosine for every loss; a cosine InfoNCE and CCL take it either way.
        self.cosine = values["similarity"] == "cosine" or values["loss"] == "ccl" or model.normalize
        if shuffle_rng is None:
            shuffle_rng = np.random.default_rng(np.random.SeedSequence(values["seed"]).spawn(2)[0])
        elif not isinstance(shuffle_rng, np.random.Generator):
            raise TypeError(f"shuffle_rng: expected a numpy.random.Generator, got {type(shuffle_rng).__name__}")
        self.shuffle_rng = shuffle_rng
        self.epoch = 0
        self.optimizer = self._optimizer(optimizer)

    def _optimizer(self, optimizer):
        tables = [self.model.user_embedding.weight, self.model.item_embedding.weight]
        name = self.values["optimizer"]
        if optimizer is None:
            return build.build_optimizers(self.values, self.model)[0][0]
        held = [id(p) for group in optimizer.param_groups for p in group["params"]]
        if len(optimizer.param_groups) != 1 or held != [id(p) for p in tables]:
            raise ValueError(f"optimizer: expected one parameter group over exactly the model's user and item tables, "
                             f"got a {type(optimizer).__name__} over {len(held)} parameters")
        group = optimizer.param_groups[0]
        if group.get("amsgrad") or group.get("maximize"):
            raise ValueError(f"optimizer: the compiled MF loop steps {type(optimizer).__name__} without amsgrad "
                             "and maximize")
        if name == "hogwild" and group["momentum"]:
            raise ValueError(f"optimizer: hogwild SGD has no momentum, got momentum={group['momentum']}")
        return optimizer

    def _state(self):
        """The optimizer's state dict of each table, created empty as its first step creates it."""
        return [self.optimizer.state.setdefault(index, {}) for index in range(2)]

    def _minibatch_step(self, n_batches):
        """(state arrays, rule constants, per-batch scalars, bookkeeping after the epoch) of the optimizer.

        The scalars of every step are computed here as the optimizer's own step computes them.
        """
        name, group = self.values["optimizer"], self.optimizer.param_groups[0]
        tables = [self.model.user_embedding.weight.data, self.model.item_embedding.weight.data]
        states = self._state()
        lr, decay = float(group["lr"]), float(group["weight_decay"])
        schedule = np.zeros((n_batches, 2, 2))
        if name == "sgd":
            momentum = float(group["momentum"])
            hyper = [lr, momentum, 1.0 - float(group["dampening"]), decay, float(group["nesterov"])]
            if momentum == 0.0:
                return (tables[0], tables[0], tables[1], tables[1]), np.array(hyper), schedule, lambda: None
            for table, state in enumerate(states):
                schedule[:, table, 0] = 2
                if "momentum_buffer" not in state:  # the first step sets b = g
                    state["momentum_buffer"] = np.zeros_like(tables[table])
                    schedule[0, table, 0] = 1
            buffers = [state["momentum_buffer"] for state in states]
            return (buffers[0], buffers[0], buffers[1], buffers[1]), np.array(hyper), schedule, lambda: None
        beta1, beta2 = (float(beta) for beta in group["betas"])
        for table, state in enumerate(states):
            if not state:
                state.update(step=0, exp_avg=np.zeros_like(tables[table]), exp_avg_sq=np.zeros_like(tables[table]))
            for batch in range(n_batches):
                bias_correction1, bias_correction2 = bias_corrections(beta1, beta2, state["step"] + 1 + batch)
                if name == "sparse_adam":
                    schedule[batch, table, 0] = lr * math.sqrt(bias_correction2) / bias_correction1
                else:
                    schedule[batch, table] = lr / bias_correction1, math.sqrt(bias_correction2)
        hyper = [1.0 - beta1, 1.0 - beta2, float(group["eps"]), 1.0 if name == "adam" else 1.0 - lr * decay, beta2,
                 decay if name == "adam" else 0.0]

        def count_steps():
            for state in states:
                state["step"] += n_batches

        arrays = (states[0]["exp_avg"], states[0]["exp_avg_sq"], states[1]["exp_avg"], states[1]["exp_avg_sq"])
        return arrays, np.array(hyper), schedule, count_steps

    def train_epoch(self, negatives=None):
        """One epoch over every training interaction; returns a dict of statistics.

        negatives: optional int array: per user (nnz, K C), the negatives (with DNS: the candidates)
            of the p-th interaction of this epoch's shuffled order; shared (n_batches, K), those of
            each batch (e.g. those the reference sampler drew); None samples them.
        """
        values = self.values
        users, items = epoch_order(self.train, self.shuffle_rng, values["epoch_sampling"])
        k, per = values["negatives"], values["dns_candidates"] or 1  # none applies to shared negatives
        batch_size = values["batch_size"]
        n_batches = 0 if batch_size is None else -(-users.size // batch_size)
        shape = (n_batches, k) if self.shared else (users.size, k * per)
        if negatives is None:
            negatives = np.zeros((0, shape[1]), dtype=np.int64)
        else:
            negatives = np.ascontiguousarray(negatives, dtype=np.int64)
            if negatives.shape != shape:
                raise ValueError(f"negatives: expected shape {shape}, got {negatives.shape}")
            if negatives.size and (negatives.min() < 0 or negatives.max() >= self.train.shape[1]):
                raise ValueError(f"negatives: item ids must be in [0, {self.train.shape[1]})")
        P = self.model.user_embedding.weight.data
        Q = self.model.item_embedding.weight.data
        key = epoch_key(values["seed"], self.epoch)
        inv_tau = 1.0 / (values["temperature"] or 0.1)
        margin, negative_weight = float(values["margin"] or 0.0), float(values["negative_weight"] or 0.0)
        loss = LOSS_CODES[values["loss"]]
        sampling = (self.train.shape[1], self._indptr, self._indices, self._alias_prob, self._alias_item,
                    self.exclude_positives)
        start = time.perf_counter()
        result = {}
        if values["optimizer"] == "hogwild":
            chunks = numba.get_num_threads()
            chunk_loss = np.zeros(chunks)
            hogwild_epoch(P, Q, users, items, negatives, k, per, self.model.normalize, *sampling, loss, self.cosine,
                          inv_tau, margin, negative_weight, self._log_q, float(self.optimizer.param_groups[0]["lr"]),
                          values["l2"], key, chunks, chunk_loss)
            result["loss"] = float(chunk_loss.sum() / users.size)
        else:
            arrays, hyper, schedule, count_steps = self._minibatch_step(n_batches)
            batch_losses = np.zeros(n_batches)
            minibatch_epoch(P, Q, arrays, users, items, negatives, (k, per, self.shared, *sampling),
                            (loss, self.cosine, self.model.normalize, inv_tau, self._log_q, values["l2"], margin,
                             negative_weight),
                            RULES[values["optimizer"]], hyper, schedule, batch_size, key, numba.get_num_threads(),
                            batch_losses)
            count_steps()
            sizes = np.minimum(batch_size, users.size - batch_size * np.arange(n_batches))
            result["loss"] = float(np.sum(batch_losses * sizes) / users.size)
            result["batch_losses"] = batch_losses
        seconds = time.perf_counter() - start
        self.epoch += 1
        result.update(samples=int(users.size), seconds=seconds, samples_per_second=users.size / max(seconds, 1e-12))
        return result

    def state_dict(self):
        """{"epoch", "shuffle_rng"} (JSON-able); the optimizer state is the optimizer's own state_dict()."""
        return {"epoch": self.epoch, "shuffle_rng": self.shuffle_rng.bit_generator.state}

    def load_state_dict(self, state):
        """Continue at the start of epoch state["epoch"] with the saved shuffle state."""
        self.epoch = int(state["epoch"])
        self.shuffle_rng.bit_generator.state = state["shuffle_rng"]
