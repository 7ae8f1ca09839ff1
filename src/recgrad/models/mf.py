"""Matrix factorisation: s(u, i) = <P[u], Q[i]>.

    forward:   s[b]    = sum_d P[u_b, d] Q[i_b, d]              users (B,), items (B,)   -> (B,)
               s[b, k] = sum_d P[u_b, d] Q[i_bk, d]             users (B,), items (B, K) -> (B, K)
    backward:  dL/dP[u_b]  += sum_k g[b, k] Q[i_bk]
               dL/dQ[i_bk] += g[b, k] P[u_b]

(the product rule on a bilinear form; the embedding backward then scatters these row gradients
into the tables, summing repeated ids). No biases: the LightGCN/NGCF "MF" baseline trained with
BPR, whose tables start N(0, 0.1^2) (see embedding.py for why not Xavier).

With normalize=True the score is the cosine of the two rows, s = <p/|p|, q/|q|> (norms clamped at
1e-12, torch.nn.functional.normalize), and the backward goes on through the normalisation,
dL/dp = (g - p_hat <p_hat, g>) / |p| with g = dL/dp_hat (`recgrad.losses.l2_normalize_backward`).
This is the model to train with a cosine InfoNCE: it then scores, evaluates and recommends by the
similarity it was trained on. (A plain MF trained that way ranks by the dot product, i.e. each
cosine times the item's norm, which grows with the item's training count: a popularity tilt.)
Reference: Koren, Bell & Volinsky (2009); Rendle et al. (2009), BPR; He et al. (2020), LightGCN.
"""

import numpy as np

from recgrad._checks import boolean, positive_float, positive_int
from recgrad.init import as_generator
from recgrad.models.base import FactorModel, as_1d_ids, pair_dot, pair_dot_backward
from recgrad.models.embedding import Embedding


class MF(FactorModel):
    """Matrix factorisation with a user table P (n_users, dim) and an item table Q (n_items, dim).

    Args:
        n_users, n_items: table sizes.
        dim: factor dimension.
        sparse: row-sparse (True) or dense (False) embedding gradients; see `Embedding`.
        init_std: both tables start N(0, init_std^2).
        normalize: score with the cosine of the rows instead of their dot product (module doc).
        rng: numpy Generator, int seed or None (the user table is drawn first, then the item table).
        dtype: np.float32 (default) or np.float64.

    Example:
        >>> model = MF(100, 50, dim=8, rng=0)
        >>> model.score(np.array([0, 1]), np.array([3, 4])).shape
        (2,)
    """

    ID_TABLES = {"user_embedding.weight": "user", "item_embedding.weight": "item"}

    def __init__(self, n_users, n_items, dim=64, sparse=True, init_std=0.1, normalize=False, rng=None,
                 dtype=np.float32):
        super().__init__(n_users, n_items, dtype)
        self.dim = positive_int(dim, "dim")
        self.init_std = positive_float(init_std, "init_std")
        self.normalize = boolean(normalize, "normalize")
        generator = as_generator(rng)
        self.user_embedding = Embedding(self.n_users, self.dim, sparse, self.init_std, rng=generator, dtype=self.dtype)
        self.item_embedding = Embedding(self.n_items, self.dim, sparse, self.init_std, rng=generator, dtype=self.dtype)
        self.sparse = self.user_embedding.sparse

    def config(self):
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "dim": self.dim,
            "sparse": self.sparse,
            "init_std": self.init_std,
            "normalize": self.normalize,
            "dtype": self.dtype.name,
        }

    def forward(self, users, items):
        """Scores <P[u], Q[i]> (cosine with normalize): users (B,), items (B,) or (B, K) -> (B,) or (B, K)."""
        users, items = self.check_pairs(users, items)
        p, p_norm = self._unit(self.user_embedding(users))
        q, q_norm = self._unit(self.item_embedding(items))
        self.cache = (p, p_norm, q, q_norm)
        return pair_dot(p, q)

    def backward(self, grad_scores):
        """Accumulate dL/dP and dL/dQ from grad_scores (the forward output's shape); returns None."""
        p, p_norm, q, q_norm = self.pending_cache()
        grad_scores = self.check_grad(grad_scores, q.shape[:-1])
        grad_p, grad_q = pair_dot_backward(grad_scores, p, q)
        self.user_embedding.backward(self._unit_backward(grad_p, p, p_norm))
        self.item_embedding.backward(self._unit_backward(grad_q, q, q_norm))
        return None

    def encode(self, side, ids):
        """The rows of `ids` on `side` ("user" or "item"), unit rows with normalize; (n, dim)."""
        side = self._side(side)
        unit, norm = self._unit(getattr(self, f"{side}_embedding")(ids))
        self._keep_encoded(side, (unit, norm))
        return unit

    def encode_backward(self, side, grad):
        """Accumulate the gradient of the last `encode(side, ...)` output into that table."""
        side = self._side(side)
        unit, norm = self._take_encoded(side)
        getattr(self, f"{side}_embedding").backward(self._unit_backward(grad, unit, norm))

    def user_factors(self, users=None):
        """P (the table itself, not a copy) or its rows for `users`; with normalize, unit rows (a copy)."""
        table = self.user_embedding.weight.data
        rows = table if users is None else table[as_1d_ids(users, self.n_users, "users")]
        return self._unit(rows)[0]

    def item_factors(self, items=None):
        """Q (the table itself, not a copy) or its rows for `items`; with normalize, unit rows (a copy)."""
        table = self.item_embedding.weight.data
        rows = table if items is None else table[as_1d_ids(items, self.n_items, "items")]
        return self._unit(rows)[0]
