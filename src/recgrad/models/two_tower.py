"""Two-tower model: s(u, i) = <f(P[u]), g(Q[i])>, each side an embedding followed by an MLP tower.

    e_u = P[u]                          (dim,)
    h_u = tower_u(e_u)                  Linear -> act -> ... -> Linear   (dim,)
    z_u = h_u / max(|h_u|, 1e-12)       only when normalize=True (then s is a cosine similarity)
    s(u, i) = <z_u, z_i>                (the item side is built the same way, with its own weights)

Backward, for g = dL/ds: dL/dz_u = sum_k g_k z_ik and dL/dz_ik = g_k z_u (pair_dot's VJP);
through the normalisation dL/dh = (dL/dz - z <z, dL/dz>) / |h| (the projection onto the tangent
space of the sphere, shared with the cosine InfoNCE loss); then each tower's backward (Linear and
activation layers in reverse) and the embedding's scatter-add.

Tower widths: dim -> hidden[0] -> ... -> hidden[-1] -> dim, the activation after every Linear but
the last (a final ReLU would zero half the score space). hidden=() makes each tower one Linear.

Initialisers of the Linear weights (`init`), applied to every Linear of both towers, as PyTorch
code does with `for m in modules: nn.init.<rule>_(m.weight)`; the biases keep Linear's default
U[-1/sqrt(in), 1/sqrt(in)]:
    "kaiming": kaiming_normal_(fan_in, nonlinearity=activation): std = gain / sqrt(fan_in), gain
               from PyTorch's table (relu sqrt 2, tanh 5/3, sigmoid 1). GELU and Swish/SiLU have
               no entry in that table; they are ReLU-like (x times a gate in [0, 1]), so they use
               ReLU's gain sqrt(2).
    "xavier":  xavier_uniform_ with gain 1: U[-b, b], b = sqrt(6 / (fan_in + fan_out)).
    "default": Linear's own init, kaiming_uniform_(a=sqrt(5)): U[-1/sqrt(in), 1/sqrt(in)].
Reference: Yi et al. (2019), "Sampling-bias-corrected neural modeling for large corpus item
recommendations" (the two-tower architecture); Covington et al. (2016).
"""

import numpy as np

from recgrad import init as initializers
from recgrad._checks import boolean, positive_float, positive_int
from recgrad.models.base import FactorModel, as_1d_ids, pair_dot, pair_dot_backward, release_caches
from recgrad.models.embedding import Embedding
from recgrad.nn import GELU, Linear, ReLU, Sequential, Sigmoid, SiLU, Swish, Tanh

ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid, "gelu": GELU, "swish": Swish, "silu": SiLU}
INITS = ("kaiming", "xavier", "default")
# PyTorch's gain table names for kaiming; GELU/Swish/SiLU have none and take ReLU's.
KAIMING_NONLINEARITY = {
    "relu": "relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "gelu": "relu",
    "swish": "relu",
    "silu": "relu",
}
# Rows pushed through a tower at once by user_factors/item_factors (bounds the activations' memory).
FACTOR_BATCH = 8192


class TwoTower(FactorModel):
    """User and item embeddings, each through its own MLP tower; score = dot (cosine if normalize).

    Args:
        n_users, n_items: table sizes.
        dim: embedding width and tower output width.
        hidden: widths of the hidden layers of each tower (a tuple of positive ints, may be empty).
        activation: "relu", "tanh", "sigmoid", "gelu", "swish" or "silu" (recgrad.nn modules).
        init: "kaiming", "xavier" or "default" for the Linear weights (see the module docstring).
        normalize: L2-normalise each tower's output, making the score a cosine in [-1, 1].
        sparse, init_std: the embeddings' gradient mode and N(0, init_std^2) init.
        rng: numpy Generator, int seed or None. Draw order: user table, item table, user tower,
            item tower.
        dtype: np.float32 (default) or np.float64.
    """

    ID_TABLES = {"user_embedding.weight": "user", "item_embedding.weight": "item"}

    def __init__(
        self,
        n_users,
        n_items,
        dim=64,
        hidden=(64,),
        activation="relu",
        init="kaiming",
        normalize=False,
        sparse=True,
        init_std=0.1,
        rng=None,
        dtype=np.float32,
    ):
        super().__init__(n_users, n_items, dtype)
        self.dim = positive_int(dim, "dim")
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise ValueError(f"hidden must be a tuple of positive ints, got {hidden!r}")
        self.hidden = tuple(positive_int(width, "hidden width") for width in hidden)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.init = init
        self.normalize = boolean(normalize, "normalize")
        self.init_std = positive_float(init_std, "init_std")
        generator = initializers.as_generator(rng)
        self.user_embedding = Embedding(self.n_users, self.dim, sparse, self.init_std, rng=generator, dtype=self.dtype)
        self.item_embedding = Embedding(self.n_items, self.dim, sparse, self.init_std, rng=generator, dtype=self.dtype)
        self.sparse = self.user_embedding.sparse
        self.user_tower = self._build_tower(generator)
        self.item_tower = self._build_tower(generator)

    def _build_tower(self, generator):
        widths = (self.dim,) + self.hidden + (self.dim,)
        layers = []
        for index in range(len(widths) - 1):
            linear = Linear(widths[index], widths[index + 1], rng=generator, dtype=self.dtype)
            if self.init == "kaiming":
                initializers.kaiming_normal_(
                    linear.weight.data, nonlinearity=KAIMING_NONLINEARITY[self.activation], rng=generator
                )
            elif self.init == "xavier":
                initializers.xavier_uniform_(linear.weight.data, rng=generator)
            layers.append(linear)
            if index < len(widths) - 2:
                layers.append(ACTIVATIONS[self.activation]())
        return Sequential(*layers)

    def config(self):
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "dim": self.dim,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "init": self.init,
            "normalize": self.normalize,
            "sparse": self.sparse,
            "init_std": self.init_std,
            "dtype": self.dtype.name,
        }

    def encode(self, side, ids):
        """Tower outputs z of `ids` on `side` ("user" or "item"), (n, dim), cached for encode_backward."""
        side = self._side(side)
        z, denominator = self._encode(getattr(self, f"{side}_embedding"), getattr(self, f"{side}_tower"), ids)
        self._keep_encoded(side, (z, denominator))
        return z

    def encode_backward(self, side, grad):
        """Push dL/dz of the last `encode(side, ...)` through the normalisation, tower and table."""
        side = self._side(side)
        encoded = self._take_encoded(side)
        self._encode_backward(getattr(self, f"{side}_embedding"), getattr(self, f"{side}_tower"), grad, *encoded)

    def _encode(self, embedding, tower, ids):
        """ids (n,) -> (z (n, dim), denominator (n, 1) or None): embedding, tower, optional L2 norm."""
        return self._unit(tower(embedding(ids)))

    def _encode_backward(self, embedding, tower, grad_z, z, denominator):
        embedding.backward(tower.backward(self._unit_backward(grad_z, z, denominator)))

    def forward(self, users, items):
        """Scores <z_u, z_i>: users (B,), items (B,) or (B, K) -> (B,) or (B, K)."""
        users, items = self.check_pairs(users, items)
        z_user, d_user = self._encode(self.user_embedding, self.user_tower, users)
        z_item, d_item = self._encode(self.item_embedding, self.item_tower, items.reshape(-1))
        self.cache = (z_user, d_user, z_item, d_item, items.shape)
        return pair_dot(z_user, z_item.reshape(items.shape + (self.dim,)))

    def backward(self, grad_scores):
        """Accumulate the gradients of both towers and both tables; returns None."""
        z_user, d_user, z_item, d_item, items_shape = self.pending_cache()
        grad_scores = self.check_grad(grad_scores, items_shape)
        grad_user, grad_item = pair_dot_backward(grad_scores, z_user, z_item.reshape(items_shape + (self.dim,)))
        self._encode_backward(self.user_embedding, self.user_tower, grad_user, z_user, d_user)
        self._encode_backward(self.item_embedding, self.item_tower, grad_item.reshape(-1, self.dim), z_item, d_item)
        return None

    def _factors(self, embedding, tower, ids, count, name):
        ids = np.arange(count) if ids is None else as_1d_ids(ids, count, name)
        out = np.empty((ids.size, self.dim), dtype=self.dtype)
        for start in range(0, ids.size, FACTOR_BATCH):
            out[start : start + FACTOR_BATCH] = self._encode(embedding, tower, ids[start : start + FACTOR_BATCH])[0]
        release_caches(self)
        return out

    def user_factors(self, users=None):
        """Tower outputs z_u for `users` (all users when None), computed in batches; (n, dim).

        Runs the towers forward, so a pending forward's cache is released (backward first).
        """
        return self._factors(self.user_embedding, self.user_tower, users, self.n_users, "users")

    def item_factors(self, items=None):
        """Tower outputs z_i for `items` (all items when None), computed in batches; (n, dim)."""
        return self._factors(self.item_embedding, self.item_tower, items, self.n_items, "items")
