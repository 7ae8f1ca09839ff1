"""The one place that turns run settings (names and numbers) into objects.

Each function takes the resolved settings of `recgrad.train.settings` (a dict) and builds one
component: the data set, the model, the negative sampler and the batch's negatives, the objective
and its regulariser, the optimizers and the learning-rate schedulers.
"""

import numpy as np

from recgrad.objectives import BatchL2, BCEObjective, BPRObjective, CCLObjective, InfoNCEObjective
from recgrad.objectives.regularizers import embeddings_of
from recgrad.optim.adam import Adam
from recgrad.optim.adamw import AdamW
from recgrad.optim.lr_scheduler import CosineAnnealingLR
from recgrad.optim.sgd import SGD
from recgrad.optim.sparse_adam import SparseAdam
from recgrad.samplers import (
    DynamicNegatives,
    InBatchNegatives,
    PerUserNegatives,
    PopularitySampler,
    SharedNegatives,
    UniformSampler,
)

__all__ = ["DATA_OPTIONS", "load_data", "validation_plan", "build_model", "pretrained_neumf", "model_setting",
           "build_sampler", "build_negatives", "build_objective", "build_regularizer", "build_optimizers",
           "build_schedulers", "sparse_tables", "seeded_generators"]

DATA_OPTIONS = ("user_col", "item_col", "rating_col", "timestamp_col", "sep", "min_rating")


def load_data(values, split=True, id_maps=None):
    """The run's data set: loaded, re-indexed to the run's id maps when given ((user_ids, item_ids),
    grown by the ids the data adds: `recgrad.data.align_ids`), split into train/test when the files
    hold no test set (unless split=False), and with a validation slice carved from train when
    values["validation"] > 0 and the data has no validation set of its own (selection "validation")."""
    from recgrad.data import align_ids, load, with_test_split, with_validation
    from recgrad.data.loaders import detect_format

    options = {key: values[key] for key in DATA_OPTIONS if values.get(key) is not None}
    if values["data"] == "synthetic" or values["format"] == "synthetic":
        if options:
            raise ValueError(f"{next(iter(options))}: does not apply to the synthetic data set")
        dataset = load("synthetic", format="synthetic", seed=values["seed"])
    else:
        data_format = detect_format(values["data"]) if values["format"] == "auto" else values["format"]
        if data_format != "prepared":  # a prepared directory holds no text lines to skip
            options["on_error"] = values["on_error"]
        dataset = load(values["data"], format=data_format, **options)
    if id_maps is not None:
        dataset = align_ids(dataset, *id_maps)
    if split and dataset.test is None:
        dataset = with_test_split(dataset, method=values["split"], ratio=values["test_ratio"], seed=values["seed"])
    ratio, size = validation_plan(values)
    if split and ratio and dataset.validation is None:
        carved = with_validation(dataset, ratio=ratio, seed=values["seed"], size=size)
        if carved.validation.nnz:  # users with too few interactions have none to spare
            dataset = carved
    return dataset


VALIDATION_RATIO = 0.1
VALIDATION_SIZE = 25_000


def validation_plan(values):
    """(ratio, size) of the validation split (`recgrad.data.with_validation`): the `validation`
    setting for everyone, or by default 10% of each user's training interactions, held out by a
    random subset of the users on large data so that about VALIDATION_SIZE interactions are held out:
    enough to rank epochs and trials, while the training keeps the rest. Measured on Gowalla (810k
    interactions): holding out 10% costs the default run 0.004 of test Recall@20 against 3%
    (docs/results.md). (0, None): no split (selection on the test set)."""
    if values["selection"] != "validation":
        return 0.0, None
    if values["validation"] is not None:
        return values["validation"], None
    return VALIDATION_RATIO, VALIDATION_SIZE


def sparse_tables(optimizer):
    """Whether the model's embedding tables should produce row-sparse gradients for this optimizer:
    the lazy and per-row optimizers use them; the dense ones update whole tables anyway."""
    return optimizer in ("sparse_adam", "sgd", "hogwild")


def build_model(values, n_users, n_items, train=None):
    """The model named by values["model"]; `train` (the training matrix) is LightGCN's graph."""
    from recgrad import models

    if values["model"] == "lightgcn":
        if train is None:
            raise ValueError("model: 'lightgcn' is built on the training interactions; pass train=")
        init = {} if values["init_std"] is None else {"init_std": values["init_std"]}
        return models.LightGCN(n_users, n_items, dim=values["dim"], layers=values["layers"], interactions=train,
                               rng=values["seed"], engine=values["engine"], **init)
    common = {"sparse": sparse_tables(values["optimizer"]), "rng": values["seed"]}
    if values["init_std"] is not None:
        common["init_std"] = values["init_std"]
    name = values["model"]
    if name == "mf":
        return models.MF(n_users, n_items, dim=values["dim"], normalize=values["normalize"], **common)
    if name == "two-tower":
        return models.TwoTower(n_users, n_items, dim=values["dim"], hidden=tuple(values["hidden"]),
                               activation=values["activation"], normalize=values["normalize"], **common)
    if name == "gmf":
        return models.GMF(n_users, n_items, dim=values["dim"], **common)
    if name == "mlp":
        return models.MLP(n_users, n_items, mlp_layers=tuple(values["mlp_layers"]), **common)
    if values["pretrained"] is not None:
        return pretrained_neumf(values, n_users, n_items)
    return models.NeuMF(n_users, n_items, mf_dim=values["dim"], mlp_layers=tuple(values["mlp_layers"]), **common)


PRETRAINED_ALPHA = 0.5  # the GMF branch's share of NeuMF's output layer at the start (the NCF paper's)


def pretrained_neumf(values, n_users, n_items):
    """NeuMF started from the runs of values["pretrained"] (the GMF run's directory, then the MLP
    run's; each its best.npz, else last.npz), `NeuMF.from_pretrained` with alpha PRETRAINED_ALPHA.

    Each file must hold the right model with this run's shapes (as many users and items as the
    data, dim for the GMF, the mlp_layers tower for the MLP); a mismatch raises ValueError with one
    line naming the setting, the file and both shapes."""
    from recgrad import models
    from recgrad.rundir import read_run

    expected = {"GMF": (models.GMF, {"users x items": (n_users, n_items), "dim": values["dim"]}),
                "MLP": (models.MLP, {"users x items": (n_users, n_items), "mlp_layers": tuple(values["mlp_layers"])})}
    loaded = []
    for directory, (name, (cls, shapes)) in zip(values["pretrained"], expected.items()):
        try:
            files = read_run(directory)
        except (FileNotFoundError, ValueError) as error:  # no run, damaged model file: one line naming it
            raise ValueError(f"pretrained: {error}") from None
        model, label = files.model, files.model_file
        if not isinstance(model, cls):
            raise ValueError(f"pretrained: {label} holds a model of class {type(model).__name__}, expected {name} "
                             "(the runs are the GMF one, then the MLP one)")
        found = {"users x items": (model.n_users, model.n_items), "dim": getattr(model, "dim", None),
                 "mlp_layers": getattr(model, "mlp_layers", None)}
        for what, want in shapes.items():
            if found[what] != want:
                raise ValueError(f"pretrained: {label} has {what} {_shape_text(what, found[what])}, this run needs "
                                 f"{_shape_text(what, want)}")
        loaded.append(model)
    return models.NeuMF.from_pretrained(*loaded, alpha=PRETRAINED_ALPHA, sparse=sparse_tables(values["optimizer"]))


def _shape_text(what, value):
    """6040 x 3706 (users x items), [256, 128, 64, 32] (mlp_layers), 32 (dim)."""
    if what == "users x items":
        return f"{value[0]} x {value[1]}"
    return str(list(value)) if isinstance(value, tuple) else str(value)


def model_setting(model):
    """The `model` setting that builds a model of this class ("mf", ...), or None for other classes."""
    from recgrad import models

    classes = {models.MF: "mf", models.TwoTower: "two-tower", models.GMF: "gmf", models.MLP: "mlp",
               models.NeuMF: "neumf",
               models.LightGCN: "lightgcn"}
    return classes.get(type(model))


def build_sampler(values, train, rng):
    """The negative sampler named by values["sampler"], drawing from `rng`."""
    if values["sampler"] == "popularity":
        return PopularitySampler(train, alpha=values["popularity_alpha"], seed=rng)
    return UniformSampler(train, seed=rng)


def build_negatives(values, sampler, train, model):
    """What each batch gets as negatives (`recgrad.samplers`): per user, DNS, shared or in-batch."""
    mode = values["negatives_mode"]
    if mode == "in_batch":
        return InBatchNegatives(train)
    if mode == "shared":
        return SharedNegatives(sampler, values["negatives"])
    if values["dns_candidates"] > 1:
        return DynamicNegatives(sampler, values["negatives"], values["dns_candidates"], model)
    return PerUserNegatives(sampler, values["negatives"])


def build_objective(values, negatives):
    if values["loss"] == "bpr":
        return BPRObjective()
    if values["loss"] == "bce":
        return BCEObjective()
    if values["loss"] == "ccl":
        return CCLObjective(margin=values["margin"], negative_weight=values["negative_weight"])
    log_q = negatives.log_q if values["logq_correction"] else None
    return InfoNCEObjective(temperature=values["temperature"], similarity=values["similarity"], log_q=log_q)


def build_regularizer(values):
    return BatchL2(values["l2"])


def build_optimizers(values, model):
    """(optimizers, parameters whose row-sparse gradients are expanded to dense before the step).

    "sparse_adam": `SparseAdam` on the sparse embedding tables (only the batch's rows move) and
    `Adam` on the rest; "adam", "adamw": the dense algorithms on everything (row-sparse gradients
    expanded, as torch's dense step on an embedding); "sgd": SGD (rows kept sparse unless weight
    decay touches every row); "hogwild": SGD with a step per interaction (batch size 1).
    """
    params = model.parameters()
    name, lr, decay = values["optimizer"], values["lr"], values["weight_decay"]
    engine = values["engine"]
    if name == "sparse_adam":
        table_ids = {id(module.weight) for module in embeddings_of(model) if module.sparse}
        if not table_ids:
            raise ValueError("optimizer: 'sparse_adam' needs embedding tables built with sparse=True")
        tables = [p for p in params if id(p) in table_ids]
        dense = [p for p in params if id(p) not in table_ids]
        optimizers = [SparseAdam(tables, lr=lr, weight_decay=decay, engine=engine)]
        if dense:
            optimizers.append(Adam(dense, lr=lr, weight_decay=decay, engine=engine))
        return optimizers, []
    if name == "adam":
        return [Adam(params, lr=lr, weight_decay=decay, engine=engine)], params
    if name == "adamw":
        return [AdamW(params, lr=lr, weight_decay=decay, engine=engine)], params
    return [SGD(params, lr=lr, weight_decay=decay, engine=engine)], (params if decay else [])


def build_schedulers(values, optimizers):
    if values["lr_schedule"] == "cosine" and values["epochs"] > 0:
        return [CosineAnnealingLR(opt, T_max=values["epochs"], eta_min=values["lr_min"]) for opt in optimizers]
    return []


def seeded_generators(seed):
    """(shuffle Generator, sampler Generator), spawned from one seed."""
    shuffle_seed, sampler_seed = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(shuffle_seed), np.random.default_rng(sampler_seed)
