"""A trained run ready to answer in raw ids: `recgrad recommend --history`, `recgrad similar` and
`recgrad serve` all go through `ServedRun`.

It holds the model `recgrad recommend --run DIR` loads, the run's data (its id maps and the seen
items), the fold-in objective of the run's config, and the indexes, built once: over
`ranking_item_factors()` (the factors, and the item prior's column when the model has one) for
recommend and fold-in, over the unit item (and user) vectors for similar.
Raw ids are the ids of the data files; a raw id given as text is an int when it looks like one
(`Dataset.user_index`'s rule). Every bad input raises `ServingError` with one sentence naming it.
"""

import importlib.util
import sys

import numpy as np

from recgrad.losses import l2_normalize
from recgrad.models.base import FactorModel
from recgrad.serving.foldin import FoldIn
from recgrad.serving.index import ExactIndex, HNSWIndex

INDEXES = ("exact", "faiss")


class ServingError(ValueError):
    """A request the run cannot answer (unknown id, bad n, a model without fold-in); one sentence."""


class UnknownId(ServingError):
    """A raw user or item id that is not in the run's data."""


class ServedRun:
    """A loaded run answering recommend, fold-in and similar requests in raw ids.

    Args:
        config: the run's resolved config (recgrad.cli.resolve_config of its config.toml).
        model: its model; dataset: its data (id maps, train and validation items).
        index: "exact" (the compiled scan, the answers of `recgrad recommend`) or "faiss" (HNSW).
    """

    def __init__(self, config, model, dataset, index="exact"):
        if index not in INDEXES:
            raise ServingError(f"--index: {index!r} is not one of {', '.join(INDEXES)}")
        if index == "faiss" and importlib.util.find_spec("faiss") is None:
            raise ServingError("--index faiss: needs faiss-cpu, which is not installed: pip install 'recgrad[ann]'")
        self.model, self.dataset, self.index_kind = model, dataset, index
        self.seen = dataset.train if dataset.validation is None else dataset.train + dataset.validation
        self.factor_model = isinstance(model, FactorModel)
        self.fold = FoldIn.from_run_config(config, model) if self.factor_model else None
        self._indexes = {}

    # ------------------------------------------------------------------------------ ids
    @property
    def model_name(self):
        return type(self.model).__name__

    def user(self, raw):
        try:
            return self.dataset.user_index(raw)
        except KeyError as error:
            raise UnknownId(error.args[0]) from None

    def item(self, raw):
        try:
            return self.dataset.item_index(raw)
        except KeyError as error:
            raise UnknownId(error.args[0]) from None

    def known_items(self, raws):
        """(internal ids of the known raw ids, the unknown raw ids as given)."""
        known, unknown = [], []
        for raw in raws:
            try:
                known.append(self.dataset.item_index(raw))
            except KeyError:
                unknown.append(raw)
        return np.array(known, dtype=np.int64), unknown

    def raw_items(self, ids):
        """JSON-able raw ids of internal item ids (padding -1 dropped)."""
        return [self.dataset.item_ids[i].item() for i in ids if i >= 0]

    def raw_users(self, ids):
        return [self.dataset.user_ids[u].item() for u in ids if u >= 0]

    def check_n(self, n, count=None):
        """n as an int in [1, count] (default: the number of items), or ServingError."""
        count = self.dataset.n_items if count is None else count
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= count:
            raise ServingError(f"n: expected an integer in [1, {count}] (the catalogue), got {n!r}")
        return int(n)

    def _require_factors(self, what):
        if not self.factor_model:
            raise ServingError(f"{what} needs a dot-product model (mf, two-tower, lightgcn); this run's model is "
                               f"{self.model_name}, which scores pairs with a neural layer and has no user table "
                               f"to fold into or vector space to compare in")

    # --------------------------------------------------------------------------- indexes
    def _index(self, name, vectors, queries=lambda: None):
        """The index `name` over vectors(), built on first use; an HNSW one sets its efSearch for
        recall@20 0.95 on queries() (None: a sample of its own rows, the queries of similar)."""
        if name not in self._indexes:
            self._indexes[name] = (HNSWIndex(vectors(), calibration_queries=queries()) if self.index_kind == "faiss"
                                   else ExactIndex(vectors()))
        return self._indexes[name]

    def recommend_index(self):
        return self._index("recommend", self.model.ranking_item_factors, self._calibration_users)

    def _calibration_users(self):
        """The vectors of a seeded sample of 500 users: the queries recommend will ask."""
        users = np.random.default_rng(0).choice(self.dataset.n_users, min(500, self.dataset.n_users), replace=False)
        return self.model.ranking_user_factors(np.sort(users))

    def similar_index(self, side):
        return self._index(f"similar-{side}", lambda: l2_normalize(getattr(self.model, f"{side}_factors")())[0])

    def index_summary(self):
        """One line on each HNSW index's chosen efSearch and the recall@20 it measured ("" when exact)."""
        return "; ".join(f"{name}: efSearch {index.ef_search} (recall@20 {index.calibration_recall:.3f} against "
                         f"the exact top 20 on {'user' if name == 'recommend' else 'row'} queries)"
                         for name, index in self._indexes.items() if isinstance(index, HNSWIndex))

    def warm_up(self):
        """Build the indexes and compile the kernels now rather than in the first requests."""
        self.recommend(np.zeros(1, dtype=np.int64), 1)
        if self.factor_model:
            self.model.recommend_new([0], N=1, fold=self.fold, index=self.recommend_index())
            self.similar_index("item")
            self.similar_index("user")

    # ------------------------------------------------------------------------- requests
    def recommend(self, users, n, exclude_seen=True):
        """(ids (len(users), n), scores) for internal user ids, as `Recommender.recommend` (padding
        -1 / -inf); exact: `recommend` itself on the seen items, the answers of `recgrad recommend`."""
        users = np.asarray(users, dtype=np.int64)
        if self.index_kind == "exact" or not self.factor_model:
            return self.model.recommend(users, self.seen[users] if exclude_seen else None, N=n,
                                        filter_already_liked_items=exclude_seen)
        seen = self.seen[users]
        exclude = [seen.indices[seen.indptr[r]:seen.indptr[r + 1]] if exclude_seen else seen.indices[:0]
                   for r in range(users.size)]
        return self.recommend_index().search(self.model.ranking_user_factors(users), n, exclude)

    def recommend_new(self, raw_items, n):
        """Fold-in: (raw ids, scores, unknown raw ids) for a new user's raw item ids."""
        self._require_factors("recommending for a new user (fold-in)")
        if len(raw_items) == 0:
            raise ServingError("items: empty; a new user needs at least one item id to fold in")
        history, unknown = self.known_items(raw_items)
        if history.size == 0:
            raise ServingError("items: none of the given item ids is in the catalogue, so there is nothing to fold in")
        ids, scores = self.model.recommend_new(history, N=n, fold=self.fold, index=self.recommend_index())
        return self.raw_items(ids), scores[ids >= 0].tolist(), unknown

    def history_lines(self, histories, n):
        """Output lines `key<TAB>item item ...` for `read_histories`' (source, line, key, items);
        unknown item ids are ignored with a warning on stderr naming the line."""
        self._require_factors("--history (fold-in of new users)")
        lines = []
        for where, key, raws in histories:
            try:
                items, _, unknown = self.recommend_new(raws, n)
            except ServingError as error:
                raise ServingError(f"{where}: {error}") from None
            if unknown:
                print(f"recgrad: warning: {where}: unknown item id(s) {', '.join(map(repr, unknown[:5]))}"
                      f"{' ...' if len(unknown) > 5 else ''} ignored", file=sys.stderr)
            lines.append(f"{key}\t{' '.join(map(str, items))}\n")
        return lines

    def similar(self, side, raws, n):
        """(ids (len(raws), n), scores) of the nearest items (side "item") or users, by cosine."""
        self._require_factors(f"similar {side}s")
        query = [getattr(self, side)(raw) for raw in raws]
        method = getattr(self.model, f"similar_{side}s")
        return method(np.array(query, dtype=np.int64), N=n, index=self.similar_index(side))


def read_histories(path):
    """[("FILE line N", key, [raw item id text, ...])] from a file of lines `key<TAB>item item ...`
    (blank lines skipped); ServingError naming the file and line of a malformed one."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ServingError(f"{path}: cannot read it: {error}") from None
    histories = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        key, tab, items = line.partition("\t")
        if not tab or not key.strip() or not items.split():
            raise ServingError(f"{path} line {number}: expected 'key<TAB>item item ...' with at least one item, "
                               f"got {line[:80]!r}")
        histories.append((f"{path} line {number}", key.strip(), items.split()))
    return histories
