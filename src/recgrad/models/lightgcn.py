"""LightGCN: s(u, i) = <F[u], F[n_users + i]>, F the layer mean of a linear propagation on the
user-item graph (He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation", SIGIR 2020, Sec. 3.1; the loss of Sec. 3.2 is BPR plus BatchL2 on the ego rows).

    R (n_users, n_items)   the training interactions (every stored entry counts as 1)
    A = [[0, R], [R^T, 0]]                  the bipartite graph, n = n_users + n_items nodes
    A_hat = D^-1/2 A D^-1/2                 D = diag(row sums of A); a node without interactions
                                            gets D^-1/2 = 0 (the reference code's inf -> 0)
forward:   E^(0) = [P; Q]                   the ego tables (the parameters), (n, dim)
           E^(k+1) = A_hat E^(k),           k = 0 .. K-1
           F = 1/(K+1) sum_{k=0..K} E^(k)   the layer mean (alpha_k = 1/(K+1))
           s[b, j] = <F[u_b], F[n_users + i_bj]>
backward:  G = dL/dF                        pair_dot's VJP scattered into the batch's rows
           dL/dE^(0) = 1/(K+1) sum_{k=0..K} A_hat^k G

Derivation: F = M E^(0) with M = 1/(K+1) sum_k A_hat^k, a fixed linear map, so the vector-Jacobian
product is M^T G; A_hat is symmetric (D^-1/2 A D^-1/2 with A symmetric), hence every power is
and M^T = M: the backward is the same propagation applied to the output gradient.

Cost: one propagation (K sparse products, 2 nnz(R) dim multiply-adds each) per forward and one
per backward, of the whole table, as the reference PyTorch code (LightGCN-PyTorch's
`computer()`) does for every batch. The propagated table is kept with a copy of the ego tables
it came from, and reused while they are unchanged: full-ranking evaluation, DNS scoring followed
by the objective's forward, and InfoNCE's two `encode` calls each propagate once.

Propagation: `propagate` below, the scipy CSR reference (engine "numpy"), or the fused numba
kernel `recgrad.kernels.graph.layer_mean` (faster on Gowalla, docs/results.md; same sums in
the same order).

The graph is built from the `interactions` passed to the constructor (the training matrix only),
is not a parameter, and is saved in the model file as the CSR structure of R
(`buffer.interactions.indptr`, `buffer.interactions.indices`), so that a saved model scores on
its own; a training checkpoint holds only the parameters, and a resumed run rebuilds the graph
from its data. Init N(0, 0.1^2) as LightGCN-PyTorch (the paper: Xavier).
"""

import numpy as np
import scipy.sparse

from recgrad._checks import non_negative_int, positive_float, positive_int
from recgrad.engine import check_engine, use_compiled
from recgrad.init import as_generator
from recgrad.models.base import FactorModel, as_1d_ids, pair_dot, pair_dot_backward
from recgrad.models.embedding import Embedding

__all__ = ["LightGCN", "normalized_adjacency", "propagate"]


def normalized_adjacency(interactions, dtype=np.float32):
    """A_hat = D^-1/2 [[0, R], [R^T, 0]] D^-1/2 as a canonical CSR (n_users + n_items square).

    interactions: scipy sparse (n_users, n_items); every stored entry counts as 1 (explicit zeros
    included, as the loaders never store them). Nodes of degree 0 get an empty row and column.
    """
    graph = scipy.sparse.csr_matrix(interactions, copy=True)
    graph.sum_duplicates()
    graph.data = np.ones(graph.nnz, dtype=np.float64)
    user_degree = np.diff(graph.indptr)
    item_degree = np.bincount(graph.indices, minlength=graph.shape[1])
    user_scale = _inverse_sqrt(user_degree)
    item_scale = _inverse_sqrt(item_degree)
    rows = np.repeat(np.arange(graph.shape[0]), user_degree)
    graph.data = user_scale[rows] * item_scale[graph.indices]
    adjacency = scipy.sparse.bmat([[None, graph], [graph.T, None]], format="csr").astype(dtype)
    adjacency.sort_indices()
    return adjacency


def _inverse_sqrt(degree):
    scale = np.zeros(degree.shape, dtype=np.float64)
    positive = degree > 0
    scale[positive] = 1.0 / np.sqrt(degree[positive])
    return scale


def propagate(adjacency, table, layers, engine=None):
    """1/(layers+1) sum_{k=0..layers} adjacency^k table: LightGCN's layer mean, and (adjacency
    symmetric) its own vector-Jacobian product. table (n, dim) -> a new (n, dim) array.

    engine "numpy": `layers` scipy products; otherwise the numba kernel
    `recgrad.kernels.graph.layer_mean` (the same sums, row by row in the stored order).
    """
    table = np.ascontiguousarray(table, dtype=adjacency.dtype)
    if use_compiled(engine, True, "LightGCN propagation"):
        from recgrad.kernels.graph import layer_mean

        return layer_mean(adjacency.indptr, adjacency.indices, adjacency.data, table, layers)
    total, layer = table.copy(), table
    for _ in range(layers):
        layer = adjacency @ layer
        total += layer
    total *= table.dtype.type(1.0 / (layers + 1))
    return total


class LightGCN(FactorModel):
    """LightGCN with ego tables P (n_users, dim) and Q (n_items, dim) on the training graph.

    Args:
        n_users, n_items: table sizes.
        dim: embedding size.
        layers: K, the number of propagation layers (0: the layer mean is E^(0), i.e. MF).
        init_std: both ego tables start N(0, init_std^2).
        interactions: scipy sparse (n_users, n_items) training matrix that defines the graph;
            None builds a model without one (what `load_model` does before `load_buffers`), which
            raises RuntimeError when it has to score.
        rng: numpy Generator, int seed or None (the user table is drawn first, then the item table).
        dtype: np.float32 (default) or np.float64.
        engine: the propagation's engine (`recgrad.engine`; None: the process default).

    The ego tables take dense gradients (the propagation reaches every row within K hops), so
    they train with the dense optimizers (adam, adamw, sgd).

    Example:
        >>> R = scipy.sparse.csr_matrix(np.eye(3, 4))
        >>> LightGCN(3, 4, dim=8, layers=2, interactions=R, rng=0).score(np.array([0, 1]), np.array([0, 3])).shape
        (2,)
    """

    def __init__(self, n_users, n_items, dim=64, layers=3, init_std=0.1, interactions=None, rng=None,
                 dtype=np.float32, engine=None):
        super().__init__(n_users, n_items, dtype)
        self.dim = positive_int(dim, "dim")
        self.layers = non_negative_int(layers, "layers")
        self.init_std = positive_float(init_std, "init_std")
        self.engine = check_engine(engine)
        self.normalize = False
        generator = as_generator(rng)
        self.user_embedding = Embedding(self.n_users, self.dim, False, self.init_std, rng=generator, dtype=self.dtype)
        self.item_embedding = Embedding(self.n_items, self.dim, False, self.init_std, rng=generator, dtype=self.dtype)
        self.interactions = self.adjacency = None
        self._propagated = None  # (ego user table, ego item table, F) of the last propagation
        if interactions is not None:
            self.set_interactions(interactions)

    def config(self):
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "dim": self.dim,
            "layers": self.layers,
            "init_std": self.init_std,
            "dtype": self.dtype.name,
        }

    # ---------------------------------------------------------------------------------- graph
    def set_interactions(self, interactions):
        """Use `interactions` (scipy sparse, (n_users, n_items)) as the training graph."""
        if not scipy.sparse.issparse(interactions):
            raise TypeError(f"interactions: expected a scipy sparse users x items matrix, "
                            f"got {type(interactions).__name__}")
        if interactions.shape != (self.n_users, self.n_items):
            raise ValueError(f"interactions has shape {interactions.shape}, the model has "
                             f"({self.n_users}, {self.n_items})")
        pattern = scipy.sparse.csr_matrix(interactions, copy=True)
        pattern.sum_duplicates()
        pattern.sort_indices()
        pattern.data = np.ones(pattern.nnz, dtype=np.float32)
        self.interactions = pattern
        self.adjacency = normalized_adjacency(pattern, self.dtype)
        self._propagated = None

    def buffers(self):
        """The graph's CSR structure (and the item prior, if any), saved with the model (`Recommender.save`)."""
        if self.interactions is None:
            return super().buffers()
        return {**super().buffers(), "interactions.indptr": self.interactions.indptr.astype(np.int64),
                "interactions.indices": self.interactions.indices.astype(np.int64)}

    def load_buffers(self, buffers):
        """Rebuild the graph from `buffers()`'s arrays; ValueError when they do not form one."""
        buffers = self.load_item_prior(buffers)
        if set(buffers) != {"interactions.indptr", "interactions.indices"}:
            raise ValueError(f"LightGCN expects the buffers interactions.indptr and interactions.indices, "
                             f"got {sorted(buffers)}")
        indptr, indices = buffers["interactions.indptr"], buffers["interactions.indices"]
        if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
            raise ValueError(f"the interactions buffers hold {indptr.dtype} and {indices.dtype}, expected integers")
        if indptr.ndim != 1 or indices.ndim != 1 or indptr.size != self.n_users + 1 or indptr[0] != 0 \
                or indptr[-1] != indices.size or np.any(np.diff(indptr) < 0) \
                or (indices.size and (indices.min() < 0 or indices.max() >= self.n_items)):
            raise ValueError("the interactions buffers do not form a CSR matrix of the model's shape")
        ones = np.ones(indices.size, dtype=np.float32)
        self.set_interactions(scipy.sparse.csr_matrix((ones, indices, indptr), shape=(self.n_users, self.n_items)))

    def propagated(self):
        """F, the layer mean (n_users + n_items, dim): user rows first, then item rows.

        Recomputed only when the ego tables differ from those of the last call; treat it as
        read-only.
        """
        if self.adjacency is None:
            raise RuntimeError("LightGCN has no training graph: pass interactions= (or load a saved model)")
        users, items = self.user_embedding.weight.data, self.item_embedding.weight.data
        kept = self._propagated
        if kept is not None and np.array_equal(kept[0], users) and np.array_equal(kept[1], items):
            return kept[2]
        final = propagate(self.adjacency, np.concatenate([users, items]), self.layers, self.engine)
        self._propagated = (users.copy(), items.copy(), final)
        return final

    def _propagate_back(self, grad_final):
        """Accumulate dL/dE^(0) = M G (the module doc) into the ego tables' gradients."""
        grad_ego = propagate(self.adjacency, grad_final, self.layers, self.engine)
        self.user_embedding.weight.accumulate_grad(grad_ego[:self.n_users])
        self.item_embedding.weight.accumulate_grad(grad_ego[self.n_users:])

    # ------------------------------------------------------------------------------ training
    def forward(self, users, items):
        """Scores <F[u], F[n_users + i]>: users (B,), items (B,) or (B, K) -> (B,) or (B, K).

        The ego tables record the looked-up ids (their `cache`), which BatchL2 regularises.
        """
        users, items = self.check_pairs(users, items)
        final = self.propagated()
        self.user_embedding(users)
        self.item_embedding(items)
        p, q = final[users], final[self.n_users + items]
        self.cache = (users, items, p, q)
        return pair_dot(p, q)

    def backward(self, grad_scores):
        """Accumulate dL/dP and dL/dQ (dense) from grad_scores (the forward output's shape); returns None."""
        users, items, p, q = self.pending_cache()
        grad_scores = self.check_grad(grad_scores, q.shape[:-1])
        grad_p, grad_q = pair_dot_backward(grad_scores, p, q)
        grad_final = np.zeros((self.n_users + self.n_items, self.dim), dtype=self.dtype)
        np.add.at(grad_final, users, grad_p)
        np.add.at(grad_final, self.n_users + items.reshape(-1), grad_q.reshape(-1, self.dim))
        self._propagate_back(grad_final)
        return None

    def encode(self, side, ids):
        """The propagated rows F of `ids` on `side` ("user" or "item"), (n, dim)."""
        side = self._side(side)
        table = getattr(self, f"{side}_embedding")
        table(ids)  # checks the ids and records them for BatchL2
        offset = 0 if side == "user" else self.n_users
        self._keep_encoded(side, table.cache)
        return self.propagated()[offset + table.cache]

    def encode_backward(self, side, grad):
        """Accumulate the gradient of the last `encode(side, ...)` output (one backward propagation)."""
        side = self._side(side)
        ids = self._take_encoded(side)
        offset = 0 if side == "user" else self.n_users
        grad = np.asarray(grad, dtype=self.dtype)
        if grad.shape != ids.shape + (self.dim,):
            raise ValueError(f"grad has shape {grad.shape}, expected {ids.shape + (self.dim,)}")
        grad_final = np.zeros((self.n_users + self.n_items, self.dim), dtype=self.dtype)
        np.add.at(grad_final, offset + ids.reshape(-1), grad.reshape(-1, self.dim))
        self._propagate_back(grad_final)

    # ----------------------------------------------------------------------------- inference
    def user_factors(self, users=None):
        """F's user rows (a view of the kept propagation), or those of `users`."""
        rows = self.propagated()[:self.n_users]
        return rows if users is None else rows[as_1d_ids(users, self.n_users, "users")]

    def item_factors(self, items=None):
        """F's item rows (a view of the kept propagation), or those of `items`."""
        rows = self.propagated()[self.n_users:]
        return rows if items is None else rows[as_1d_ids(items, self.n_items, "items")]
