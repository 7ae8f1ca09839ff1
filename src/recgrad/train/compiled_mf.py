"""The compiled MF training loop: a whole epoch of `recgrad.kernels.mf` on an MF model's own tables.

This is the Python side of the kernels: it turns a model, its training matrix and run settings into
the arrays the kernels take, and keeps what a resume needs. The Trainer runs it instead of its
NumPy batch loop wherever it computes the same algorithm (`covers`): an MF model, per-user
negatives from the uniform or popularity sampler, any loss (BPR, BCE, InfoNCE, with the log-Q
correction and dynamic negative sampling), and

- optimizer "sparse_adam": minibatch lazy Adam, the NumPy loop's `SparseAdam` step on the same
  batches and the same kind of negatives, equal up to float rounding;
- optimizer "hogwild": SGD with a step per interaction (implicit's algorithm); its NumPy reference
  is the batch loop at batch size 1 with `SGD`, which one compiled thread reproduces exactly up to
  float rounding (with more threads, concurrent updates of a row may lose a few steps).

The kernels draw negatives from their own random streams (keyed by seed and epoch; see the
kernels' module doc), so the compiled and NumPy loops visit the same positives in the same
batches but sample different negatives.
"""

import time

import numba
import numpy as np

from recgrad.kernels.mf import LOSS_CODES, epoch_key, hogwild_epoch, lazy_adam_epoch, sampling_tables
from recgrad.models.mf import MF
from recgrad.optim.sgd import SGD
from recgrad.optim.sparse_adam import SparseAdam
from recgrad.samplers import as_canonical_csr, epoch_order
from recgrad.train import settings as run_settings

__all__ = ["CompiledMFLoop", "covers"]

OPTIMIZERS = ("sparse_adam", "hogwild")


def covers(model, values, sampler_is_named=True, optimizer_is_named=True):
    """(True, "") when the compiled loop computes this run, else (False, what it does not cover).

    values: resolved run settings. sampler_is_named / optimizer_is_named: False when the caller
    passes its own sampler or optimizer object (the kernels draw and step themselves).
    """
    if type(model) is not MF:
        return False, f"the {type(model).__name__} model (the compiled loop trains MF)"
    if values["optimizer"] not in OPTIMIZERS or not optimizer_is_named:
        return False, f"optimizer {values['optimizer']!r} (compiled: {', '.join(OPTIMIZERS)})"
    if values["negatives_mode"] != "per_user":
        return False, f"negatives_mode {values['negatives_mode']!r} (compiled: per_user)"
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
        optimizer: "sparse_adam" or "hogwild" (built from the settings), or the optimizer whose
            hyper-parameters and state the loop uses and updates: a `SparseAdam` over exactly
            [user table, item table] (lazy Adam; its m, v and step are the kernel's), or an `SGD`
            over them (hogwild; only its lr is read, so that a schedule applies).
        shuffle_rng: a numpy Generator for the epoch order (e.g. the Trainer's, so that its
            checkpoint holds the shuffle state); default: seeded from the seed as the Trainer's.
        exclude_positives: re-draw negatives that are the user's positives (default True, as the
            NumPy samplers).
        **settings: run settings (`recgrad.train.settings`), e.g. loss="bpr", optimizer="hogwild",
            lr=0.05, negatives=1, dns_candidates=32, l2=0.03, seed=0; checked there.

    `train_epoch()` runs one epoch and returns {"loss", "samples", "seconds", "samples_per_second",
    "batch_losses" (sparse_adam)}. Threads: `recgrad.kernels.set_num_threads`.

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
        elif isinstance(optimizer, SparseAdam | SGD):
            settings["optimizer"] = "sparse_adam" if isinstance(optimizer, SparseAdam) else "hogwild"
            settings["lr"] = optimizer.param_groups[0]["lr"]
        values = run_settings.resolve(settings, names=run_settings.trainer_settings())
        if not isinstance(model, MF):
            raise TypeError(f"model: expected a recgrad.models.MF, got {type(model).__name__}")
        covered, why = covers(model, values)
        if not covered:
            raise ValueError(f"the compiled MF loop does not cover {why}")
        self.model, self.values = model, values
        self.train = as_canonical_csr(train_csr)
        if self.train.shape != (model.n_users, model.n_items):
            raise ValueError(f"train_csr: shape {self.train.shape}, the model has {model.n_users} users "
                             f"and {model.n_items} items")
        if self.train.nnz == 0:
            raise ValueError("train_csr: no interactions")
        self.exclude_positives = bool(exclude_positives)
        self._indptr, self._indices, self._alias_prob, self._alias_item = sampling_tables(
            self.train, values["sampler"], values["popularity_alpha"] or 0.75, self.exclude_positives)
        self._log_q = np.zeros(0)
        if values["logq_correction"] and values["sampler"] == "popularity":  # uniform: a constant shift
            weights = np.bincount(self._indices, minlength=self.train.shape[1]).astype(np.float64) \
                ** float(values["popularity_alpha"])
            with np.errstate(divide="ignore"):
                self._log_q = np.log(weights / weights.sum())
        # An MF(normalize=True) scores by the cosine for every loss; a cosine InfoNCE takes it either way.
        self.cosine = values["similarity"] == "cosine" or model.normalize
        if shuffle_rng is None:
            shuffle_rng = np.random.default_rng(np.random.SeedSequence(values["seed"]).spawn(2)[0])
        elif not isinstance(shuffle_rng, np.random.Generator):
            raise TypeError(f"shuffle_rng: expected a numpy.random.Generator, got {type(shuffle_rng).__name__}")
        self.shuffle_rng = shuffle_rng
        self.epoch = 0
        self.optimizer = self._optimizer(optimizer)

    def _optimizer(self, optimizer):
        tables = [self.model.user_embedding.weight, self.model.item_embedding.weight]
        expected = SparseAdam if self.values["optimizer"] == "sparse_adam" else SGD
        if optimizer is None:
            if expected is SGD:
                return SGD(tables, lr=self.values["lr"])
            return SparseAdam(tables, lr=self.values["lr"], weight_decay=self.values["weight_decay"])
        held = [id(p) for group in optimizer.param_groups for p in group["params"]]
        if type(optimizer) is not expected or len(optimizer.param_groups) != 1 or held != [id(p) for p in tables]:
            raise ValueError(f"optimizer: expected a {expected.__name__} over exactly the model's user and item tables")
        return optimizer

    def _adam_state(self):
        group = self.optimizer.param_groups[0]
        states = []
        for index, param in enumerate(group["params"]):
            state = self.optimizer.state.setdefault(index, {})
            if not state:
                state.update(step=0, exp_avg=np.zeros_like(param.data), exp_avg_sq=np.zeros_like(param.data))
            states.append(state)
        return group, states

    def train_epoch(self, negatives=None):
        """One epoch over every training interaction; returns a dict of statistics.

        negatives: optional int array (nnz, K C): the negatives (with DNS: the candidates) of the
            p-th interaction of this epoch's shuffled order (e.g. those the reference sampler drew);
            None samples them.
        """
        values = self.values
        users, items = epoch_order(self.train, self.shuffle_rng, values["epoch_sampling"])
        k, per = values["negatives"], values["dns_candidates"]
        if negatives is None:
            negatives = np.zeros((0, k * per), dtype=np.int64)
        else:
            negatives = np.ascontiguousarray(negatives, dtype=np.int64)
            if negatives.shape != (users.size, k * per):
                raise ValueError(f"negatives: expected shape ({users.size}, {k * per}), got {negatives.shape}")
            if negatives.size and (negatives.min() < 0 or negatives.max() >= self.train.shape[1]):
                raise ValueError(f"negatives: item ids must be in [0, {self.train.shape[1]})")
        P = self.model.user_embedding.weight.data
        Q = self.model.item_embedding.weight.data
        key = epoch_key(values["seed"], self.epoch)
        temperature = values["temperature"] or 0.1
        common = (self.train.shape[1], self._indptr, self._indices, self._alias_prob, self._alias_item,
                  self.exclude_positives, LOSS_CODES[values["loss"]], self.cosine, 1.0 / temperature, self._log_q)
        start = time.perf_counter()
        result = {}
        group = self.optimizer.param_groups[0]
        if values["optimizer"] == "hogwild":
            chunks = numba.get_num_threads()
            chunk_loss = np.zeros(chunks)
            hogwild_epoch(P, Q, users, items, negatives, k, per, self.model.normalize, *common, float(group["lr"]),
                          values["l2"], key, chunks, chunk_loss)
            result["loss"] = float(chunk_loss.sum() / users.size)
        else:
            group, (state_p, state_q) = self._adam_state()
            beta1, beta2 = (float(b) for b in group["betas"])
            batch_size = values["batch_size"]
            steps = np.array([state_p["step"], state_q["step"]], dtype=np.int64)
            n_batches = -(-users.size // batch_size)
            batch_losses = np.zeros(n_batches)
            lazy_adam_epoch(P, Q, state_p["exp_avg"], state_p["exp_avg_sq"], state_q["exp_avg"],
                            state_q["exp_avg_sq"], steps, users, items, negatives, k, per, self.model.normalize,
                            batch_size, *common, values["l2"], float(group["lr"]), beta1, beta2,
                            float(group["eps"]), float(group["weight_decay"]), key, numba.get_num_threads(),
                            batch_losses)
            state_p["step"], state_q["step"] = int(steps[0]), int(steps[1])
            sizes = np.minimum(batch_size, users.size - batch_size * np.arange(n_batches))
            result["loss"] = float(np.sum(batch_losses * sizes) / users.size)
            result["batch_losses"] = batch_losses
        seconds = time.perf_counter() - start
        self.epoch += 1
        result.update(samples=int(users.size), seconds=seconds, samples_per_second=users.size / max(seconds, 1e-12))
        return result

    def state_dict(self):
        """{"epoch", "shuffle_rng"} (JSON-able); the Adam state is the optimizer's own state_dict()."""
        return {"epoch": self.epoch, "shuffle_rng": self.shuffle_rng.bit_generator.state}

    def load_state_dict(self, state):
        """Continue at the start of epoch state["epoch"] with the saved shuffle state."""
        self.epoch = int(state["epoch"])
        self.shuffle_rng.bit_generator.state = state["shuffle_rng"]
