"""Every run setting, declared once: name, type, default, allowed values, help, where it applies.

The CLI's flags (`recgrad train --lr ...`), the TOML recipes, the resolved config.toml of a run
directory, the Trainer's keyword arguments and their validation, and the settings a resumed run
must keep are all derived from SETTINGS below. Adding a setting means adding one `Setting` here
(plus the code that uses it).

A default of None means "derived from the other settings" (`DERIVED_DEFAULTS`): for example the
number of negatives depends on the loss. `resolve(values)` returns a complete, checked dict in
which every such value is filled in; a bad value raises `SettingError` with one line naming the
setting, the value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Setting", "SettingError", "SETTINGS", "BY_NAME", "GROUPS", "resolve", "check_value", "flag_name",
           "trainer_settings", "resume_settings", "resume_conflicts", "defaults", "DISTRIBUTED"]


class SettingError(ValueError):
    """A setting with a value it cannot take (one line: the setting, the value, what is allowed)."""


@dataclass(frozen=True)
class Setting:
    """One run setting.

    kind: "int", "float", "bool", "str", "int_list", "str_list" or "float_or_auto" (a number, or the
        word auto) (how a flag's text converts; a list flag takes comma-separated values).
    default: the value when nobody sets it; None means "derived" (see DERIVED_DEFAULTS) or "unset".
    choices: the allowed values (str settings), or None.
    minimum / maximum: bounds (numbers and each element of an int_list); *_open makes them strict.
    applies: {other setting: allowed values}: the setting may only be given a value when each of
        those settings has one of those values (e.g. temperature only with loss "infonce").
    resume: a resumed run must have the checkpoint's value (it changes what an epoch computes).
    group: where the CLI lists it: "data", "model", "training", "evaluation" or "run".
    search: how `recgrad tune` searches it, or None (not searched): ("log", low, high) for a number
        on a log scale, ("int_log", low, high) for an int on a log scale, ("linear", low, high) for a
        number on a linear scale, ("choice", values). A setting with `applies` is searched only in
        the trials where it applies.
    """

    name: str
    kind: str
    default: Any
    help: str
    group: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    minimum_open: bool = False
    maximum_open: bool = False
    applies: dict = field(default_factory=dict)
    resume: bool = False
    search: tuple | None = None

    def allowed(self) -> str:
        """What values are allowed, in words (for errors and --help)."""
        if self.choices is not None:
            return "one of " + ", ".join(str(choice) for choice in self.choices)
        noun = {"int": "an int", "int_list": "a list of ints", "float": "a number", "bool": "true or false",
                "str": "a string", "str_list": "a list of strings", "float_or_auto": "auto or a number"}[self.kind]
        bounds = []
        if self.minimum is not None:
            bounds.append(f"{'>' if self.minimum_open else '>='} {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"{'<' if self.maximum_open else '<='} {self.maximum:g}")
        return noun + (" " + " and ".join(bounds) if bounds else "")


GROUPS = ("data", "model", "training", "evaluation", "run")
LOSSES = ("bpr", "bce", "infonce", "ccl")
OPTIMIZERS = ("adam", "adamw", "sgd", "sparse_adam", "hogwild")
MODELS = ("mf", "two-tower", "gmf", "mlp", "neumf", "lightgcn")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "swish", "silu")

SETTINGS = (
    # ------------------------------------------------------------------------------------ data
    Setting("data", "str", "synthetic", "a data folder or file, or 'synthetic' (the built-in synthetic set)", "data"),
    Setting("format", "str", "auto", "the data's format (auto: detected from the file names)", "data",
            choices=("auto", "lightgcn", "ncf", "movielens", "csv", "synthetic", "prepared")),
    Setting("user_col", "str", None, "csv: the user column's name", "data"),
    Setting("item_col", "str", None, "csv: the item column's name", "data"),
    Setting("rating_col", "str", None, "csv: the rating column's name", "data"),
    Setting("timestamp_col", "str", None, "csv: the timestamp column's name", "data"),
    Setting("sep", "str", None, "csv: the field separator (default: sniffed)", "data"),
    Setting("min_rating", "float", None, "keep interactions rated at least this (implicit feedback)", "data"),
    Setting("on_error", "str", "raise", "raise on malformed lines, or skip them (counted)", "data",
            choices=("raise", "skip")),
    Setting("split", "str", "random", "data without a test file: random per user, or leave_one_out by timestamp",
            "data", choices=("random", "leave_one_out")),
    Setting("test_ratio", "float", 0.2, "random split: the held-out fraction per user", "data",
            minimum=0.0, maximum=1.0, minimum_open=True, maximum_open=True),
    Setting("validation", "float", None,
            "data without a validation file: hold out this fraction of each user's training interactions (seeded; "
            "round(fraction * n) per user, at least one left in train) as the validation set that selects the model "
            "(0: none; default 0.1, held out by a random subset of the users on large data: about 25,000 interactions)",
            "data",
            minimum=0.0, maximum=1.0, maximum_open=True, applies={"selection": ("validation",)}),
    Setting("selection", "str", "validation",
            "what chooses the best epoch and early stopping: validation (the test set is evaluated once, at the "
            "end), or test (the papers' protocol: choices made on the test set, reported as such)", "evaluation",
            choices=("validation", "test")),
    # ----------------------------------------------------------------------------------- model
    Setting("model", "str", "mf", "the recommender", "model", choices=MODELS),
    Setting("dim", "int", 64, "embedding size (neumf: the GMF part's size; mlp has none: see mlp_layers)", "model",
            minimum=1, applies={"model": tuple(model for model in MODELS if model != "mlp")},
            search=("choice", (32, 64, 128))),
    Setting("hidden", "int_list", [64], "two-tower: hidden widths, e.g. 128,64", "model", minimum=1,
            applies={"model": ("two-tower",)}),
    Setting("activation", "str", "relu", "two-tower: the towers' activation", "model", choices=ACTIVATIONS,
            applies={"model": ("two-tower",)}),
    Setting("normalize", "bool", None,
            "mf, two-tower: score by the cosine (default: true for ccl and for a cosine InfoNCE)",
            "model", applies={"model": ("mf", "two-tower")}),
    Setting("mlp_layers", "int_list", [64, 32, 16, 8],
            "neumf, mlp: the MLP's widths (the first, even, is the user and item embeddings side by side; the last "
            "the MLP's predictive factors)", "model", minimum=1, applies={"model": ("neumf", "mlp")}),
    Setting("pretrained", "str_list", None,
            "neumf: start from two trained runs, NCF's pre-training: the GMF run's directory and the MLP run's "
            "(their best.npz; dim and mlp_layers must match theirs), fused with alpha 0.5", "model",
            applies={"model": ("neumf",)}),
    Setting("layers", "int", 3, "lightgcn: propagation layers K (the score uses the mean of layers 0..K)", "model",
            minimum=0, applies={"model": ("lightgcn",)}),
    Setting("init_std", "float", None, "std of the N(0, std) embedding init (default: the model's)", "model",
            minimum=0.0, minimum_open=True),
    # -------------------------------------------------------------------------------- training
    Setting("loss", "str", "bpr",
            "bpr, bce (NCF's log loss), infonce (sampled softmax) or ccl (SimpleX's cosine contrastive loss)",
            "training", choices=LOSSES, resume=True, search=("choice", ("bpr", "infonce", "ccl"))),
    Setting("optimizer", "str", None,
            "adam, adamw, sgd (dense, as torch.optim), sparse_adam (lazy rows), hogwild (compiled per-interaction "
            "SGD on MF, implicit's algorithm); default: hogwild for MF with BPR, adam otherwise", "training",
            choices=OPTIMIZERS, resume=True,
            search=("choice", ("sparse_adam", "adam", "hogwild"))),
    Setting("lr", "float", None, "learning rate (the initial one under a schedule; default 0.05 for hogwild, "
            "0.01 otherwise)", "training",
            minimum=0.0, minimum_open=True, resume=True, search=("log", 1e-4, 0.3)),
    Setting("lr_schedule", "str", None, "constant, or cosine (anneal to lr_min over the epochs; default cosine "
            "for hogwild, constant otherwise)", "training",
            choices=("constant", "cosine"), resume=True, search=("choice", ("constant", "cosine"))),
    Setting("lr_min", "float", None, "the cosine schedule's final lr (default 0)", "training", minimum=0.0,
            applies={"lr_schedule": ("cosine",)}, resume=True),
    Setting("batch_size", "int", None, "training interactions per step (default 2048; hogwild steps on each one)",
            "training", minimum=1, applies={"optimizer": ("adam", "adamw", "sgd", "sparse_adam")}, resume=True),
    Setting("epochs", "int", None, "epochs to train (a resumed run counts those already done; default 60 for "
            "hogwild, 20 otherwise)", "training",
            minimum=0),
    Setting("negatives", "int", None,
            "negatives per positive (per_user) or per batch (shared); default bpr 1, bce 4, infonce 64 per user "
            "or 1024 shared, ccl 256 per user or 1024 shared", "training", minimum=1, resume=True,
            search=("int_log", 1, 64)),
    Setting("negatives_mode", "str", "per_user",
            "per_user, shared (one set per batch) or in_batch (infonce: the batch's other positives)", "training",
            choices=("per_user", "shared", "in_batch"), resume=True),
    Setting("dns_candidates", "int", None,
            "dynamic negative sampling: each negative is the best-scoring of this many draws (1: plain sampling; "
            "default 32 for hogwild with BPR, 1 otherwise)",
            "training", minimum=1, applies={"negatives_mode": ("per_user",)}, resume=True, search=("int_log", 1, 64)),
    Setting("sampler", "str", "uniform", "negatives drawn uniformly, or by popularity^popularity_alpha", "training",
            choices=("uniform", "popularity"), resume=True),
    Setting("popularity_alpha", "float", None, "the popularity sampler's exponent (default 0.75)", "training",
            minimum=0.0, applies={"sampler": ("popularity",)}, resume=True),
    Setting("temperature", "float", None, "infonce: the softmax temperature (default 0.1)", "training",
            minimum=0.0, minimum_open=True, applies={"loss": ("infonce",)}, resume=True, search=("log", 0.03, 1.0)),
    Setting("similarity", "str", None, "infonce: dot (default) or cosine", "training", choices=("dot", "cosine"),
            applies={"loss": ("infonce",)}, resume=True),
    Setting("logq_correction", "bool", None, "infonce: subtract log q(item) from every logit (default false)",
            "training", applies={"loss": ("infonce",)}, resume=True),
    Setting("margin", "float", None, "ccl: a negative's cosine costs nothing below this margin (default 0.9)",
            "training", minimum=-1.0, maximum=1.0, maximum_open=True, applies={"loss": ("ccl",)}, resume=True,
            search=("linear", 0.0, 0.95)),
    Setting("negative_weight", "float", None,
            "ccl: the weight w of the negatives' term, w times the mean over the K negatives (default 150)",
            "training", minimum=0.0, applies={"loss": ("ccl",)}, resume=True, search=("log", 1.0, 1000.0)),
    Setting("l2", "float", None, "L2 on the batch's embedding rows (0: none; default 0.03 for hogwild, implicit's "
            "per-sample regularization, 1e-4 otherwise, LightGCN's batch L2)", "training", minimum=0.0,
            resume=True, search=("log", 1e-6, 0.1)),
    Setting("weight_decay", "float", None,
            "the optimizer's weight decay (default: 1e-2 for adamw, 0 otherwise; hogwild has none)", "training",
            minimum=0.0, resume=True),
    Setting("epoch_sampling", "str", "interactions",
            "interactions (each training interaction once per epoch) or users (a uniform user, then one of their "
            "positives: the NGCF/LightGCN code's sampler)", "training", choices=("interactions", "users"),
            resume=True),
    Setting("engine", "str", None,
            "auto (compiled kernels wherever they compute the same algorithm), compiled (as auto, with a notice "
            "where they do not apply) or numpy (the readable reference everywhere); default: the process's, "
            "auto unless RECGRAD_ENGINE says otherwise", "training", choices=("auto", "compiled", "numpy")),
    Setting("seed", "int", 0, "seed of the init, the split, the shuffle and the sampler", "training", minimum=0,
            resume=True),
    Setting("threads", "int", None, "threads for the compiled kernels and BLAS (default: all cores; with workers: "
            "per worker, default 1)", "run", minimum=1),
    Setting("workers", "int", None,
            "train by distributed SGD over blocks (DSGD) on this many Ray workers, and evaluate with the items "
            "sharded across them (MF, hogwild, uniform negatives from the worker's item block; the distributed "
            "extra; default: one process)", "run", minimum=1),
    Setting("address", "str", None, "workers: the Ray cluster to join, e.g. auto (default: start a local one)",
            "run"),
    # ------------------------------------------------------------------------------ evaluation
    Setting("eval_every", "int", None, "evaluate every this many epochs (and after the last one; default: "
            "epochs / 10 rounded up, ten evaluations a run)", "evaluation",
            minimum=1),
    Setting("patience", "int", None, "stop after this many evaluations without improvement (default: never)",
            "evaluation", minimum=1),
    Setting("topk", "int_list", None, "cut-offs evaluated (default 20; 10 for the sampled NCF protocol)",
            "evaluation", minimum=1),
    Setting("metric", "str", None, "the model-selection metric, e.g. recall@20 or ndcg@10 (default: recall@20; "
            "ndcg@10 for the sampled protocol)", "evaluation"),
    Setting("popularity_prior", "float_or_auto", 0.0,
            "rank by the model's score + this beta times log(1 + the item's training interactions), a fixed term "
            "that training never sees (recgrad.train.popularity_prior: for models that score by the cosine); auto: "
            "chosen on the validation set for the selected epoch (0 is among the choices)", "evaluation",
            minimum=0.0, applies={"model": ("mf", "two-tower", "lightgcn")}),
    Setting("refit", "bool", None,
            "after the validation set chose the epoch, train a fresh model on train + validation for that many "
            "epochs and keep it (recgrad.train.refit; default: true on data of at most 250,000 training "
            "interactions, where the validation set holds a tenth of them, false on larger data, where it holds "
            "about 25,000 and a second run costs more than they bring)", "run",
            applies={"selection": ("validation",)}),
    Setting("out", "str", None, "run directory (default runs/<date-time>)", "run"),
)

BY_NAME = {setting.name: setting for setting in SETTINGS}


def flag_name(name: str) -> str:
    """The CLI flag of a setting: --lr-schedule for lr_schedule."""
    return "--" + name.replace("_", "-")


def defaults() -> dict:
    """{name: default} for every setting (None where derived)."""
    return {setting.name: setting.default for setting in SETTINGS}


# ------------------------------------------------------------------------------ conversions
def _bool(value, setting):
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingError(_bad(setting, value))


def _number(value, setting, integer):
    if isinstance(value, bool):
        raise SettingError(_bad(setting, value))
    try:
        if isinstance(value, str):
            number = int(value) if integer else float(value)
        elif integer:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            number = int(value)
        else:
            number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise SettingError(_bad(setting, value)) from None
    if not integer and not math.isfinite(number):
        raise SettingError(_bad(setting, value))
    return number


def _in_bounds(setting, number):
    low, high = setting.minimum, setting.maximum
    if low is not None and (number < low or (setting.minimum_open and number == low)):
        return False
    return not (high is not None and (number > high or (setting.maximum_open and number == high)))


def _bad(setting, value):
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{setting.name}: expected {setting.allowed()}, got {text}"


def check_value(name: str, value: Any) -> Any:
    """`value` converted to the setting's type and checked (flag text or a Python value); None stays None."""
    setting = BY_NAME.get(name)
    if setting is None:
        raise SettingError(f"unknown setting {name!r} (known: {', '.join(sorted(BY_NAME))})")
    if value is None:
        return None
    if setting.kind == "bool":
        return _bool(value, setting)
    if setting.kind == "float_or_auto" and value == "auto":
        return value
    if setting.kind in ("int", "float", "float_or_auto"):
        number = _number(value, setting, setting.kind == "int")
        if not _in_bounds(setting, number):
            raise SettingError(_bad(setting, value))
        return number
    if setting.kind == "int_list":
        if isinstance(value, str):
            parts = value.replace(",", " ").split()
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            parts = [value]
        else:
            raise SettingError(_bad(setting, value))
        numbers = [_number(part, setting, True) for part in parts]
        if not numbers or not all(_in_bounds(setting, number) for number in numbers):
            raise SettingError(_bad(setting, value))
        return numbers
    if setting.kind == "str_list":
        parts = value.split(",") if isinstance(value, str) else value
        if not isinstance(parts, (list, tuple)) or not parts \
                or not all(isinstance(part, str) and part.strip() for part in parts):
            raise SettingError(_bad(setting, value))
        return [part.strip() for part in parts]
    if not isinstance(value, str):
        raise SettingError(_bad(setting, value))
    if setting.choices is not None and value not in setting.choices:
        raise SettingError(_bad(setting, value))
    return value


# --------------------------------------------------------------------------------- derived
DEFAULT_NEGATIVES = {"bpr": 1, "bce": 4, ("infonce", "per_user"): 64, ("infonce", "shared"): 1024,
                     ("ccl", "per_user"): 256, ("ccl", "shared"): 1024}


def _default_negatives(values):
    if values["negatives_mode"] == "in_batch":
        return None
    return DEFAULT_NEGATIVES.get(values["loss"]) or DEFAULT_NEGATIVES[(values["loss"], values["negatives_mode"])]


def _hogwild(values):
    return values.get("optimizer") == "hogwild"


# Settings whose default depends on others: {name: (rule in words, function of the resolved values)}.
# Rules run in this order; a rule applies only where the setting applies (an InfoNCE temperature is not
# filled in for BPR). The MF-BPR defaults (hogwild SGD with dynamic negatives, lr 0.05 annealed by a
# cosine over 60 epochs, L2 0.03) were chosen by measurement on five data sets, validation-selected
# (docs/results.md, "The default run"); the other models keep the minibatch Adam defaults.
DERIVED_DEFAULTS: dict[str, tuple[str, Callable[[dict], Any]]] = {
    "optimizer": ("hogwild for MF with BPR, adam otherwise",
                  lambda values: "hogwild" if values.get("model") == "mf" and values["loss"] == "bpr" else "adam"),
    "lr": ("0.05 for hogwild, 0.01 otherwise", lambda values: 0.05 if _hogwild(values) else 1e-2),
    "lr_schedule": ("cosine for hogwild, constant otherwise",
                    lambda values: "cosine" if _hogwild(values) else "constant"),
    "epochs": ("60 for hogwild, 20 otherwise", lambda values: 60 if _hogwild(values) else 20),
    "eval_every": ("epochs / 10, rounded up", lambda values: max(1, math.ceil(values["epochs"] / 10))),
    "l2": ("0.03 for hogwild, 1e-4 otherwise", lambda values: 0.03 if _hogwild(values) else 1e-4),
    "dns_candidates": ("32 for hogwild with BPR, 1 otherwise",
                       lambda values: 32 if _hogwild(values) and values.get("loss") == "bpr" else 1),
    "negatives": ("bpr 1, bce 4, infonce 64 per user or 1024 shared, ccl 256 per user or 1024 shared; none in_batch",
                  _default_negatives),
    "batch_size": ("2048", lambda values: 2048),
    "lr_min": ("0", lambda values: 0.0),
    "popularity_alpha": ("0.75", lambda values: 0.75),
    "temperature": ("0.1", lambda values: 0.1),
    "margin": ("0.9", lambda values: 0.9),
    "negative_weight": ("150", lambda values: 150.0),
    "similarity": ("dot", lambda values: "dot"),
    "logq_correction": ("false", lambda values: False),
    "weight_decay": ("1e-2 for adamw, 0 otherwise",
                     lambda values: 1e-2 if values["optimizer"] == "adamw" else 0.0),
    "normalize": ("true for ccl and for infonce with cosine similarity",
                  lambda values: values["loss"] == "ccl"
                  or (values["loss"] == "infonce" and values.get("similarity") == "cosine")),
}


def _applies(setting, values):
    return all(values.get(other) in allowed for other, allowed in setting.applies.items())


def _condition(setting):
    return " and ".join(f"{other} {' or '.join(map(repr, allowed))}" for other, allowed in setting.applies.items())


def resolve(values: dict, names=None) -> dict:
    """Defaults, overridden by `values`, checked and with every derived default filled in.

    names: the settings to resolve (default: all). A setting given a value where it does not apply
    (temperature with loss "bpr") raises SettingError; so do combinations that cannot run.
    """
    names = tuple(BY_NAME) if names is None else tuple(names)
    resolved = {name: BY_NAME[name].default for name in names}
    for name, value in values.items():
        if name not in resolved:
            if name in BY_NAME:
                raise SettingError(f"{name}: not a setting of this component")
            check_value(name, value)  # raises: unknown setting
        resolved[name] = check_value(name, value)
    _fill_derived(resolved, unconditional=True)  # the settings others' `applies` may test (optimizer, lr_schedule)
    for name in names:
        setting = BY_NAME[name]
        if not setting.applies or not all(other in resolved for other in setting.applies):
            continue
        if _applies(setting, resolved):
            continue
        if values.get(name) is not None and values[name] != setting.default:
            current = ", ".join(f"{other}={resolved[other]!r}" for other in setting.applies)
            raise SettingError(f"{name}: applies only with {_condition(setting)} (got {current})")
        resolved[name] = None
    _fill_derived(resolved, unconditional=False)
    _check_combinations(resolved)
    return resolved


def _fill_derived(resolved, unconditional):
    """Fill in the derived defaults still None: those of settings that apply everywhere
    (unconditional=True), or those of conditional settings where they apply (False)."""
    for name, (_, rule) in DERIVED_DEFAULTS.items():
        setting = BY_NAME[name]
        if name not in resolved or resolved[name] is not None or bool(setting.applies) == unconditional:
            continue
        if not setting.applies or (_applies(setting, resolved) and all(other in resolved for other in setting.applies)):
            resolved[name] = rule(resolved)


# The `pretrained` setting's runs: the GMF run, then the MLP run (recgrad.train.build.pretrained_neumf).
PRETRAINED_RUNS = 2

# What distributed training (the `workers` setting, recgrad.distributed) runs: {setting: allowed values}.
DISTRIBUTED = {"model": ("mf",), "optimizer": ("hogwild",), "sampler": ("uniform",),
               "epoch_sampling": ("interactions",), "engine": ("auto", "compiled")}


def _check_combinations(values):
    """Rules across settings that no single declaration states."""
    if values.get("workers") is not None:
        for name, allowed in DISTRIBUTED.items():
            if values.get(name) is not None and values[name] not in allowed:
                raise SettingError(f"{name}: distributed training (workers) runs {' or '.join(map(repr, allowed))}, "
                                   f"got {values[name]!r}")
    elif values.get("address") is not None:
        raise SettingError("address: applies only with workers (the number of Ray workers)")
    mode, loss = values.get("negatives_mode"), values.get("loss")
    if mode == "in_batch" and loss is not None and loss != "infonce":
        raise SettingError(f"negatives_mode: 'in_batch' needs loss 'infonce' (got loss={loss!r})")
    if mode == "in_batch" and values.get("negatives") is not None:
        raise SettingError("negatives: in_batch mode uses the batch's other positives; leave negatives unset")
    if (values.get("dns_candidates") or 1) > 1 and values.get("logq_correction"):
        raise SettingError("logq_correction: the negatives dynamic sampling chooses do not follow the sampler's q; "
                           "use dns_candidates 1 with logq_correction")
    if values.get("lr_schedule") == "cosine" and values.get("lr_min") is not None and "lr" in values \
            and values["lr_min"] >= values["lr"]:
        raise SettingError(f"lr_min: expected a value below lr={values['lr']:g}, got {values['lr_min']:g}")
    if values.get("optimizer") == "hogwild":
        if values.get("weight_decay"):
            raise SettingError("weight_decay: hogwild SGD has none; use l2 (implicit's regularization)")
        if mode is not None and mode != "per_user":
            raise SettingError(f"negatives_mode: hogwild draws negatives per user, got {mode!r}")
    if values.get("model") == "lightgcn" and values.get("optimizer") in ("sparse_adam", "hogwild"):
        raise SettingError(f"optimizer: {values['optimizer']!r} updates looked-up rows only, but lightgcn's "
                           "propagation gives every row a gradient; use adam, adamw or sgd")
    pretrained = values.get("pretrained")
    if pretrained is not None and len(pretrained) != PRETRAINED_RUNS:
        raise SettingError(f"pretrained: expected {PRETRAINED_RUNS} run directories, the GMF run's then the MLP "
                           f"run's, got {pretrained!r}")
    metric = values.get("metric")
    if metric is not None:
        name, _, k = metric.partition("@")
        if not name or not k.isdigit() or int(k) < 1:
            raise SettingError(f"metric: expected '<name>@<K>' with K >= 1, e.g. recall@20, got {metric!r}")


def trainer_settings() -> tuple:
    """The settings the Trainer takes as keyword arguments (those of the training and evaluation groups)."""
    return tuple(setting.name for setting in SETTINGS
                 if setting.group in ("training", "evaluation") and setting.name != "threads")


def resume_settings() -> tuple:
    """The settings a resumed run must share with its checkpoint."""
    return tuple(setting.name for setting in SETTINGS if setting.resume)


def resume_conflicts(saved: dict, current: dict) -> list:
    """["lr=0.01 (now 0.02)", ...]: the resume settings whose values differ between a checkpoint and now."""
    return [f"{name}={saved.get(name)!r} (now {current[name]!r})" for name in resume_settings()
            if name in current and saved.get(name) != current[name]]
