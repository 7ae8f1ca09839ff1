"""The compiled MF training loop (numba): sampling, scoring, loss gradient and update in one pass.

Reference and test oracle: `recgrad.train.Trainer` with an `MF` model (the NumPy minibatch
path: `UniformSampler`/`PopularitySampler` with per-user or shared negatives, `BPRLoss`/
`BCEWithLogitsLoss`/`InfoNCELoss`/`CosineContrastiveLoss`, LightGCN's batch L2, `SparseAdam`, `Adam`, `AdamW`, `SGD`).
This module computes the same quantities without building (B, 1+K, D) blocks, without Python
between the steps of an epoch, and in parallel.

Per training interaction (u, i) with candidates c = [i, j_1, ..., j_K] (the positive, then K
negatives), scores s_k = <P[u], Q[c_k]> (cosine, for an MF(normalize=True), a cosine InfoNCE or CCL:
<P[u]/|P[u]|, Q[c_k]/|Q[c_k]|>, norms clamped at 1e-12 as torch.nn.functional.normalize), and the
weight w of one sample in the batch mean:

    bpr      l = w sum_k softplus(s_k - s_0),               w = 1/(B K);  dl/ds_k = w sigmoid(s_k - s_0),
                                                                          dl/ds_0 = -sum_k dl/ds_k
    bce      l = w [softplus(-s_0) + sum_k softplus(s_k)],  w = 1/(B(1+K)); dl/ds_0 = w (sigmoid(s_0) - 1),
                                                                          dl/ds_k = w sigmoid(s_k)
    infonce  z_k = s_k / tau (- log q(c_k) with log-Q),      w = 1/B;     l = w (logsumexp(z) - z_0),
                                                                          dl/ds_k = w (softmax(z)_k - [k=0]) / tau
    ccl      l = w [(1 - s_0) + nw/K sum_k max(0, s_k - m)], w = 1/B;     dl/ds_0 = -w,
             (s the cosines; margin m, negative weight nw)                dl/ds_k = w nw/K [s_k > m]

Chain rule to the rows (g_k = dl/ds_k): dot similarity gives dP[u] = sum_k g_k Q[c_k] and
dQ[c_k] = g_k P[u]. Cosine, with a = P[u], v_k = Q[c_k], clamped norms n_a, n_k, cos_k = s_k:

    dP[u]   = sum_k g_k / (n_a n_k) Q[c_k] - (sum_k g_k cos_k) / n_a^2 P[u]
    dQ[c_k] = g_k / (n_a n_k) P[u] - g_k cos_k / n_k^2 Q[c_k]

(the normalisation's vector-Jacobian product (g - x_hat <x_hat, g>) / |x| written out; the radial
term is dropped where the norm is clamped, as in `recgrad.losses.l2_normalize_backward`; a candidate
with g_k = 0, e.g. a CCL negative below the margin, contributes nothing). So every
row gradient is a combination of P[u] and the Q[c_k] with per-sample scalar coefficients: a
sample's coefficients are computed once and the D-length work is a few multiply-adds per row.

L2 (LightGCN's batch regulariser, the Trainer's `l2`): R = l2/2 sum |e|^2 over every row
occurrence of the batch / B, dR/de = l2 e / B per occurrence; the reported loss is L + R.

Two kinds of epoch:

- `minibatch_epoch`, the Trainer's minibatch step. Per batch of B interactions: (1) in parallel
  over the samples, draw the negatives, score, and store the coefficients; (2) serially, group the
  occurrences by row (a row -> slot map and a counting sort, O(B(1+K))); (3) in parallel over the
  batch's unique rows (users and items), sum each row's gradient (with the L2 term). Step (1) also
  stores, per sample, the old P[u] and sum_k alpha_k Q[c_k], so step (3) reads no row but its own.
  Then the optimizer's step (`RULES`), each entry moved by the element step of
  `recgrad.kernels.optim` that the optimizer itself runs:
  "sparse_adam" (`SparseAdam`, lazy Adam; `weight_decay` is its decoupled decay of the batch's
  rows) steps each row of (3) at once (`adam_row_step`), and so does "sgd" without momentum and
  weight decay (the other rows would not move); "adam" (`Adam`, weight decay as L2 in the
  gradient), "adamw" (`AdamW`, decoupled decay) and "sgd" with momentum or weight decay are the
  dense algorithms, as torch computes them on a dense gradient: (4) in parallel over every row of
  both tables, the row's summed gradient, or zero for a row the batch did not touch (its moments
  decay and it still moves; `_adam_element`, `_sgd_element`). The per-step scalars (bias
  corrections, the momentum buffer's first step) come from the caller, computed as the optimizer
  computes them. Every row is summed and stepped by one thread in a fixed order, so the result
  does not depend on the number of threads (bit-identical for a seed, on any thread count).
- `hogwild_epoch`, the "hogwild" optimizer, as implicit's BPR: each thread takes a contiguous
  slice of the epoch's shuffled interactions and updates the rows of each sample in place at once,
  without locks. The step on one sample is the minibatch step above with B = 1 and plain SGD:
  e <- e - lr (dl/de + l2 e) for e = P[u] and each Q[c_k] (the l2 term is LightGCN's batch L2
  at B = 1, which is also implicit's `regularization`: its update adds -lr reg e to each row of
  the triple). Coefficients are computed from the rows before the sample's update; an item that
  occurs twice in one sample is updated twice in sequence. With more than one thread, two
  threads may update the same row at the same moment (hogwild: such races lose a few updates
  and are rare on sparse data); with one thread the epoch is deterministic.

Shared negatives (`negatives_mode="shared"`, minibatch only): one set of K items per batch drawn
from q with nothing excluded (`NegativeSampler.sample_shared`), the candidates of every sample of
the batch; the math above is unchanged. LightGCN's L2 counts a row once per lookup, as the
Trainer's objectives look rows up: BPR and BCE score each sample's candidates (a shared row is
counted B times), InfoNCE encodes the shared rows once per batch (counted once). With log-Q the
correction is log q of the unconditional q, the distribution the shared items follow.

Sampling (per-user negatives, `negatives_mode="per_user"` of the Trainer):
"uniform" draws j uniform over the items, "popularity" draws j with q(j) = c_j^alpha / sum_l c_l^alpha
(c_j the item's training users) from a Walker/Vose alias table: O(1) per draw. With
exclude_positives=True a draw that is one of the user's training positives (a binary search in
the user's sorted CSR row) is re-drawn until it is not, so a user's negatives follow q
restricted to the user's non-positives, the distribution of `recgrad.samplers` (expected draws
per negative 1 / (1 - q(I_u))). A user whose positives cover the whole support raises
ValueError when the trainer is built. The draw is uniform over [0, n) by the multiply-shift
map floor(x n / 2^32) of 32 random bits x (bias below n / 2^32, 1e-5 for 41k items) and the alias
coin uses the other 32 bits.

Dynamic negative sampling (`dns_candidates` C > 1, the Trainer's): K C draws as above, then
negative k is the highest-scoring of draws kC .. kC + C - 1 under the tables as they are when the
sample is scored (hogwild: the live rows; minibatch: the rows at the start of the batch, as the
Trainer's model.score), by <P[u], Q[c]>, or by the cosine for an MF(normalize=True).

Random numbers: splitmix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014), a 64-bit state advanced by a constant and mixed. The minibatch path
gives every sample its own stream, seeded by hashing (run seed, epoch, position in the epoch),
so its draws do not depend on the thread count or the schedule (the shared negatives of batch b
come from stream nnz + b); hogwild SGD gives each thread
one stream seeded by (run seed, epoch, thread id). A sample's K negatives are drawn raw first,
then each one that is a positive is re-drawn (in order, from the same stream); the raw draws
happen 8 samples ahead of the training step so that the rows they select can be prefetched.
The epoch's shuffle is the Trainer's:
`numpy.random.default_rng(SeedSequence(seed).spawn(2)[0]).permutation(nnz)` once per epoch, so
with the same seed the compiled path visits the same positives in the same batches as the
reference; the negatives come from a different generator (pass `negatives=` to reuse the
reference's).

Speed notes: the loops are memory-latency bound (random rows of P, Q and, for Adam, of m and v),
so the rows of the samples (or, in the Adam step, of the rows) 8 ahead are prefetched
(`llvm.prefetch`); kernels use numba's error_model="numpy" (no division-by-zero branch, so the
Adam row step vectorises); the positives' binary search is branch-free over int32 column ids.
"""

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from recgrad.kernels.optim import _adam_element, _sgd_element, adam_row_step

__all__ = ["LOSS_CODES", "SAMPLERS", "epoch_key", "sampling_tables", "sample_into", "hogwild_epoch", "RULES",
           "minibatch_epoch"]

LOSS_CODES = {"bpr": 0, "bce": 1, "infonce": 2, "ccl": 3}
SAMPLERS = ("uniform", "popularity")

_NORM_EPS = 1e-12  # torch.nn.functional.normalize's clamp, as recgrad.losses
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)
_S27, _S30, _S31, _S32 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(32)


# --------------------------------------------------------------------------------- random numbers
@numba.njit(cache=True, error_model="numpy")
def _mix64(z):
    """splitmix64's finaliser: a bijective hash of a uint64."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@numba.njit(cache=True, error_model="numpy")
def _next(state):
    """splitmix64: (new state, 64 random bits)."""
    state = state + _GOLDEN
    return state, _mix64(state)


@numba.njit(cache=True, error_model="numpy")
def _stream(key, index):
    """The starting state of stream `index` under `key` (a hashed, well-spread state)."""
    return _mix64(key ^ _mix64(np.uint64(index) + _GOLDEN))


def epoch_key(seed, epoch):
    """uint64 key of an epoch's random streams: a hash of (seed, epoch)."""
    mixed = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch)]).generate_state(1, np.uint64)
    return np.uint64(mixed[0])


# ----------------------------------------------------------------------------------- prefetch
@intrinsic
def _prefetch(typingctx, array, row, col):
    """Hint the CPU to load the cache line of array[row, col] (array[row] for a 1-D array);
    llvm.prefetch: a read, kept in all cache levels. No effect on results."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        handle = context.make_array(array_type)(context, builder, args[0])
        index = [context.cast(builder, value, kind, types.intp) for value, kind in zip(args[1:], signature.args[1:])]
        index = index[:array_type.ndim]  # a 1-D array ignores col
        pointer = cgutils.get_item_pointer(context, builder, array_type, handle, index)
        byte_pointer = ir.IntType(8).as_pointer()
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer] + [ir.IntType(32)] * 3), "llvm.prefetch.p0")
        constant = [ir.Constant(ir.IntType(32), value) for value in (0, 3, 1)]
        builder.call(function, [builder.bitcast(pointer, byte_pointer)] + constant)
        return context.get_dummy_value()

    return types.void(array, row, col), codegen


@numba.njit(cache=True, error_model="numpy")
def _prefetch_row(table, row):
    """Prefetch every cache line of table[row] (64-byte lines)."""
    step = max(64 // table.itemsize, 1)
    for col in range(0, table.shape[1], step):
        _prefetch(table, row, col)


# Samples (or rows) ahead of the current one whose memory is prefetched: enough to cover a DRAM
# miss (~100 ns) with the ~10-20 ns of work per sample.
_AHEAD = 8


# ------------------------------------------------------------------------------------- sampling
@numba.njit(cache=True, error_model="numpy")
def _is_positive(indptr, indices, user, item):
    """Is `item` in the user's sorted CSR row? A branch-free binary search (the halving step
    compiles to a conditional move, so a random item costs no branch mispredictions)."""
    lo = indptr[user]
    n = indptr[user + 1] - lo
    if n == 0:
        return False
    while n > 1:
        half = n >> 1
        if indices[lo + half] <= item:
            lo += half
        n -= half
    return indices[lo] == item


@numba.njit(cache=True, error_model="numpy")
def _draw_item(state, n_items, alias_prob, alias_item):
    """(new state, item) drawn from q: uniform, or from the alias table when it is not empty."""
    state, x = _next(state)
    item = np.int64(((x >> _S32) * np.uint64(n_items)) >> _S32)
    if alias_prob.size:
        coin = np.float64(x & _LOW32) * 2.3283064365386963e-10  # 2^-32
        if coin >= alias_prob[item]:
            item = alias_item[item]
    return state, item


@numba.njit(cache=True, error_model="numpy")
def _draw_raw(state, n_items, alias_prob, alias_item, out):
    """Fill `out` with unconditional draws from q; returns the new state."""
    for j in range(out.size):
        state, out[j] = _draw_item(state, n_items, alias_prob, alias_item)
    return state


@numba.njit(cache=True, error_model="numpy")
def _verify(state, user, n_items, indptr, indices, alias_prob, alias_item, out):
    """Re-draw, in order, every entry of `out` that is a positive of `user` until it is not."""
    for j in range(out.size):
        while _is_positive(indptr, indices, user, out[j]):
            state, out[j] = _draw_item(state, n_items, alias_prob, alias_item)
    return state


@numba.njit(cache=True, error_model="numpy")
def _draw_negatives(state, user, n_items, indptr, indices, alias_prob, alias_item, exclude, out):
    """A user's negatives: len(out) raw draws, then the collisions re-drawn (exclude=True)."""
    state = _draw_raw(state, n_items, alias_prob, alias_item, out)
    if exclude:
        state = _verify(state, user, n_items, indptr, indices, alias_prob, alias_item, out)
    return state


@numba.njit(cache=True, error_model="numpy")
def _alias_table(weights):
    """Vose's alias method: (prob, alias) such that drawing i uniformly and keeping it with
    probability prob[i] (else taking alias[i]) draws i with probability weights[i] / sum(weights)."""
    n = weights.size
    scaled = weights * (n / weights.sum())
    prob = np.zeros(n)
    alias = np.arange(n)
    small = np.empty(n, np.int64)
    large = np.empty(n, np.int64)
    n_small = n_large = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[n_small] = i
            n_small += 1
        else:
            large[n_large] = i
            n_large += 1
    while n_small and n_large:
        n_small -= 1
        s = small[n_small]
        g = large[n_large - 1]
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        if scaled[g] < 1.0:
            n_large -= 1
            small[n_small] = g
            n_small += 1
    for i in range(n_large):
        prob[large[i]] = 1.0
    for i in range(n_small):  # left over only by rounding: their mass is 1 up to it
        prob[small[i]] = 1.0
    return prob, alias


@numba.njit(cache=True, error_model="numpy", parallel=True)
def sample_into(users, k, n_items, indptr, indices, alias_prob, alias_item, exclude, key, out):
    for b in numba.prange(users.size):
        _draw_negatives(_stream(key, b), users[b], n_items, indptr, indices, alias_prob, alias_item, exclude, out[b])


def sampling_tables(train, sampler, alpha, exclude_positives):
    """(indptr as int64, indices as int32, alias prob, alias item); checks that every user can draw.

    int32 column ids halve the bytes the positives' binary search reads.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {SAMPLERS}, got {sampler!r}")
    n_users, n_items = train.shape
    indptr = train.indptr.astype(np.int64)
    if n_items > np.iinfo(np.int32).max:
        raise ValueError(f"train_csr: {n_items} items do not fit int32 ids")
    indices = train.indices.astype(np.int32)
    if sampler == "uniform":
        in_support = np.ones(n_items, dtype=bool)
        prob, alias = np.zeros(0), np.zeros(0, dtype=np.int64)
    else:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"popularity_alpha: expected a finite number >= 0, got {alpha!r}")
        weights = np.bincount(indices, minlength=n_items).astype(np.float64) ** float(alpha)
        in_support = weights > 0
        prob, alias = _alias_table(weights)
    if exclude_positives:
        degree = np.diff(indptr)
        covered = np.bincount(np.repeat(np.arange(n_users), degree), weights=in_support[indices], minlength=n_users)
        stuck = np.flatnonzero((degree > 0) & (covered >= np.count_nonzero(in_support)))
        if stuck.size:
            raise ValueError(
                f"train: user(s) {stuck[:10].tolist()} have interacted with every item the sampler can draw, "
                "so no negative exists; drop them or use exclude_positives=False"
            )
    return indptr, indices, prob, alias


# ------------------------------------------------------------------------- one sample's math
@numba.njit(cache=True, error_model="numpy")
def _softplus_sigmoid(x):
    """(softplus(x), sigmoid(x)) from one exp(-|x|): max(x, 0) + log1p(e) and 1/(1+e) or e/(1+e)."""
    e = math.exp(-abs(x))
    value = max(x, 0.0) + math.log1p(e)
    if x >= 0.0:
        return value, 1.0 / (1.0 + e)
    return value, e / (1.0 + e)


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "nsz", "contract"})
def _coefficients(P, Q, user, cand, k1, loss, cosine, inv_tau, margin, negative_weight, log_q, w, alpha, gamma):
    """Score one sample and write its gradient coefficients; returns (loss, beta, sum of |e|^2).

    loss: LOSS_CODES (CCL is defined on cosines: call it with cosine=True). inv_tau: InfoNCE's 1 / tau;
    margin, negative_weight: CCL's m and nw (each read only by its loss).

    On return alpha[k] and gamma[k] (k < k1) and beta are such that (module doc)
        dP[u] = beta P[u] + sum_k alpha[k] Q[c_k],   dQ[c_k] = alpha[k] P[u] + gamma[k] Q[c_k].
    """
    pu = P[user]
    dim = pu.size
    zero = P.dtype.type(0.0)
    uu = zero
    sumsq = 0.0
    for k in range(k1):  # raw dot products in alpha, squared norms in gamma (|P[u]|^2 in the first pass)
        q = Q[cand[k]]
        s = zero
        qq = zero
        if k == 0:
            for d in range(dim):
                s += pu[d] * q[d]
                qq += q[d] * q[d]
                uu += pu[d] * pu[d]
        else:
            for d in range(dim):
                s += pu[d] * q[d]
                qq += q[d] * q[d]
        sumsq += np.float64(qq)
        alpha[k] = s
        gamma[k] = qq
    sumsq += np.float64(uu)
    n_a = max(math.sqrt(np.float64(uu)), _NORM_EPS)
    if cosine:
        for k in range(k1):
            n_k = max(math.sqrt(gamma[k]), _NORM_EPS)
            gamma[k] = n_k
            alpha[k] = alpha[k] / (n_a * n_k)
    value = 0.0
    if loss == 0:  # BPR
        total = 0.0
        for k in range(1, k1):
            term, g = _softplus_sigmoid(alpha[k] - alpha[0])
            value += term
            g *= w
            alpha[k] = g
            total += g
        alpha[0] = -total
    elif loss == 1:  # BCE, label 1 for the positive: softplus(-s) and sigmoid(s) = 1 - sigmoid(-s)
        value, g = _softplus_sigmoid(-alpha[0])
        alpha[0] = -g * w
        for k in range(1, k1):
            term, g = _softplus_sigmoid(alpha[k])
            value += term
            alpha[k] = g * w
    elif loss == 3:  # CCL on the cosines
        value = 1.0 - alpha[0]
        alpha[0] = -w
        scale = negative_weight / (k1 - 1)
        for k in range(1, k1):
            excess = alpha[k] - margin
            if excess > 0.0:
                value += scale * excess
                alpha[k] = scale * w
            else:
                alpha[k] = 0.0
    else:  # InfoNCE
        peak = -np.inf
        for k in range(k1):
            z = alpha[k] * inv_tau
            if log_q.size:
                z -= log_q[cand[k]]
            alpha[k] = z
            peak = max(peak, z)
        total = 0.0
        for k in range(k1):
            total += math.exp(alpha[k] - peak)
        value = peak + math.log(total) - alpha[0]
        for k in range(k1):
            alpha[k] = (math.exp(alpha[k] - peak) / total - (1.0 if k == 0 else 0.0)) * inv_tau * w
    beta = 0.0
    if cosine:
        radial = 0.0
        for k in range(k1):
            g = alpha[k]
            if g == 0.0:  # no gradient through this candidate (a CCL negative below the margin)
                gamma[k] = 0.0
                continue
            n_k = gamma[k]
            q = Q[cand[k]]  # the cosine is recomputed: alpha now holds dl/ds
            s = zero
            for d in range(dim):
                s += pu[d] * q[d]
            cos_k = np.float64(s) / (n_a * n_k)
            radial += g * cos_k
            alpha[k] = g / (n_a * n_k)
            gamma[k] = -g * cos_k / (n_k * n_k) if n_k > _NORM_EPS else 0.0
        beta = -radial / (n_a * n_a) if n_a > _NORM_EPS else 0.0
    else:
        for k in range(k1):
            gamma[k] = 0.0
    return value * w, beta, sumsq


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "nsz", "contract"})
def _hardest(P, Q, user, raw, per, cosine, chosen):
    """Dynamic negative sampling: chosen[g] = the highest-scoring of raw[g per:(g + 1) per] (the first
    of equal scores), scored by <P[u], Q[c]>, or by <P[u], Q[c]> / |Q[c]| when `cosine` (the cosine
    up to the positive factor 1 / |P[u]|, which orders the candidates the same)."""
    pu = P[user]
    dim = pu.size
    zero = P.dtype.type(0.0)
    for g in range(chosen.size):
        best = -np.inf
        pick = raw[g * per]
        for c in range(g * per, (g + 1) * per):
            q = Q[raw[c]]
            s = zero
            for d in range(dim):
                s += pu[d] * q[d]
            score = np.float64(s)
            if cosine:
                qq = zero
                for d in range(dim):
                    qq += q[d] * q[d]
                score /= max(math.sqrt(np.float64(qq)), _NORM_EPS)
            if score > best:
                best = score
                pick = raw[c]
        chosen[g] = pick


# -------------------------------------------------------------------------- hogwild SGD epoch
@numba.njit(cache=True, error_model="numpy")
def _prefetch_sample(P, Q, user, items, indptr, indices, exclude):
    """Prefetch what a sample will read: its user row, its candidates' rows and the user's CSR row."""
    _prefetch_row(P, user)
    for j in range(items.size):
        _prefetch_row(Q, items[j])
    if exclude:  # the lines the binary search reads first: the middle, the quarters, the start
        lo, hi = indptr[user], indptr[user + 1]
        mid = (lo + hi) >> 1
        _prefetch(indices, lo, 0)
        _prefetch(indices, (lo + mid) >> 1, 0)
        _prefetch(indices, mid, 0)
        _prefetch(indices, (mid + hi) >> 1, 0)


@numba.njit(cache=True, error_model="numpy", parallel=True, fastmath={"reassoc", "nsz", "contract"})
def hogwild_epoch(P, Q, users, items, negatives, k, per, select_cosine, n_items, indptr, indices, alias_prob,
                   alias_item, exclude, loss, cosine, inv_tau, margin, negative_weight, log_q, lr, l2, key, n_chunks,
                   chunk_loss):
    n = users.size
    k1 = k + 1
    dim = P.shape[1]
    sampled = negatives.shape[0] == 0
    if loss == 0:
        w = 1.0 / k
    elif loss == 1:
        w = 1.0 / k1
    else:
        w = 1.0
    for t in numba.prange(n_chunks):
        start = t * n // n_chunks
        end = (t + 1) * n // n_chunks
        state = _stream(key, t)
        # ring[p % _AHEAD] holds the raw negatives of sample p, drawn _AHEAD samples early so that
        # their rows can be prefetched; the collision check happens when p is trained.
        ring = np.empty((_AHEAD, 1 + k * per), np.int64)
        cand = np.empty(k1, np.int64)
        alpha = np.empty(k1)
        gamma = np.empty(k1)
        grad_u = np.empty(dim, P.dtype)
        total = 0.0
        lr_t = P.dtype.type(lr)
        for p in range(start, min(start + _AHEAD, end)):
            slot = ring[p % _AHEAD]
            slot[0] = items[p]
            if sampled:
                state = _draw_raw(state, n_items, alias_prob, alias_item, slot[1:])
            else:
                slot[1:] = negatives[p]
            _prefetch_sample(P, Q, users[p], slot, indptr, indices, exclude)
        for p in range(start, end):
            user = users[p]
            slot = ring[p % _AHEAD]
            if sampled and exclude:
                state = _verify(state, user, n_items, indptr, indices, alias_prob, alias_item, slot[1:])
            if per == 1:
                cand[:] = slot
            else:
                cand[0] = slot[0]
                _hardest(P, Q, user, slot[1:], per, select_cosine, cand[1:])
            ahead = p + _AHEAD
            if exclude and ahead + _AHEAD < end:
                _prefetch(indptr, users[ahead + _AHEAD], 0)
            if ahead < end:
                slot[0] = items[ahead]
                if sampled:
                    state = _draw_raw(state, n_items, alias_prob, alias_item, slot[1:])
                else:
                    slot[1:] = negatives[ahead]
                _prefetch_sample(P, Q, users[ahead], slot, indptr, indices, exclude)
            value, beta, sumsq = _coefficients(P, Q, user, cand, k1, loss, cosine, inv_tau, margin, negative_weight,
                                               log_q, w, alpha, gamma)
            total += value + 0.5 * l2 * sumsq
            pu = P[user]
            for j in range(k1):
                a = P.dtype.type(alpha[j])
                c = P.dtype.type(gamma[j] + l2)
                q = Q[cand[j]]
                if j == 0:
                    own = P.dtype.type(beta + l2)
                    for d in range(dim):
                        grad_u[d] = own * pu[d] + a * q[d]
                        q[d] -= lr_t * (a * pu[d] + c * q[d])
                else:
                    for d in range(dim):
                        grad_u[d] += a * q[d]
                        q[d] -= lr_t * (a * pu[d] + c * q[d])
            for d in range(dim):
                pu[d] -= lr_t * grad_u[d]
        chunk_loss[t] = total


# ------------------------------------------------------------------------------ minibatch epoch
# The optimizer rules of `minibatch_epoch` (the names are recgrad.train.settings' optimizer names).
RULES = {"sparse_adam": 0, "adam": 1, "adamw": 1, "sgd": 2}
_LAZY_ADAM, _DENSE_ADAM, _SGD = 0, 1, 2


@numba.njit(cache=True, error_model="numpy")
def _group(ids, n, slot_of, rows, counts, starts, occurrences):
    """Group the first n entries of `ids` by value: returns the number of unique ids m, with
    rows[:m] the ids in order of first occurrence, counts[:m], and occurrences[starts[s]:starts[s+1]]
    the positions of rows[s] in increasing order. slot_of (all -1 on entry) is restored on exit."""
    m = 0
    for p in range(n):
        r = ids[p]
        s = slot_of[r]
        if s < 0:
            s = m
            slot_of[r] = m
            rows[m] = r
            counts[m] = 0
            m += 1
        counts[s] += 1
    starts[0] = 0
    for s in range(m):
        starts[s + 1] = starts[s] + counts[s]
        counts[s] = starts[s]  # now the fill cursor
    for p in range(n):
        s = slot_of[ids[p]]
        occurrences[counts[s]] = p
        counts[s] += 1
    for s in range(m):
        counts[s] -= starts[s]  # back to counts
        slot_of[rows[s]] = -1
    return m


@numba.njit(cache=True, error_model="numpy")
def _first_draw(b, start, users, items, negatives, shared, drawn, states, width, key, n_items, alias_prob, alias_item,
                P, Q, indptr, indices, exclude):
    """Batch sample b: its draws [positive, raw negatives (or DNS candidates), or the batch's shared
    negatives], its stream state, and prefetches (the shared rows stay in cache: only P[u], Q[i])."""
    p = start + b
    row = drawn[b * width:(b + 1) * width]
    row[0] = items[p]
    if shared.size:
        row[1:] = shared
        _prefetch_row(P, users[p])
        _prefetch_row(Q, row[0])
        return
    if negatives.shape[0]:
        row[1:] = negatives[p]
    else:
        states[b] = _draw_raw(_stream(key, p), n_items, alias_prob, alias_item, row[1:])
    _prefetch_sample(P, Q, users[p], row, indptr, indices, exclude and negatives.shape[0] == 0)


@numba.njit(cache=True, error_model="numpy")
def _row_step(rule, theta, m, v, g, has_grad, hyper, step_size, sqrt_bias_correction2, buffer_mode):
    """The step of the dense rules on one table row whose summed gradient is g (zero when not
    has_grad): per entry the element step of `recgrad.kernels.optim` (`_adam_element`: Adam with L2
    or AdamW's decay; `_sgd_element`: SGD with weight decay and momentum), so each entry moves as
    the optimizer's own step moves it. For SGD, m is the momentum buffer (untouched in mode 0)."""
    dtype = theta.dtype.type
    zero = dtype(0.0)
    if rule == _DENSE_ADAM:
        one_minus_beta1, one_minus_beta2, eps, decay = dtype(hyper[0]), dtype(hyper[1]), dtype(hyper[2]), \
            dtype(hyper[3])
        beta2, l2 = dtype(hyper[4]), dtype(hyper[5])
        use_l2 = hyper[5] != 0.0
        if has_grad:  # two loops, not a select inside one: each vectorises
            for j in range(theta.size):
                theta[j], m[j], v[j], _ = _adam_element(theta[j], g[j], m[j], v[j], v[j], dtype(1.0), l2, decay,
                                                        one_minus_beta1, beta2, one_minus_beta2,
                                                        sqrt_bias_correction2, step_size, eps, use_l2, False)
        else:
            for j in range(theta.size):
                theta[j], m[j], v[j], _ = _adam_element(theta[j], zero, m[j], v[j], v[j], dtype(1.0), l2, decay,
                                                        one_minus_beta1, beta2, one_minus_beta2,
                                                        sqrt_bias_correction2, step_size, eps, use_l2, False)
    else:
        lr, momentum, one_minus_dampening, l2 = dtype(hyper[0]), dtype(hyper[1]), dtype(hyper[2]), dtype(hyper[3])
        use_l2, nesterov = hyper[3] != 0.0, hyper[4] != 0.0
        for j in range(theta.size):
            gj = g[j] if has_grad else zero
            buf = m[j] if buffer_mode == 2 else gj
            theta[j], buf = _sgd_element(theta[j], gj, buf, dtype(1.0), l2, lr, momentum, one_minus_dampening,
                                         use_l2, buffer_mode, nesterov)
            if buffer_mode != 0:
                m[j] = buf


@numba.njit(cache=True, error_model="numpy", parallel=True, fastmath={"reassoc", "nsz", "contract"})
def minibatch_epoch(P, Q, state, users, items, negatives, sampling, objective, rule, hyper, schedule, batch_size,
                    key, n_chunks, batch_losses):
    """One epoch of minibatch steps in place on P, Q and the optimizer state (module doc).

    state: (mP, vP, mQ, vQ), the optimizer's arrays (Adam: exp_avg, exp_avg_sq; SGD: the momentum
        buffers as mP, mQ, or the tables themselves without momentum: then never read or written).
    negatives: (nnz, K C) given per sample, (n_batches, K) given shared, or (0, *) to draw them.
    sampling: (K, C, shared, n_items, indptr, indices, alias_prob, alias_item, exclude).
    objective: (loss code, cosine, DNS by cosine, 1 / tau, log q or empty, l2, CCL margin, CCL negative weight).
    rule: RULES[optimizer]; hyper: its constants (float64): lazy and dense Adam [1 - beta1, 1 - beta2,
        eps, decay, beta2, l2 in the gradient], SGD [lr, momentum, 1 - dampening, weight decay,
        nesterov]. schedule (n_batches, 2 tables, 2): the scalars of each batch's step, as the
        optimizer computes them: SparseAdam [step size, -], Adam [step size, sqrt(1 - beta2^t)],
        SGD [momentum buffer mode (0 none, 1 first step, 2 later), -].
    batch_losses (n_batches,): out, each batch's loss (objective + L2).
    """
    mP, vP, mQ, vQ = state
    k, per, shared, n_items, indptr, indices, alias_prob, alias_item, exclude = sampling
    loss, cosine, select_cosine, inv_tau, log_q, l2, margin, negative_weight = objective
    n = users.size
    k1 = k + 1
    width = 1 + k * per
    dim = P.shape[1]
    dtype = P.dtype.type
    cap = min(batch_size, n)
    # InfoNCE and CCL encode a shared negative once per batch, so LightGCN's L2 counts it once (the
    # pairwise losses score, and look up, it once per sample): only sample 0's copy of it is counted.
    l2_once = shared and loss >= 2
    sampled = negatives.shape[0] == 0
    dense = rule == _DENSE_ADAM or (rule == _SGD and (hyper[1] != 0.0 or hyper[3] != 0.0))
    cand = np.empty(cap * k1, np.int64)
    drawn = cand if per == 1 else np.empty(cap * width, np.int64)  # with DNS: the candidates before the choice
    batch_shared = np.empty(k if shared else 0, np.int64)
    states = np.empty(cap, np.uint64)
    alpha = np.empty(cap * k1)
    gamma = np.empty(cap * k1)
    beta = np.empty(cap)
    sample_loss = np.empty(cap)
    sample_sumsq = np.empty(cap)
    user_part = np.empty((cap, dim), P.dtype)  # sum_k alpha_k Q[c_k] of each sample
    user_old = np.empty((cap, dim), P.dtype)  # P[u] of each sample before the step
    user_slot = np.full(P.shape[0], -1, np.int64)
    item_slot = np.full(Q.shape[0], -1, np.int64)
    user_rows = np.empty(cap, np.int64)
    user_counts = np.empty(cap, np.int64)
    user_starts = np.empty(cap + 1, np.int64)
    user_occ = np.empty(cap, np.int64)
    item_rows = np.empty(cap * k1, np.int64)
    item_counts = np.empty(cap * k1, np.int64)
    item_starts = np.empty(cap * k1 + 1, np.int64)
    item_occ = np.empty(cap * k1, np.int64)
    grad = np.empty((cap * (k1 + 1), dim), P.dtype)
    n_batches = (n + batch_size - 1) // batch_size
    for batch in range(n_batches):
        start = batch * batch_size
        size = min(batch_size, n - start)
        if loss == 0:
            w = 1.0 / (size * k)
        elif loss == 1:
            w = 1.0 / (size * k1)
        else:
            w = 1.0 / size
        if shared:  # the batch's K negatives from q, nothing excluded (its own stream, after the samples')
            if sampled:
                _draw_raw(_stream(key, n + batch), n_items, alias_prob, alias_item, batch_shared)
            else:
                batch_shared[:] = negatives[batch]
        # (1) parallel over the samples (contiguous chunks, one per thread): negatives, scores,
        # coefficients, and the two vectors that the row gradients need from the other table (so
        # that step (3) reads no row but its own). Sample p's negatives come from its own stream,
        # drawn _AHEAD samples early (and their rows prefetched), checked when p is scored.
        for chunk in numba.prange(n_chunks):
            lo = chunk * size // n_chunks
            hi = (chunk + 1) * size // n_chunks
            for b in range(lo, min(lo + _AHEAD, hi)):
                _first_draw(b, start, users, items, negatives, batch_shared, drawn, states, width, key, n_items,
                            alias_prob, alias_item, P, Q, indptr, indices, exclude)
            for b in range(lo, hi):
                p = start + b
                raw = drawn[b * width:(b + 1) * width]
                if sampled and exclude and not shared:
                    _verify(states[b], users[p], n_items, indptr, indices, alias_prob, alias_item, raw[1:])
                row = cand[b * k1:(b + 1) * k1]
                if per > 1:
                    row[0] = raw[0]
                    _hardest(P, Q, users[p], raw[1:], per, select_cosine, row[1:])
                if b + _AHEAD < hi:
                    _first_draw(b + _AHEAD, start, users, items, negatives, batch_shared, drawn, states, width, key,
                                n_items, alias_prob, alias_item, P, Q, indptr, indices, exclude)
                a_row = alpha[b * k1:(b + 1) * k1]
                sample_loss[b], beta[b], sample_sumsq[b] = _coefficients(
                    P, Q, users[p], row, k1, loss, cosine, inv_tau, margin, negative_weight, log_q, w, a_row,
                    gamma[b * k1:(b + 1) * k1])
                pu = P[users[p]]
                part = user_part[b]
                old = user_old[b]
                a = dtype(a_row[0])
                q = Q[row[0]]
                for d in range(dim):
                    old[d] = pu[d]
                    part[d] = a * q[d]
                for j in range(1, k1):
                    if a_row[j] == 0.0:  # no gradient through this negative (CCL below the margin)
                        continue
                    a = dtype(a_row[j])
                    q = Q[row[j]]
                    for d in range(dim):
                        part[d] += a * q[d]
                if l2_once and b > 0:  # this sample's own rows only
                    sumsq = 0.0
                    q = Q[row[0]]
                    for d in range(dim):
                        sumsq += np.float64(pu[d]) * pu[d] + np.float64(q[d]) * q[d]
                    sample_sumsq[b] = sumsq
        value = 0.0
        sumsq = 0.0
        for b in range(size):
            value += sample_loss[b]
            sumsq += sample_sumsq[b]
        batch_losses[batch] = value + l2 * 0.5 * sumsq / size
        # (2) group the occurrences by row
        n_u = _group(users[start:start + size], size, user_slot, user_rows, user_counts, user_starts, user_occ)
        n_i = _group(cand, size * k1, item_slot, item_rows, item_counts, item_starts, item_occ)
        l2_scale = l2 / size
        # (3) parallel over the batch's unique rows (users, then items): sum the row's gradient,
        # dP[u] = sum_b part_b + (sum_b beta_b + l2 c / B) P[u],
        # dQ[r] = sum_(b,k) alpha_bk P_old[u_b] + (sum gamma_bk + l2 c / B) Q[r], then, for the lazy
        # rules (SparseAdam; SGD without momentum and weight decay, where the other rows do not move),
        # the row's step
        for s in numba.prange(n_u + n_i):
            ahead = s + _AHEAD
            if ahead < n_u:
                r = user_rows[ahead]
                _prefetch_row(P, r)
                if rule == _LAZY_ADAM:
                    _prefetch_row(mP, r)
                    _prefetch_row(vP, r)
            elif ahead < n_u + n_i:
                r = item_rows[ahead - n_u]
                _prefetch_row(Q, r)
                if rule == _LAZY_ADAM:
                    _prefetch_row(mQ, r)
                    _prefetch_row(vQ, r)
            g = grad[s]
            own = 0.0
            if s < n_u:
                for o in range(user_starts[s], user_starts[s + 1]):
                    b = user_occ[o]
                    own += beta[b]
                    part = user_part[b]
                    if o == user_starts[s]:
                        for d in range(dim):
                            g[d] = part[d]
                    else:
                        for d in range(dim):
                            g[d] += part[d]
                r = user_rows[s]
                theta, m, v, table = P[r], mP[r], vP[r], 0
                c = dtype(own) + dtype(l2_scale * user_counts[s])
            else:
                i = s - n_u
                counted = 0
                for d in range(dim):
                    g[d] = 0.0
                for o in range(item_starts[i], item_starts[i + 1]):
                    flat = item_occ[o]
                    own += gamma[flat]
                    if not l2_once or flat < k1 or flat % k1 == 0:
                        counted += 1
                    if alpha[flat] == 0.0:  # no gradient through this occurrence (CCL below the margin)
                        continue
                    a = dtype(alpha[flat])
                    old = user_old[flat // k1]
                    for d in range(dim):
                        g[d] += a * old[d]
                r = item_rows[i]
                theta, m, v, table = Q[r], mQ[r], vQ[r], 1
                c = dtype(own) + dtype(l2_scale * counted)
            for d in range(dim):
                g[d] += c * theta[d]
            if rule == _LAZY_ADAM:
                adam_row_step(theta, m, v, g, dtype(hyper[0]), dtype(hyper[1]), dtype(hyper[2]), dtype(hyper[3]),
                              dtype(schedule[batch, table, 0]))
            elif not dense:
                _row_step(rule, theta, m, v, g, True, hyper, dtype(0.0), dtype(0.0), 0)
        # (4) the dense rules: every row of both tables steps, with the summed gradient of (3) or zero
        if dense:
            for s in range(n_u):
                user_slot[user_rows[s]] = s
            for i in range(n_i):
                item_slot[item_rows[i]] = n_u + i
            n_users = P.shape[0]
            for r in numba.prange(n_users + Q.shape[0]):
                if r < n_users:
                    theta, m, v, slot, table = P[r], mP[r], vP[r], user_slot[r], 0
                else:
                    theta, m, v, slot, table = Q[r - n_users], mQ[r - n_users], vQ[r - n_users], \
                        item_slot[r - n_users], 1
                scalars = schedule[batch, table]
                _row_step(rule, theta, m, v, grad[max(slot, 0)], slot >= 0, hyper, dtype(scalars[0]),
                          dtype(scalars[1]), np.int64(scalars[0]) if rule == _SGD else 0)
            for s in range(n_u):
                user_slot[user_rows[s]] = -1
            for i in range(n_i):
                item_slot[item_rows[i]] = -1
