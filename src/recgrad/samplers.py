"""Negative samplers and the positive-interaction iterator used by the Trainer.

Each sampler names its distribution and its collision policy (what happens when a drawn
"negative" is in fact one of the user's training positives):

- `UniformSampler`: q(j) = 1 / n_items. With `exclude_positives=True` a colliding draw is
  re-drawn, so a user's negatives are uniform over the items that user has NOT interacted with,
  q_u(j) = 1 / (n_items - |I_u|) for j not in I_u. This is the LightGCN code's sampler (it loops
  until it finds a non-positive), done here for a whole batch at once.
- `PopularitySampler`: q(j) = c_j^alpha / sum_l c_l^alpha, c_j the number of training users of
  item j (alpha = 0.75 is word2vec's unigram^0.75; alpha = 0 is uniform over all items, alpha = 1
  is proportional to popularity). With `exclude_positives=True` collisions are re-drawn like the
  uniform sampler's, so a user's negatives follow q restricted to the user's non-positives and
  renormalised: q_u(j) = q(j) / (1 - sum_{l in I_u} q(l)). With `exclude_positives=False`
  collisions are kept (a positive can come back as a "negative"), and q is exactly the
  distribution `log_q` reports.

Re-drawing is vectorised: the whole (B, K) block is drawn, collisions are found by one
`searchsorted` of the keys `user * n_items + item` in the sorted keys of all training positives
(a CSR matrix with sorted column indices stores them in exactly that order), and only the colliding
entries are drawn again. After `max_rounds` rounds the few entries still colliding (only a user
who has interacted with nearly all of the sampler's support gets there) are drawn exactly from
that user's renormalised complement, which is the distribution the re-draw loop converges to.
A user with no item left to draw (every item of nonzero probability is a positive) raises
ValueError naming the user.

What other libraries do (read from their source; neither documents the distribution):
implicit's BPR (`implicit/cpu/bpr.pyx`) draws the negative as the item of a uniformly chosen
training interaction, i.e. in proportion to item popularity (alpha = 1), and with
`verify_negative_samples=True` skips the (user, positive, negative) triple when the negative is
a positive instead of re-drawing. cornac's BPR (`cornac/models/bpr/recom_bpr.pyx`) draws the
negative uniformly over all items and likewise skips the triple on a collision.

Samplers own a `numpy.random.Generator`; `state_dict()` / `load_state_dict()` save and restore
its bit-generator state so that a resumed run draws exactly the negatives an uninterrupted run
would have drawn.
"""

import numpy as np
import scipy.sparse as sp

from recgrad.init import as_generator
from recgrad.kernels.mf import epoch_key, sample_into, sampling_tables

__all__ = ["NegativeSampler", "UniformSampler", "PopularitySampler", "PerUserNegatives", "SharedNegatives",
           "InBatchNegatives", "DynamicNegatives", "sample_negatives", "as_canonical_csr", "epoch_batches",
           "epoch_order",
           "EPOCH_SAMPLING", "check_epoch_sampling"]


def as_canonical_csr(train_csr, name="train_csr"):
    """A CSR matrix with sorted, de-duplicated column indices (copied only when needed).

    The samplers' membership test relies on this order (row-major, columns sorted in a row).
    """
    if not sp.issparse(train_csr):
        raise TypeError(f"{name}: expected a scipy.sparse user x item matrix, got {type(train_csr).__name__}")
    csr = sp.csr_matrix(train_csr)
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()  # also sorts the indices
    return csr


def _row_ids(csr):
    """The user (row) of every stored interaction, in CSR order: shape (nnz,), int64."""
    return np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))


class NegativeSampler:
    """Base class of the samplers: the collision loop, argument checks and the RNG state.

    A subclass sets `self._weights` (unnormalised item weights, shape (n_items,), or None for
    uniform) before calling `_setup`, and implements `_draw(size)`: unconditional draws from q.
    """

    def __init__(self, train_csr, exclude_positives, seed, max_rounds):
        self.train = as_canonical_csr(train_csr)
        self.n_users, self.n_items = self.train.shape
        if self.n_items == 0:
            raise ValueError("train_csr: the matrix has no items to sample")
        if not isinstance(exclude_positives, (bool, np.bool_)):
            raise TypeError(f"exclude_positives: expected a bool, got {type(exclude_positives).__name__}")
        if not isinstance(max_rounds, (int, np.integer)) or max_rounds < 1:
            raise ValueError(f"max_rounds: expected a positive int, got {max_rounds!r}")
        self.exclude_positives = bool(exclude_positives)
        self.max_rounds = int(max_rounds)
        self.rng = as_generator(seed)
        rows = _row_ids(self.train)
        # Sorted keys of every training positive: CSR order is row-major with sorted columns.
        self._positive_keys = rows * self.n_items + self.train.indices.astype(np.int64)
        in_support = np.ones(self.n_items, dtype=bool) if self._weights is None else self._weights > 0
        support_size = int(np.count_nonzero(in_support))
        if support_size == 0:
            raise ValueError("the sampling distribution has no item of nonzero probability")
        positives_in_support = np.bincount(
            rows, weights=in_support[self.train.indices], minlength=self.n_users
        ).astype(np.int64)
        self._available = support_size - positives_in_support  # items a user can still draw

    def sample(self, users, k):
        """Draw `k` negatives for each user.

        Args:
            users: int array, shape (B,), user ids in [0, n_users).
            k: number of negatives per user (int >= 1).

        Returns:
            int64 array of item ids, shape (B, k).
        """
        users = self._check_users(users)
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k: expected a positive int, got {k!r}")
        k = int(k)
        items = self._draw((users.size, k))
        if not self.exclude_positives or users.size == 0:
            return items
        stuck = users[self._available[users] == 0]
        if stuck.size:
            raise ValueError(
                f"users: user(s) {np.unique(stuck)[:10].tolist()} have interacted with every item the "
                "sampler can draw, so no negative exists; drop them or use exclude_positives=False"
            )
        flat_users = np.repeat(users, k)
        flat_items = items.reshape(-1)
        todo = np.flatnonzero(self._is_positive(flat_users, flat_items))
        rounds = 0
        while todo.size and rounds < self.max_rounds:
            flat_items[todo] = self._draw(todo.size)
            todo = todo[self._is_positive(flat_users[todo], flat_items[todo])]
            rounds += 1
        if todo.size:
            self._draw_from_complement(flat_users, flat_items, todo)
        return items

    def sample_shared(self, k):
        """`k` items drawn from q for a whole batch, shape (k,): collisions with anyone's positives kept.

        Shared negatives (one set per batch, as sampled-softmax training uses) belong to no single
        user, so nothing is excluded; an item may repeat, and may be some user's positive.
        """
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k: expected a positive int, got {k!r}")
        return self._draw(int(k))

    def _is_positive(self, users, items):
        """Vectorised membership: is (users[i], items[i]) a training interaction? Shape (N,) bool."""
        keys = users * self.n_items + items
        if self._positive_keys.size == 0:
            return np.zeros(keys.shape, dtype=bool)
        position = np.minimum(np.searchsorted(self._positive_keys, keys), self._positive_keys.size - 1)
        return self._positive_keys[position] == keys

    def _draw_from_complement(self, flat_users, flat_items, todo):
        """Exact fallback: draw the entries `todo` from each user's renormalised non-positive set."""
        weights = np.ones(self.n_items) if self._weights is None else self._weights.astype(np.float64)
        for user in np.unique(flat_users[todo]):
            slots = todo[flat_users[todo] == user]
            p = weights.copy()
            p[self.train.indices[self.train.indptr[user]:self.train.indptr[user + 1]]] = 0.0
            flat_items[slots] = self.rng.choice(self.n_items, size=slots.size, p=p / p.sum())

    def _check_users(self, users):
        users = np.asarray(users)
        if users.ndim != 1 or users.dtype.kind not in "iu":
            raise ValueError(f"users: expected a 1-D int array, got dtype {users.dtype} and shape {users.shape}")
        users = users.astype(np.int64, copy=False)
        if users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise ValueError(f"users: ids must be in [0, {self.n_users}), got [{users.min()}, {users.max()}]")
        return users

    def state_dict(self):
        """{"rng": the bit-generator state} (a dict of Python ints and strings, JSON-serialisable)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        """Restore the RNG so the next `sample` call draws what it would have drawn when saved."""
        if "rng" not in state:
            raise KeyError("load_state_dict: missing key 'rng'")
        expected = type(self.rng.bit_generator).__name__
        if state["rng"].get("bit_generator") != expected:
            raise ValueError(
                f"load_state_dict: state is for {state['rng'].get('bit_generator')}, this sampler uses {expected}"
            )
        self.rng.bit_generator.state = state["rng"]


class UniformSampler(NegativeSampler):
    """Negatives uniform over the catalogue, q(j) = 1 / n_items; collisions re-drawn (see module doc).

    Args:
        train_csr: scipy sparse user x item matrix of training interactions (any nonzero = positive).
        exclude_positives: re-draw negatives that are the user's positives (default True, LightGCN's
            recipe); False keeps them.
        seed: int, None or numpy Generator (the sampler keeps the Generator it is given).
        max_rounds: re-draw rounds before the exact per-user fallback.

    Example:
        >>> import scipy.sparse as sp
        >>> sampler = UniformSampler(sp.csr_matrix([[1, 0, 0], [0, 1, 1]]), seed=0)
        >>> sampler.sample(np.array([1, 1]), 2).tolist()
        [[0, 0], [0, 0]]
    """

    def __init__(self, train_csr, exclude_positives=True, seed=None, max_rounds=20):
        self._weights = None
        super().__init__(train_csr, exclude_positives, seed, max_rounds)

    def _draw(self, size):
        return self.rng.integers(0, self.n_items, size=size, dtype=np.int64)

    def log_q(self, items):
        """log q(j) = -log(n_items) for every item, shape of `items` (float64)."""
        return np.full(np.shape(items), -np.log(self.n_items))

    def __repr__(self):
        return f"UniformSampler(n_items={self.n_items}, exclude_positives={self.exclude_positives})"


class PopularitySampler(NegativeSampler):
    """Negatives drawn with q(j) = c_j^alpha / sum_l c_l^alpha, c_j = training users of item j.

    Collision policy: with `exclude_positives=True` (default) collisions are re-drawn, so the
    user's negatives follow q restricted to the user's non-positives; with False they are kept.
    An item with no training interaction has q = 0 when alpha > 0 (it is never drawn); alpha = 0
    gives every item the same probability.

    Args:
        train_csr: scipy sparse user x item matrix of training interactions.
        alpha: exponent on the counts, >= 0 (0.75 by default, word2vec's choice).
        exclude_positives: re-draw (True) or keep (False) negatives that are the user's positives.
        seed: int, None or numpy Generator.
        max_rounds: re-draw rounds before the exact per-user fallback.

    `log_q(items)` gives log q(j) of the unconditional distribution, the quantity the log-Q
    correction subtracts from a sampled logit (Yi et al., "Sampling-Bias-Corrected Neural
    Modeling for Large Corpus Item Recommendations", RecSys 2019).
    """

    def __init__(self, train_csr, alpha=0.75, exclude_positives=True, seed=None, max_rounds=20):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha: expected a finite number >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        csr = as_canonical_csr(train_csr)
        self.counts = np.bincount(csr.indices, minlength=csr.shape[1]).astype(np.int64)
        self._weights = self.counts.astype(np.float64) ** self.alpha  # 0 ** 0 = 1: alpha = 0 is uniform
        total = self._weights.sum()
        self.probabilities = self._weights / total if total > 0 else self._weights
        self._cdf = np.cumsum(self.probabilities)
        super().__init__(csr, exclude_positives, seed, max_rounds)

    def _draw(self, size):
        # Inverse-CDF: the first j with cdf[j] > u. Clipped against cdf[-1] rounding just below 1.
        u = self.rng.random(size) * self._cdf[-1]
        return np.minimum(np.searchsorted(self._cdf, u, side="right"), self.n_items - 1).astype(np.int64)

    def log_q(self, items):
        """log q(j) for each item id (float64, same shape as `items`); -inf for a never-drawn item."""
        items = np.asarray(items)
        with np.errstate(divide="ignore"):
            return np.log(self.probabilities[items])

    def __repr__(self):
        return (
            f"PopularitySampler(n_items={self.n_items}, alpha={self.alpha}, "
            f"exclude_positives={self.exclude_positives})"
        )


# ------------------------------------------------------------------------- a batch's negatives
class PerUserNegatives:
    """K negatives of each user's own, (B, K): `sampler.sample(users, K)`.

    Every batch-negatives object has `draw(users, positives)` (the array an objective takes),
    `log_q(items)` (log of the draw distribution, for InfoNCE's log-Q correction), and
    `state_dict()` / `load_state_dict()` (the RNG, for exact resume).
    """

    def __init__(self, sampler, k):
        self.sampler, self.k = sampler, int(k)

    def draw(self, users, positives):
        return self.sampler.sample(users, self.k)

    def log_q(self, items):
        return self.sampler.log_q(items)

    def state_dict(self):
        return self.sampler.state_dict()

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state)


class SharedNegatives(PerUserNegatives):
    """One set of K negatives for the whole batch, (K,): `sampler.sample_shared(K)` (nothing excluded)."""

    def draw(self, users, positives):
        return self.sampler.sample_shared(self.k)


class DynamicNegatives(PerUserNegatives):
    """Dynamic negative sampling (DNS): each of the K negatives is the best-scoring of C draws, (B, K).

    The sampler draws K C candidates per user; negative k is the one of candidates kC .. kC + C - 1
    that `model.score` ranks highest under the current parameters (the first of equal scores). The
    choice is not differentiated: the loss is the plain one on the chosen negatives. Zhang, Chen,
    Wang & Yu, "Optimizing top-n collaborative filtering via dynamic negative item sampling",
    SIGIR 2013; RecBole's `dynamic` sampling with `candidate_num`. The chosen negatives no longer
    follow q, so there is no `log_q`.
    """

    def __init__(self, sampler, k, candidates, model):
        super().__init__(sampler, k)
        self.candidates, self.model = int(candidates), model

    def draw(self, users, positives):
        batch, k, per = users.size, self.k, self.candidates
        drawn = self.sampler.sample(users, k * per)
        groups = self.model.score(users, drawn).reshape(batch, k, per)
        choice = np.argmax(groups, axis=2)[..., None]
        return np.take_along_axis(drawn.reshape(batch, k, per), choice, axis=2)[..., 0]

    def log_q(self, items):
        raise ValueError("log_q: dynamically chosen negatives do not follow the sampler's distribution")


class InBatchNegatives:
    """No drawn negatives (None): InfoNCE takes the batch's other positives as the negatives.

    In-batch negatives are drawn in proportion to item frequency among the training
    interactions, so `log_q(items)` is the log of that frequency (-inf for an item no one has).
    """

    def __init__(self, train_csr):
        counts = np.bincount(as_canonical_csr(train_csr).indices, minlength=train_csr.shape[1]).astype(np.float64)
        with np.errstate(divide="ignore"):
            self._log_q = np.log(counts / counts.sum())

    def draw(self, users, positives):
        return None

    def log_q(self, items):
        return self._log_q[items]

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


EPOCH_SAMPLING = ("interactions", "users")


def check_epoch_sampling(sampling):
    """`sampling` itself if it is one of EPOCH_SAMPLING, else ValueError naming the option."""
    if sampling not in EPOCH_SAMPLING:
        raise ValueError(f"epoch_sampling: expected one of {EPOCH_SAMPLING}, got {sampling!r}")
    return sampling


def epoch_order(train_csr, rng, sampling="interactions"):
    """The (user, positive item) pairs of one epoch, in training order: two int64 arrays of shape (nnz,).

    sampling="interactions": every training interaction exactly once, in the order
        `rng.permutation(nnz)`; a user appears in proportion to its interactions.
    sampling="users": nnz independent draws of a user uniformly among the users with at least one
        training interaction, then of one of that user's positives uniformly. This is the
        sampler of the NGCF and LightGCN code (`UniformSample_original`: a random user, then a
        random positive of theirs), so every user weighs the same in the loss, as every user
        weighs the same in the per-user averaged Recall/NDCG; a user's interactions may be
        visited several times or not at all in one epoch.
    Either way the generator is advanced by a fixed sequence of calls, so saving its state before
    and restoring it reproduces the epoch.
    """
    check_epoch_sampling(sampling)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    csr = as_canonical_csr(train_csr)
    items = csr.indices.astype(np.int64)
    if sampling == "interactions":
        order = rng.permutation(csr.nnz)
        return _row_ids(csr)[order], items[order]
    degree = np.diff(csr.indptr)
    active = np.flatnonzero(degree).astype(np.int64)
    if active.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    users = active[rng.integers(0, active.size, size=csr.nnz)]
    # floor(U * degree) is uniform over 0..degree-1; the min guards U * degree rounding up to degree.
    offsets = np.minimum((rng.random(csr.nnz) * degree[users]).astype(np.int64), degree[users] - 1)
    return users, items[csr.indptr[users] + offsets]


def epoch_batches(train_csr, batch_size, rng, start_batch=0, sampling="interactions"):
    """Yield the (users, pos_items) batches of one epoch of `epoch_order(train_csr, rng, sampling)`.

    The epoch has nnz pairs in batches of `batch_size` (the last may be smaller); the order is
    drawn once, when the generator is first advanced, so saving `rng`'s state before the call and
    restoring it reproduces the epoch; `start_batch` skips the first batches of that same order
    (resuming mid-epoch).

    Args:
        train_csr: scipy sparse user x item matrix.
        batch_size: positive int.
        rng: numpy Generator (advanced by one epoch_order per call).
        start_batch: index of the first batch to yield.
        sampling: "interactions" (default) or "users" (see epoch_order).

    Yields:
        (users, items): int64 arrays of shape (b,), b <= batch_size.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    users, items = epoch_order(train_csr, rng, sampling)
    for start in range(int(start_batch) * batch_size, users.size, batch_size):
        yield users[start:start + batch_size], items[start:start + batch_size]


def sample_negatives(train_csr, users, k, sampler="uniform", popularity_alpha=0.75, exclude_positives=True, seed=0):
    """Draw k negatives for each user with the compiled sampler of `recgrad.kernels.mf`, in parallel.

    The uniform and popularity distributions and the collision policy of the samplers above, drawn
    from splitmix64 streams (the kernels' module doc) instead of a numpy Generator.

    Args:
        train_csr: scipy sparse user x item matrix of training positives.
        users: int array (B,). k: negatives per user.
        sampler: "uniform" or "popularity" (q(j) proportional to count_j^popularity_alpha).
        exclude_positives: re-draw the user's positives (True) or keep them.
        seed: int; user b's draws come from stream b of the key hashed from (seed, 0), so the
            result does not depend on the thread count.

    Returns:
        int64 array (B, k).
    """
    train = as_canonical_csr(train_csr)
    users = np.asarray(users)
    if users.ndim != 1 or users.dtype.kind not in "iu":
        raise ValueError(f"users: expected a 1-D int array, got dtype {users.dtype} and shape {users.shape}")
    users = users.astype(np.int64)
    if users.size and (users.min() < 0 or users.max() >= train.shape[0]):
        raise ValueError(f"users: ids must be in [0, {train.shape[0]})")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    k = int(k)
    indptr, indices, prob, alias = sampling_tables(train, sampler, popularity_alpha, bool(exclude_positives))
    if exclude_positives and users.size and np.any(np.diff(indptr)[users] >= train.shape[1]):
        raise ValueError("users: a user has every item as a positive, so no negative exists")
    out = np.empty((users.size, k), dtype=np.int64)
    sample_into(users, k, train.shape[1], indptr, indices, prob, alias, bool(exclude_positives), epoch_key(seed, 0),
                out)
    return out
