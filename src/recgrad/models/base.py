"""What every recommender shares: pair checks, top-N recommendation, and .npz save/load.

A model is a Module with

    forward(users (B,), items (B,) or (B, K)) -> scores (B,) or (B, K)     (training, caches)
    backward(grad_scores) -> None                   (accumulates into the parameters)
    score(users, items)                             (the same scores, for inference)
    score_all(users, items=None) -> (len(users), n_items or len(items))

and the base class builds `recommend`, `save` and `load` on top of them. Scores are whatever
the model's loss expects: a dot product for MF/TwoTower, a logit for GMF/MLP/NeuMF; a larger score
always means a better item.
"""

import inspect
import json
import math
import os
import zipfile
import zlib

import numpy as np
import scipy.sparse

from recgrad._checks import positive_int
from recgrad.engine import use_compiled
from recgrad.evaluation import top_k
from recgrad.kernels.topk import top_k_masked
from recgrad.losses import l2_normalize, l2_normalize_backward
from recgrad.models.embedding import as_ids, check_dtype
from recgrad.nn.module import Module
from recgrad.serving.foldin import FoldIn
from recgrad.serving.index import ExactIndex

FORMAT_VERSION = 1
_REGISTRY = {}


class Recommender(Module):
    """Base class of the recommenders; subclasses set up their parameters and define `config()`.

    ID_TABLES names the parameters with one row per user or per item id, {name: "user" | "item"}:
    a run that grows to new users and items (`recgrad.train.grow`) appends rows to these and
    keeps every other parameter as it is. A model that leaves it empty cannot grow.
    """

    ID_TABLES: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def __init__(self, n_users, n_items, dtype):
        self.n_users = positive_int(n_users, "n_users")
        self.n_items = positive_int(n_items, "n_items")
        self.dtype = check_dtype(dtype)

    def config(self):
        """The constructor's keyword arguments (JSON-able; rng excluded), as saved by `save`."""
        raise NotImplementedError(f"{type(self).__name__} must define config")

    def score_all(self, users, items=None):
        """Scores of every item (or of `items`) for each user: shape (len(users), n_items or len(items))."""
        raise NotImplementedError(f"{type(self).__name__} must define score_all")

    def buffers(self):
        """Arrays the model needs besides its parameters (LightGCN's graph, an item prior), saved with it:
        {name: array} of integers or finite floats."""
        return {}

    def load_buffers(self, buffers):
        """Take back what `buffers()` returned (`load_model` calls it); a model without buffers accepts none."""
        if buffers:
            raise ValueError(f"{type(self).__name__} has no buffers, got {sorted(buffers)}")

    # ----------------------------------------------------------------------------------------- pairs
    def check_pairs(self, users, items):
        """Validate a training/scoring batch: users (B,) and items (B,) or (B, K), all ids in range."""
        users = as_ids(users, self.n_users, "users")
        items = as_ids(items, self.n_items, "items")
        if users.ndim != 1:
            raise ValueError(f"users must be 1-D (B,), got shape {users.shape}")
        if items.ndim not in (1, 2) or items.shape[0] != users.shape[0]:
            raise ValueError(
                f"items must have shape (B,) or (B, K) with B = len(users) = {users.shape[0]}, got {items.shape}"
            )
        return users, items

    def check_grad(self, grad_scores, shape):
        """grad_scores as an array of the model's dtype and of the forward output's shape."""
        grad_scores = np.asarray(grad_scores, dtype=self.dtype)
        if grad_scores.shape != shape:
            raise ValueError(f"grad_scores has shape {grad_scores.shape}, expected the scores' shape {shape}")
        return grad_scores

    def pending_cache(self):
        """The cache of the last forward, or RuntimeError when there is none to differentiate."""
        if self.cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward needs a preceding forward (score/score_all/recommend do not keep one)"
            )
        return self.cache

    def score(self, users, items):
        """Scores of (user, item) pairs for inference: forward's values, no cache kept.

        users (B,), items (B,) or (B, K) -> (B,) or (B, K). A pending forward's cache is released,
        so call backward before scoring anything else.
        """
        scores = self.forward(users, items)
        release_caches(self)
        return scores

    # ------------------------------------------------------------------------------------ recommend
    def recommend(self, userid, user_items, N=10, filter_already_liked_items=True, items=None, engine=None):
        """The N best items per user, implicit's (>= 0.5) `recommend` convention.

        Args:
            userid: an int (-> 1-D results) or a 1-D array of user ids (-> 2-D results, row k for
                userid[k]).
            user_items: scipy sparse users x items matrix of the known interactions (every stored
                non-zero counts as liked). Either the rows for `userid` (implicit's rule:
                `user_items[userid]`, row k belongs to userid[k]) or the full (n_users, n_items)
                matrix indexed by user id. The shape decides: len(userid) rows -> by position,
                n_users rows -> by id. When both hold and differ (userid is a reordering of all
                users) the call is ambiguous and raises ValueError; pass `user_items[userid]`.
                May be None when filter_already_liked_items is False.
            N: number of items per user; clipped to the number of candidate items.
            filter_already_liked_items: drop the user's items in `user_items` from the ranking.
            items: optional 1-D array of distinct item ids: rank only these (implicit's `items`).
            engine: `recgrad.engine` (None: the default): over the whole catalogue the masking and
                the top N run in one compiled pass (`recgrad.kernels.topk.top_k_masked`, which
                writes nothing into the scores); "numpy" or an item subset: the NumPy reference.

        Returns:
            (ids, scores): int64 ids and the model's scores, best first; equal scores are ordered
            by the lower item id. When filtering leaves a user fewer than N candidates, the
            remaining slots hold id -1 and score -inf (so a batch stays rectangular and a single
            user's answer equals its row of the batch answer, up to the rounding of a batched
            matrix product); a score of -inf from the model itself is treated the same way.

        Top-N selection is the evaluation's own: the compiled masked scan, or its reference
        `recgrad.evaluation.top_k` (a linear-time selection of candidates, then a sort of those
        candidates only); both give the same ids and scores (tests/test_kernels_topk.py).
        """
        single = np.ndim(userid) == 0
        users = as_ids(np.atleast_1d(userid), self.n_users, "userid")
        if users.ndim != 1:
            raise ValueError(f"userid must be an int or a 1-D array, got shape {users.shape}")
        N = positive_int(N, "N")
        if items is None:
            candidates = np.arange(self.n_items)
        else:
            candidates = as_ids(items, self.n_items, "items")
            if candidates.ndim != 1 or candidates.size == 0:
                raise ValueError(f"items must be a non-empty 1-D array of item ids, got shape {candidates.shape}")
            candidates = np.unique(candidates)  # sorted: a column's position orders ties as its id does
            if candidates.size != np.size(items):
                raise ValueError("items must not contain repeated ids")
        liked = None
        if filter_already_liked_items or user_items is not None:
            liked = self.liked_rows(users, user_items)
        scores = self.score_all(users, None if items is None else candidates)
        covered = items is None and scores.dtype in (np.float32, np.float64)
        if use_compiled(engine, covered, f"recommend over {'an item subset' if items is not None else scores.dtype}"):
            mask = liked if filter_already_liked_items else None
            if mask is not None and np.any(mask.data == 0):  # a stored zero is not a liked item
                mask = mask.copy()
                mask.eliminate_zeros()
            ids, best, _ = top_k_masked(scores, min(N, self.n_items), mask=mask)
            return (ids[0], best[0]) if single else (ids, best)
        scores = np.array(scores, copy=True)
        if filter_already_liked_items:
            position = np.full(self.n_items, -1)
            position[candidates] = np.arange(candidates.size)
            rows = np.repeat(np.arange(users.size), np.diff(liked.indptr))
            columns = position[liked.indices]
            keep = (columns >= 0) & (liked.data != 0)
            scores[rows[keep], columns[keep]] = -np.inf
        positions, best = top_k(scores, min(N, candidates.size))
        missing = np.isneginf(best)
        ids = np.where(missing, -1, candidates[positions])
        return (ids[0], best[0]) if single else (ids, best)

    def liked_rows(self, users, user_items):
        """The CSR rows of `user_items` for `users` (see `recommend` for the position/id rule)."""
        if not scipy.sparse.issparse(user_items):
            raise TypeError(f"user_items must be a scipy sparse users x items matrix, got {type(user_items).__name__}")
        if user_items.ndim != 2 or user_items.shape[1] != self.n_items:
            raise ValueError(f"user_items has shape {user_items.shape}; it needs {self.n_items} columns (n_items)")
        csr = scipy.sparse.csr_matrix(user_items)
        n_rows = csr.shape[0]
        by_position = n_rows == users.size
        by_id = n_rows == self.n_users
        if by_position and by_id and not np.array_equal(users, np.arange(self.n_users)):
            raise ValueError(
                "user_items has n_users rows and userid lists every user in another order: pass "
                "user_items[userid] (row k for userid[k]) to make the rows unambiguous"
            )
        if by_position:
            return csr
        if by_id:
            return csr[users]
        raise ValueError(
            f"user_items has {n_rows} rows: expected len(userid) = {users.size} (the rows for userid) "
            f"or n_users = {self.n_users} (the full matrix)"
        )

    # ------------------------------------------------------------------------------------ save/load
    def save(self, file):
        """Write the model to an .npz archive (np.savez; plain arrays and strings, no pickle).

        Stored: `__model__` (the class name), `__config__` (the constructor arguments as a JSON
        string), `__format__`, each parameter as `param.<dotted name>` and each of `buffers()` as
        `buffer.<name>`. A path without the .npz suffix gets it appended, as np.savez does; the
        path written is returned (None for a file object).
        """
        arrays = {
            "__model__": np.array(type(self).__name__),
            "__config__": np.array(json.dumps(self.config(), sort_keys=True)),
            "__format__": np.array(FORMAT_VERSION),
        }
        arrays.update({"param." + name: value for name, value in self.state_dict().items()})
        arrays.update({"buffer." + name: value for name, value in self.buffers().items()})
        np.savez(file, **arrays)
        if isinstance(file, (str, os.PathLike)):
            path = os.fspath(file)
            return path if path.endswith(".npz") else path + ".npz"
        return None

    @classmethod
    def load(cls, file):
        """Read a model written by `save`; raises ValueError if the file holds another model class."""
        model = load_model(file)
        if not isinstance(model, cls):
            raise ValueError(f"{file!r} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


class FactorModel(Recommender):
    """A model whose score is a dot product, s(u, i) = <user_vector(u), item_vector(i)>.

    Subclasses define `user_factors(users=None)` and `item_factors(items=None)`, the final
    representations of the given ids (all ids when None), shapes (n, dim). Full-ranking
    evaluation computes them once and multiplies blocks of users by item_factors().T.

    For losses on the representations themselves (InfoNCE), `encode(side, ids)` computes them
    with a cache and `encode_backward(side, grad)` pushes a gradient of those vectors into the
    parameters; side is "user" or "item", and each side keeps the cache of its last encode.
    """

    SIDES = ("user", "item")

    def encode(self, side, ids):
        raise NotImplementedError(f"{type(self).__name__} must define encode")

    def encode_backward(self, side, grad):
        raise NotImplementedError(f"{type(self).__name__} must define encode_backward")

    def _side(self, side):
        if side not in self.SIDES:
            raise ValueError(f"side must be one of {self.SIDES}, got {side!r}")
        return side

    def _unit(self, vectors):
        """(vectors, None), or when the model normalises (its `normalize`) the unit rows and their
        clamped norms, which `_unit_backward` needs (`recgrad.losses.l2_normalize`)."""
        return l2_normalize(vectors) if self.normalize else (vectors, None)

    @staticmethod
    def _unit_backward(grad, unit, norm):
        """The gradient through `_unit`: unchanged when nothing was normalised (norm None)."""
        return grad if norm is None else l2_normalize_backward(grad, unit, norm)

    def _keep_encoded(self, side, cache):
        """Remember what encode_backward(side, ...) needs from the last encode(side, ...)."""
        setattr(self, f"_{side}_encoded", cache)

    def _take_encoded(self, side):
        """The cache of the last encode(side, ...), handed out once; RuntimeError when there is none."""
        cache = getattr(self, f"_{side}_encoded", None)
        if cache is None:
            raise RuntimeError(f"encode_backward({side!r}) called before encode({side!r}, ...)")
        setattr(self, f"_{side}_encoded", None)
        return cache

    def user_factors(self, users=None):
        raise NotImplementedError(f"{type(self).__name__} must define user_factors")

    def item_factors(self, items=None):
        raise NotImplementedError(f"{type(self).__name__} must define item_factors")

    # ---------------------------------------------------------------------- the item prior
    item_prior = None  # (n_items,) fixed term added to each item's score when ranking, or None

    def set_item_prior(self, prior):
        """Rank by s(u, i) + prior[i]: a fixed per-item term (None removes it), such as the
        popularity prior beta log(1 + n_i) of `recgrad.train.popularity_prior`.

        It enters every ranking (`score`, `score_all`, `recommend`, the evaluation, the serving
        indexes) and no training step: `forward`, the objective's scores, never sees it. The
        ranking stays one dot product, of `ranking_user_factors` and `ranking_item_factors`, the
        factors with one more column: 1 on the user side, prior[i] on the item side. Saved with the
        model (`buffers`).
        """
        if prior is None:
            self.item_prior = None
            return
        prior = np.asarray(prior)
        if prior.shape != (self.n_items,) or prior.dtype.kind not in "iuf" or not np.all(np.isfinite(prior)):
            raise ValueError(f"item prior: expected {self.n_items} finite numbers (one per item), "
                             f"got an array of shape {prior.shape} and dtype {prior.dtype}")
        self.item_prior = prior.astype(self.dtype)

    def ranking_user_factors(self, users=None):
        """user_factors(users), with a column of ones when the model has an item prior."""
        factors = self.user_factors(users)
        if self.item_prior is None:
            return factors
        return np.hstack([factors, np.ones((factors.shape[0], 1), factors.dtype)])

    def ranking_item_factors(self, items=None):
        """item_factors(items), with the item prior as one more column when the model has one."""
        factors = self.item_factors(items)
        if self.item_prior is None:
            return factors
        prior = self.item_prior if items is None else self.item_prior[as_1d_ids(items, self.n_items, "items")]
        return np.hstack([factors, prior[:, None].astype(factors.dtype)])

    def buffers(self):
        return {} if self.item_prior is None else {"item_prior": self.item_prior}

    def load_buffers(self, buffers):
        Recommender.load_buffers(self, self.load_item_prior(buffers))

    def load_item_prior(self, buffers):
        """Take the item prior out of `buffers` (`set_item_prior`, None without one); the others are returned."""
        self.set_item_prior(buffers.get("item_prior"))
        return {name: value for name, value in buffers.items() if name != "item_prior"}

    def score(self, users, items):
        """forward's scores, plus the item prior of `items` when the model has one; no cache kept."""
        scores = super().score(users, items)
        if self.item_prior is None:
            return scores
        return scores + self.item_prior[as_1d_ids(np.ravel(items), self.n_items, "items")].reshape(np.shape(items))

    def score_all(self, users, items=None):
        """The ranking scores of every item (or of `items`): ranking_user_factors(users) @
        ranking_item_factors(items).T, shape (len(users), n_items or len(items))."""
        return self.ranking_user_factors(as_1d_ids(users, self.n_users, "users")) @ self.ranking_item_factors(items).T

    # ---------------------------------------------------------------------------- serving
    def recommend_new(self, user_items, N=10, filter_already_liked_items=True, fold=None, index=None):
        """The N best items for a user who was not in the training data (fold-in).

        Args:
            user_items: 1-D array of the item ids the new user interacted with (at least one).
            N: number of items; filter_already_liked_items: drop `user_items` from the ranking.
            fold: the `recgrad.serving.foldin.FoldIn` objective (the training run's loss and L2;
                `FoldIn.from_run_config`); None: `FoldIn()`, BPR without L2.
            index: the `recgrad.serving.index` index over `ranking_item_factors()` to search (e.g.
                an HNSWIndex); None: the exact scan.

        Returns:
            (ids, scores) as `recommend` for one user: the user's vector is folded in against the
            frozen item vectors (unit for a normalised model, so the scores are cosines).
        """
        history = np.unique(as_1d_ids(user_items, self.n_items, "user_items"))
        index = ExactIndex(self.ranking_item_factors()) if index is None else index
        if self.item_prior is None:
            vector = self.fold_in(history, fold, index.vectors)
        else:  # fold in against the factors, rank with the prior's column
            vector = np.append(self.fold_in(history, fold, index.vectors[:, :-1]), index.vectors.dtype.type(1.0))
        excluded = history if filter_already_liked_items else history[:0]
        ids, scores = index.search(vector[None, :], N, [excluded])
        return ids[0], scores[0]

    def fold_in(self, user_items, fold=None, item_vectors=None):
        """The folded-in vector (dim,) of a new user with `user_items` (docs/serving.md); unit
        rows for a normalised model. item_vectors: `item_factors()` when already at hand."""
        history = np.unique(as_1d_ids(user_items, self.n_items, "user_items"))
        item_vectors = self.item_factors() if item_vectors is None else item_vectors
        vector = (FoldIn() if fold is None else fold).vector(item_vectors, history)
        return self._unit(vector[None, :])[0][0]

    def similar_items(self, itemid, N=10, filter_items=None, items=None, index=None):
        """The N items most similar to each item of `itemid`, by the cosine of `item_factors()`.

        The cosine for every model, normalised or not: the dot product of a plain MF would rank
        the long (popular) vectors first for every query (implicit's `similar_items` convention).
        The query item is never listed; `filter_items` (ids) are dropped from every answer;
        `items` (distinct ids) restricts the candidates (searched exactly); `index`: an index
        over the unit item vectors (None: the exact scan). Returns (ids, scores) as `recommend`:
        1-D for an int, 2-D for an array.
        """
        return self._similar("item", itemid, N, filter_items, items, index)

    def similar_users(self, userid, N=10, filter_users=None, users=None, index=None):
        """The N users most similar to each user of `userid`, by the cosine of `user_factors()`
        (as `similar_items`, on the user side)."""
        return self._similar("user", userid, N, filter_users, users, index)

    def _similar(self, side, query, N, filtered, candidates, index):
        count = getattr(self, f"n_{side}s")
        single = np.ndim(query) == 0
        query = as_1d_ids(np.atleast_1d(query), count, f"{side}id")
        filtered = np.zeros(0, np.int64) if filtered is None else as_1d_ids(filtered, count, f"filter_{side}s")
        factors = getattr(self, f"{side}_factors")
        if candidates is not None:
            candidates = as_1d_ids(candidates, count, f"{side}s")
            if candidates.size == 0 or np.unique(candidates).size != candidates.size:
                raise ValueError(f"{side}s must be a non-empty array of distinct ids")
            candidates = np.sort(candidates)
            index = ExactIndex(l2_normalize(factors(candidates))[0], ids=candidates)
        elif index is None:
            index = ExactIndex(l2_normalize(factors())[0])
        ids, scores = index.search(l2_normalize(factors(query))[0], N, [np.append(filtered, q) for q in query])
        return (ids[0], scores[0]) if single else (ids, scores)


def as_1d_ids(ids, num, name):
    """A 1-D int64 id array in [0, num), or an error naming `name`."""
    ids = as_ids(ids, num, name)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of ids, got shape {ids.shape}")
    return ids


def pair_dot(u, v):
    """s[b] = <u[b], v[b]> for v (B, d), or s[b, k] = <u[b], v[b, k]> for v (B, K, d)."""
    if v.ndim == 2:
        return np.einsum("bd,bd->b", u, v)
    return np.einsum("bd,bkd->bk", u, v)


def pair_dot_backward(grad, u, v):
    """VJP of pair_dot: dL/du[b] = sum_k g[b, k] v[b, k] and dL/dv[b, k] = g[b, k] u[b]."""
    if v.ndim == 2:
        return grad[:, None] * v, grad[:, None] * u
    return np.einsum("bk,bkd->bd", grad, v), grad[:, :, None] * u[:, None, :]


def release_caches(module):
    """Drop the forward caches of `module` and all its sub-modules (inference keeps none)."""
    module.cache = None
    for _, child in module.children():
        release_caches(child)


class ModelFileError(ValueError):
    """A model file that cannot be loaded: the message names the file and what is wrong with it."""


_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand one compressed byte into more bytes than this
_TRIAL_BUDGET = 1 << 22  # elements the small trial models of `load_model` may hold at the least
_HEADER_ENTRIES = ("__model__", "__config__", "__format__")


def load_model(file):
    """Rebuild the model saved in `file` (any recommender class); nothing in a file can run code.

    Everything is checked before the model is built, so a hostile or damaged file costs no more
    memory than its own size: the archive must be a zip of .npy entries (read with
    allow_pickle=False) whose declared array sizes fit in the entry; it must name a known class
    whose constructor takes exactly the stored config's keywords; the parameters must be finite
    floats (buffers, `buffer.<name>`, finite numbers that the model's `load_buffers` checks); and the
    config must describe exactly as many parameter values as the file stores (counted on three tiny
    trial models with 1 or 2 users and items, so a config claiming 1e12 users is refused without
    allocating anything of that size). Any failure raises
    `ModelFileError` (a ValueError) with one line naming the file; a missing file raises
    FileNotFoundError.
    """
    label = os.fspath(file) if isinstance(file, (str, os.PathLike)) else getattr(file, "name", "model file")
    try:
        archive = zipfile.ZipFile(file)
    except FileNotFoundError:
        raise FileNotFoundError(f"{label}: no such model file") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ModelFileError(f"{label}: not a recgrad model file (not a readable .npz archive: "
                             f"{_short(error)})") from None
    with archive:
        entries = _read_entries(archive, label)
    name = _text_entry(entries, "__model__", label)
    if name not in _REGISTRY:
        raise ModelFileError(f"{label}: holds an unknown model class {_short(name)}; known: {sorted(_REGISTRY)}")
    cls = _REGISTRY[name]
    version = entries.get("__format__", np.array(FORMAT_VERSION))
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
        raise ModelFileError(f"{label}: model file format {_short(version, 40)}, this recgrad reads {FORMAT_VERSION}")
    config = _config_entry(entries, cls, label)
    state = {key[len("param."):]: value for key, value in entries.items() if key.startswith("param.")}
    buffers = {key[len("buffer."):]: value for key, value in entries.items() if key.startswith("buffer.")}
    extra = sorted(key for key in entries if key not in _HEADER_ENTRIES and not key.startswith(("param.", "buffer.")))
    if extra:
        raise ModelFileError(f"{label}: unexpected entries {[_short(key) for key in extra[:5]]}")
    for key, value in state.items():
        if value.dtype.kind != "f":
            raise ModelFileError(f"{label}: parameter {_short(key)} has dtype {value.dtype}, expected float")
        bad = value.size - int(np.count_nonzero(np.isfinite(value)))
        if bad:
            raise ModelFileError(f"{label}: parameter {_short(key)} holds {bad} NaN or infinite value(s)")
    _check_size(cls, config, sum(value.size for value in state.values()), label)
    try:
        model = cls(**config, rng=0)  # the seeded initial draw is overwritten just below
        model.load_state_dict(state)
        for key, value in buffers.items():
            if value.dtype.kind not in "iuf" or (value.dtype.kind == "f" and not np.all(np.isfinite(value))):
                raise ValueError(f"buffer {_short(key)} has dtype {value.dtype} or values that are not finite numbers")
        model.load_buffers(buffers)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"{label}: {name} config and parameters do not fit: {_short(error)}") from None
    return model


def _short(value, limit=200):
    """str(value) on one line, cut to `limit` characters (messages never quote a whole hostile entry)."""
    text = " ".join(str(value.args[0] if isinstance(value, KeyError) and value.args else value).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _read_entries(archive, label):
    """The .npy entries of an open zip archive as arrays, each checked against its stored size first."""
    entries = {}
    for info in archive.infolist():
        key = info.filename[: -len(".npy")]
        if not info.filename.endswith(".npy"):
            raise ModelFileError(f"{label}: entry {_short(info.filename)} is not a .npy array")
        if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 4096:
            raise ModelFileError(f"{label}: entry {_short(key)} claims {info.file_size} bytes from "
                                 f"{info.compress_size} compressed ones")
        try:
            with archive.open(info) as stream:
                version = np.lib.format.read_magic(stream)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f".npy format version {version}, expected 1.0 or 2.0")
                header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = header(stream)
            if dtype.hasobject:
                raise ModelFileError(f"{label}: entry {_short(key)} holds Python objects, which a model file "
                                     "never does (they could run code)")
            if math.prod(shape) * dtype.itemsize > info.file_size:
                raise ModelFileError(f"{label}: entry {_short(key)} declares shape {shape} of {dtype}, larger "
                                     f"than its {info.file_size} bytes")
            with archive.open(info) as stream:
                entries[key] = np.lib.format.read_array(stream, allow_pickle=False)
        except ModelFileError:
            raise
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, TypeError) as error:
            raise ModelFileError(f"{label}: entry {_short(key)} is damaged ({_short(error)})") from None
    return entries


def _text_entry(entries, key, label):
    value = entries.get(key)
    if value is None or value.shape != () or value.dtype.kind != "U":
        raise ModelFileError(f"{label}: not a recgrad model file (no {key} text entry)")
    return str(value[()])


def _config_entry(entries, cls, label):
    """The stored constructor keywords, which must be exactly ones `cls` takes (rng aside)."""
    text = _text_entry(entries, "__config__", label)
    try:
        config = json.loads(text)
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise ModelFileError(f"{label}: the config entry is not a JSON object: {_short(text, 60)}")
    parameters = inspect.signature(cls.__init__).parameters
    accepted = set(parameters) - {"self", "rng"}
    required = {key for key in accepted if parameters[key].default is inspect.Parameter.empty}
    unknown = sorted(set(config) - accepted)
    missing = sorted(required - set(config))
    if unknown or missing:
        raise ModelFileError(f"{label}: the {cls.__name__} config has unknown keyword(s) "
                             f"{[_short(key, 40) for key in unknown[:5]]} and lacks {missing}; "
                             f"{cls.__name__} takes {sorted(accepted)}")
    return config


def _check_size(cls, config, stored, label):
    """ModelFileError unless `cls(**config)` holds exactly `stored` parameter values.

    The count is extrapolated from trial models with 1-2 users and items (a model's parameters grow
    linearly in each); the trials themselves are built only when the config's other sizes stay
    within a budget proportional to the file's parameters.
    """
    for key in ("n_users", "n_items"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelFileError(f"{label}: config {key} = {_short(value, 40)}, expected a positive int")
    sizes = sorted((value for key, value in config.items() if key not in ("n_users", "n_items")
                    for value in (value if isinstance(value, list) else [value])
                    if isinstance(value, int) and not isinstance(value, bool)), reverse=True)
    largest = sizes[0] if sizes else 1
    second = sizes[1] if len(sizes) > 1 else 1
    if len(sizes) * largest * second > max(4 * stored, _TRIAL_BUDGET):
        raise ModelFileError(f"{label}: config sizes {sizes[:5]} are far too large for the {stored} parameter "
                             "values the file holds")

    def count(n_users, n_items):
        try:
            trial = cls(**{**config, "n_users": n_users, "n_items": n_items}, rng=0)
        except (TypeError, ValueError) as error:
            raise ModelFileError(f"{label}: invalid {cls.__name__} config: {_short(error)}") from None
        return sum(parameter.data.size for _, parameter in trial.named_parameters())

    base = count(1, 1)
    per_user, per_item = count(2, 1) - base, count(1, 2) - base
    needed = base + (config["n_users"] - 1) * per_user + (config["n_items"] - 1) * per_item
    if needed != stored:
        raise ModelFileError(f"{label}: the config ({config['n_users']} users x {config['n_items']} items) needs "
                             f"{needed} parameter values but the file holds {stored}")
