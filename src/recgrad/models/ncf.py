"""Neural collaborative filtering (He et al., 2017): GMF, MLP and NeuMF, scoring with a logit.

GMF (generalised matrix factorisation):
    x = p_u * q_i                               (dim,)  element-wise product
    s = h^T x + b                               the logit; P(interaction) = sigmoid(s)
    ds/dh = x,  ds/db = 1,  ds/dp_u = h * q_i,  ds/dq_i = h * p_u

MLP (the NCF paper's multi-layer perceptron; the same tower as NeuMF's MLP branch):
    x = MLP([p_u ; q_i])                                (mlp_layers[-1],); ReLU after every Linear
    s = h^T x + b
    Gradients: dL/dx = g h, back through the ReLU/Linear stack; the input gradient splits into
    dL/dp_u and dL/dq_i.

NeuMF (GMF and an MLP side by side, separate embeddings, fused by one output layer):
    x_gmf = p_u^G * q_i^G                               (mf_dim,)
    x_mlp = MLP([p_u^M ; q_i^M])                        (mlp_layers[-1],); ReLU after every Linear
    s     = h^T [x_gmf ; x_mlp] + b
    the MLP embeddings are mlp_layers[0] / 2 wide, so their concatenation is mlp_layers[0].
    Gradients: split dL/d[x_gmf ; x_mlp] = g h; the GMF half as above, the MLP half through the
    ReLU/Linear stack, whose input gradient splits back into dL/dp_u^M and dL/dq_i^M.

Outputs are logits, not probabilities: the paper's last layer is sigmoid(h^T x), and here the
sigmoid lives in the loss (recgrad.losses.BCEWithLogitsLoss), the stable form.

Initialisation follows the authors' Keras code (github.com/hexiangnan/neural_collaborative_filtering):
    embeddings       N(0, 0.01^2)                        init_normal(scale=0.01)
    MLP Linear       xavier_uniform_ weights, zero bias   Keras Dense default: glorot_uniform, zeros
    output h         LeCun uniform U[-sqrt(3/fan_in), +], zero bias ("lecun_uniform" in their code),
                     i.e. kaiming_uniform_ with the linear gain 1
(PyTorch ports differ: e.g. a kaiming_uniform_ output layer; we follow the original code.)
Pre-training (the paper's Sec. 3.4.1): `NeuMF.from_pretrained(gmf, mlp, alpha)` starts NeuMF from a
trained GMF and a trained MLP: each branch takes its model's embeddings (and hidden layers), and
    h = [alpha h_GMF ; (1 - alpha) h_MLP],   b = alpha b_GMF + (1 - alpha) b_MLP,
so that at the start s_NeuMF(u, i) = alpha s_GMF(u, i) + (1 - alpha) s_MLP(u, i) (alpha = 0.5 in the paper).
Reference: He, Liao, Zhang, Nie, Hu, Chua (2017), "Neural Collaborative Filtering", WWW.
"""

import numpy as np

from recgrad import init as initializers
from recgrad._checks import positive_float, positive_int
from recgrad.models.base import Recommender, as_1d_ids, release_caches
from recgrad.models.embedding import Embedding
from recgrad.nn import Linear, ReLU, Sequential

# Pairs scored at once by NeuMF.score_all (bounds the MLP activations' memory).
PAIR_BLOCK = 1 << 16


def _output_layer(in_features, generator, dtype):
    """h, b: LeCun-uniform weight (kaiming_uniform_, gain 1) and zero bias, as the NCF code."""
    layer = Linear(in_features, 1, rng=generator, dtype=dtype)
    initializers.kaiming_uniform_(layer.weight.data, nonlinearity="linear", rng=generator)
    initializers.zeros_(layer.bias.data)
    return layer


def _flatten_pairs(users, items):
    """users (B,), items (B,) or (B, K) -> the user id of every pair and the item ids, both flat."""
    return np.broadcast_to(users.reshape((-1,) + (1,) * (items.ndim - 1)), items.shape).reshape(-1), items.reshape(-1)


class GMF(Recommender):
    """Generalised matrix factorisation: logit = h^T (p_u * q_i) + b.

    Args:
        n_users, n_items: table sizes.
        dim: the number of predictive factors (32 in the ML-1M reference numbers).
        init_std: both tables start N(0, init_std^2) (0.01, as the NCF code).
        sparse: row-sparse (True) or dense (False) embedding gradients.
        rng: numpy Generator, int seed or None; draw order: users, items, output layer.
        dtype: np.float32 (default) or np.float64.
    """

    ID_TABLES = {"user_embedding.weight": "user", "item_embedding.weight": "item"}

    def __init__(self, n_users, n_items, dim=32, init_std=0.01, sparse=True, rng=None, dtype=np.float32):
        super().__init__(n_users, n_items, dtype)
        self.dim = positive_int(dim, "dim")
        self.init_std = positive_float(init_std, "init_std")
        generator = initializers.as_generator(rng)
        self.user_embedding = Embedding(self.n_users, self.dim, sparse, self.init_std, rng=generator, dtype=self.dtype)
        self.item_embedding = Embedding(self.n_items, self.dim, sparse, self.init_std, rng=generator, dtype=self.dtype)
        self.sparse = self.user_embedding.sparse
        self.output = _output_layer(self.dim, generator, self.dtype)

    def config(self):
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "dim": self.dim,
            "init_std": self.init_std,
            "sparse": self.sparse,
            "dtype": self.dtype.name,
        }

    def forward(self, users, items):
        """Logits h^T (p_u * q_i) + b: users (B,), items (B,) or (B, K) -> (B,) or (B, K)."""
        users, items = self.check_pairs(users, items)
        pair_users, pair_items = _flatten_pairs(users, items)
        p = self.user_embedding(pair_users)
        q = self.item_embedding(pair_items)
        self.cache = (p, q, items.shape)
        return self.output(p * q).reshape(items.shape)

    def backward(self, grad_scores):
        """dL/dx = g h^T (via the output Linear), then dL/dp = dL/dx * q and dL/dq = dL/dx * p."""
        p, q, shape = self.pending_cache()
        grad_x = self.output.backward(self.check_grad(grad_scores, shape).reshape(-1, 1))
        self.user_embedding.backward(grad_x * q)
        self.item_embedding.backward(grad_x * p)
        return None

    def score_all(self, users, items=None):
        """(P[users] * h) @ Q[items]^T + b: every pair's logit with one matrix product."""
        users = as_1d_ids(users, self.n_users, "users")
        q = self.item_embedding.weight.data
        if items is not None:
            q = q[as_1d_ids(items, self.n_items, "items")]
        weighted = self.user_embedding.weight.data[users] * self.output.weight.data[0]
        return weighted @ q.T + self.output.bias.data[0]


def _check_mlp_layers(mlp_layers):
    """mlp_layers as a tuple of positive ints whose first entry (the two embeddings side by side) is even."""
    if isinstance(mlp_layers, (str, bytes)) or not hasattr(mlp_layers, "__iter__"):
        raise ValueError(f"mlp_layers must be a tuple of positive ints, got {mlp_layers!r}")
    layers = tuple(positive_int(width, "mlp_layers width") for width in mlp_layers)
    if not layers or layers[0] % 2:
        raise ValueError(f"mlp_layers[0] must be an even width (the two embeddings concatenated), got {mlp_layers!r}")
    return layers


class _MLPBranch:
    """The MLP part shared by MLP and NeuMF: two embedding tables of mlp_layers[0] / 2 columns and
    the tower Linear + ReLU per later width, as attributes mlp_user_embedding, mlp_item_embedding
    and mlp (the same parameter names in both models, so that one's weights load into the other).

        forward:  x = MLP([p_u ; q_i])
        backward: dL/d[p_u ; q_i] = the tower's input gradient, split at mlp_layers[0] / 2
    """

    def _build_mlp_branch(self, mlp_layers, sparse, generator):
        """Draw order: users, items, then each Linear (xavier_uniform_ weight, zero bias)."""
        self.mlp_layers = _check_mlp_layers(mlp_layers)
        half = self.mlp_layers[0] // 2
        self.mlp_user_embedding = Embedding(self.n_users, half, sparse, self.init_std, rng=generator, dtype=self.dtype)
        self.mlp_item_embedding = Embedding(self.n_items, half, sparse, self.init_std, rng=generator, dtype=self.dtype)
        layers = []
        for width_in, width_out in zip(self.mlp_layers[:-1], self.mlp_layers[1:]):
            linear = Linear(width_in, width_out, rng=generator, dtype=self.dtype)
            initializers.xavier_uniform_(linear.weight.data, rng=generator)
            initializers.zeros_(linear.bias.data)
            layers += [linear, ReLU()]
        self.mlp = Sequential(*layers)

    def config(self):
        """The constructor arguments of the MLP part and the tables (NeuMF adds mf_dim)."""
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "mlp_layers": list(self.mlp_layers),
            "init_std": self.init_std,
            "sparse": self.sparse,
            "dtype": self.dtype.name,
        }

    def _mlp_forward(self, pair_users, pair_items):
        """x = MLP([p_u ; q_i]) for flat id arrays: (P,) -> (P, mlp_layers[-1])."""
        p = self.mlp_user_embedding(pair_users)
        q = self.mlp_item_embedding(pair_items)
        return self.mlp(np.concatenate([p, q], axis=1))

    def _mlp_backward(self, grad_x):
        """dL/dx (P, mlp_layers[-1]) through the tower into the two tables."""
        grad_concat = self.mlp.backward(grad_x)
        half = self.mlp_layers[0] // 2
        self.mlp_user_embedding.backward(grad_concat[:, :half])
        self.mlp_item_embedding.backward(grad_concat[:, half:])

    def score_all(self, users, items=None):
        """Every (user, item) logit, running the network on blocks of about PAIR_BLOCK pairs.

        Runs forward, so a pending forward's cache is released (call backward first).
        """
        users = as_1d_ids(users, self.n_users, "users")
        items = np.arange(self.n_items) if items is None else as_1d_ids(items, self.n_items, "items")
        scores = np.empty((users.size, items.size), dtype=self.dtype)
        rows = max(1, PAIR_BLOCK // items.size)
        for start in range(0, users.size, rows):
            block = users[start : start + rows]
            scores[start : start + rows] = self.forward(block, np.broadcast_to(items, (block.size, items.size)))
        release_caches(self)
        return scores


class MLP(_MLPBranch, Recommender):
    """NCF's MLP: logit = h^T MLP([p_u ; q_i]) + b, the tower and init of NeuMF's MLP branch.

    Args:
        n_users, n_items: table sizes.
        mlp_layers: widths; mlp_layers[0] (even) is the concatenated embedding width, each later
            entry a Linear + ReLU, mlp_layers[-1] the predictive factors.
        init_std: both tables start N(0, init_std^2).
        sparse: row-sparse (True) or dense (False) embedding gradients.
        rng: numpy Generator, int seed or None; draw order: users, items, MLP layers, output layer.
        dtype: np.float32 (default) or np.float64.
    """

    ID_TABLES = {"mlp_user_embedding.weight": "user", "mlp_item_embedding.weight": "item"}

    def __init__(self, n_users, n_items, mlp_layers=(64, 32, 16, 8), init_std=0.01, sparse=True, rng=None,
                 dtype=np.float32):
        super().__init__(n_users, n_items, dtype)
        self.init_std = positive_float(init_std, "init_std")
        generator = initializers.as_generator(rng)
        self._build_mlp_branch(mlp_layers, sparse, generator)
        self.sparse = self.mlp_user_embedding.sparse
        self.output = _output_layer(self.mlp_layers[-1], generator, self.dtype)

    def forward(self, users, items):
        """Logits h^T MLP([p_u ; q_i]) + b: users (B,), items (B,) or (B, K) -> (B,) or (B, K)."""
        users, items = self.check_pairs(users, items)
        pair_users, pair_items = _flatten_pairs(users, items)
        self.cache = items.shape
        return self.output(self._mlp_forward(pair_users, pair_items)).reshape(items.shape)

    def backward(self, grad_scores):
        """dL/dx = g h^T (via the output Linear), then through the tower; returns None."""
        shape = self.pending_cache()
        self._mlp_backward(self.output.backward(self.check_grad(grad_scores, shape).reshape(-1, 1)))
        return None


class NeuMF(_MLPBranch, Recommender):
    """NeuMF: a GMF branch and an MLP branch with their own embeddings, fused by one output layer.

    Args:
        n_users, n_items: table sizes.
        mf_dim: width of the GMF embeddings (the "predictive factors" of the paper's tables).
        mlp_layers: MLP widths; mlp_layers[0] (even) is the concatenated embedding width, each
            later entry a Linear + ReLU. The paper's default tower is (64, 32, 16, 8).
        init_std: the four tables start N(0, init_std^2).
        sparse: row-sparse (True) or dense (False) embedding gradients.
        rng: numpy Generator, int seed or None; draw order: GMF users, GMF items, MLP users, MLP
            items, MLP layers, output layer.
        dtype: np.float32 (default) or np.float64.
    """

    ID_TABLES = {"gmf_user_embedding.weight": "user", "gmf_item_embedding.weight": "item",
                 "mlp_user_embedding.weight": "user", "mlp_item_embedding.weight": "item"}

    def __init__(
        self,
        n_users,
        n_items,
        mf_dim=8,
        mlp_layers=(64, 32, 16, 8),
        init_std=0.01,
        sparse=True,
        rng=None,
        dtype=np.float32,
    ):
        super().__init__(n_users, n_items, dtype)
        self.mf_dim = positive_int(mf_dim, "mf_dim")
        _check_mlp_layers(mlp_layers)  # before any table is drawn
        self.init_std = positive_float(init_std, "init_std")
        generator = initializers.as_generator(rng)
        self.gmf_user_embedding = Embedding(self.n_users, self.mf_dim, sparse, self.init_std, rng=generator,
                                            dtype=self.dtype)
        self.gmf_item_embedding = Embedding(self.n_items, self.mf_dim, sparse, self.init_std, rng=generator,
                                            dtype=self.dtype)
        self.sparse = self.gmf_user_embedding.sparse
        self._build_mlp_branch(mlp_layers, sparse, generator)
        self.output = _output_layer(self.mf_dim + self.mlp_layers[-1], generator, self.dtype)

    @classmethod
    def from_pretrained(cls, gmf, mlp, alpha=0.5, sparse=None):
        """NeuMF started from a trained GMF and a trained MLP (NCF Sec. 3.4.1); the inputs are not changed.

            GMF tables <- gmf's;  MLP tables and hidden layers <- mlp's
            h = [alpha h_GMF ; (1 - alpha) h_MLP],  b = alpha b_GMF + (1 - alpha) b_MLP
            => s_NeuMF(u, i) = alpha s_GMF(u, i) + (1 - alpha) s_MLP(u, i) at the start.

        mf_dim is gmf.dim, mlp_layers mlp.mlp_layers, the dtype gmf's (mlp's arrays are cast to it),
        sparse gmf's unless given. The two must have the same users and items (ValueError naming
        both shapes otherwise); alpha is in [0, 1].
        """
        if not isinstance(gmf, GMF):
            raise TypeError(f"gmf must be a GMF, got {type(gmf).__name__}")
        if not isinstance(mlp, MLP):
            raise TypeError(f"mlp must be an MLP, got {type(mlp).__name__}")
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        if (gmf.n_users, gmf.n_items) != (mlp.n_users, mlp.n_items):
            raise ValueError(f"the GMF has {gmf.n_users} users x {gmf.n_items} items but the MLP has "
                             f"{mlp.n_users} x {mlp.n_items}; pre-train both on the same data")
        model = cls(gmf.n_users, gmf.n_items, mf_dim=gmf.dim, mlp_layers=mlp.mlp_layers, init_std=gmf.init_std,
                    sparse=gmf.sparse if sparse is None else sparse, rng=0, dtype=gmf.dtype)
        state = {name: value for name, value in mlp.state_dict().items() if not name.startswith("output.")}
        state["gmf_user_embedding.weight"] = gmf.user_embedding.weight.data
        state["gmf_item_embedding.weight"] = gmf.item_embedding.weight.data
        state["output.weight"] = np.concatenate([alpha * gmf.output.weight.data.astype(np.float64),
                                                 (1.0 - alpha) * mlp.output.weight.data.astype(np.float64)], axis=1)
        state["output.bias"] = (alpha * gmf.output.bias.data.astype(np.float64)
                                + (1.0 - alpha) * mlp.output.bias.data.astype(np.float64))
        model.load_state_dict({name: np.asarray(value, dtype=model.dtype) for name, value in state.items()})
        return model

    def config(self):
        return {"mf_dim": self.mf_dim, **super().config()}

    def forward(self, users, items):
        """Logits h^T [p^G * q^G ; MLP([p^M ; q^M])] + b: users (B,), items (B,) or (B, K) -> (B,) or (B, K)."""
        users, items = self.check_pairs(users, items)
        pair_users, pair_items = _flatten_pairs(users, items)
        p_gmf = self.gmf_user_embedding(pair_users)
        q_gmf = self.gmf_item_embedding(pair_items)
        x_mlp = self._mlp_forward(pair_users, pair_items)
        self.cache = (p_gmf, q_gmf, items.shape)
        return self.output(np.concatenate([p_gmf * q_gmf, x_mlp], axis=1)).reshape(items.shape)

    def backward(self, grad_scores):
        """Split dL/d[x_gmf ; x_mlp] between the branches, then each branch's backward; returns None."""
        p_gmf, q_gmf, shape = self.pending_cache()
        grad_fused = self.output.backward(self.check_grad(grad_scores, shape).reshape(-1, 1))
        grad_gmf, grad_mlp = grad_fused[:, : self.mf_dim], grad_fused[:, self.mf_dim :]
        self.gmf_user_embedding.backward(grad_gmf * q_gmf)
        self.gmf_item_embedding.backward(grad_gmf * p_gmf)
        self._mlp_backward(grad_mlp)
        return None
