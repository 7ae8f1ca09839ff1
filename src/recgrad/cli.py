"""The `recgrad` command line: train, evaluate, recommend, info, check, bench, experiment.

This is the only place that turns strings into hyper-parameters. A run is described by one flat
config dict (CONFIG_DEFAULTS); a `--config recipe.toml` file sets keys and command-line flags
override the file. The resolved config is written to the run directory as config.toml, so
`recgrad evaluate --run DIR` and `recgrad recommend --run DIR` rebuild the same data and model.

A wrong option value prints one line, `recgrad: error: ...`, and exits with status 2.
"""

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

# Every key a run config may hold, with its default. `None` means "the component's own default".
CONFIG_DEFAULTS = {
    "data": "synthetic",
    "format": "auto",
    "user_col": None,
    "item_col": None,
    "rating_col": None,
    "timestamp_col": None,
    "sep": None,
    "min_rating": None,
    "on_error": "raise",
    "split": "random",
    "test_ratio": 0.2,
    "validation": 0.0,
    "model": "mf",
    "dim": 64,
    "hidden": [64],
    "activation": "relu",
    "normalize": None,  # resolved: true for a cosine InfoNCE, so the model ranks by what it was trained on
    "mlp_layers": [64, 32, 16, 8],
    "init_std": None,
    "loss": "bpr",
    "optimizer": "adam",
    "lr": 1e-2,
    "lr_schedule": "constant",
    "lr_min": None,
    "batch_size": 2048,
    "epochs": 20,
    "negatives": None,
    "negatives_mode": "per_user",
    "dns_candidates": 1,
    "temperature": None,
    "similarity": None,
    "logq_correction": False,
    "l2": 1e-4,
    "weight_decay": None,
    "sampler": "uniform",
    "epoch_sampling": "interactions",
    "engine": "numpy",
    "eval_every": 1,
    "patience": None,
    "topk": [20],
    "metric": None,
    "seed": 0,
    "threads": None,
    "out": None,
}
CHOICES = {
    "format": ("auto", "lightgcn", "ncf", "movielens", "csv", "synthetic"),
    "on_error": ("raise", "skip"),
    "split": ("random", "leave_one_out"),
    "model": ("mf", "two-tower", "gmf", "neumf"),
    "loss": ("bpr", "bce", "infonce"),
    "optimizer": ("adam", "adamw", "sgd", "sparse_adam"),
    "negatives_mode": ("per_user", "shared", "in_batch"),
    "similarity": ("dot", "cosine"),
    "sampler": ("uniform", "popularity"),
    "lr_schedule": ("constant", "cosine"),
    "epoch_sampling": ("interactions", "users"),
    "engine": ("numpy", "fused"),
    "activation": ("sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "swish", "silu"),
}


class UsageError(Exception):
    """A bad option value: reported as one line, exit status 2."""


# ----------------------------------------------------------------------------------------- config
def _int_list(value):
    """[64, 32] from a TOML list or from the flag text "64,32"."""
    parts = value if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
    return [int(part) for part in parts]


def _bool(text):
    if isinstance(text, bool):
        return text
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


CONVERTERS = {
    "min_rating": float, "test_ratio": float, "validation": float, "dim": int, "hidden": _int_list, "normalize": _bool, "mlp_layers": _int_list,
    "init_std": float, "lr": float, "lr_min": float, "batch_size": int, "epochs": int, "negatives": int,
    "dns_candidates": int, "temperature": float,
    "logq_correction": _bool, "l2": float, "weight_decay": float, "eval_every": int, "patience": int,
    "topk": _int_list, "seed": int, "threads": int,
}


def resolve_config(file_values, flag_values):
    """Defaults, then the recipe file, then the flags; every value converted and checked."""
    config = dict(CONFIG_DEFAULTS)
    for source in (file_values, flag_values):
        for key, value in source.items():
            if key not in CONFIG_DEFAULTS:
                raise UsageError(f"unknown config key {key!r} (known: {', '.join(sorted(CONFIG_DEFAULTS))})")
            if value is None:
                continue
            if key in CONVERTERS:
                try:
                    value = CONVERTERS[key](value)
                except (TypeError, ValueError) as error:
                    raise UsageError(f"--{key.replace('_', '-')}: {error}") from None
            if key in CHOICES and value not in CHOICES[key]:
                raise UsageError(f"--{key.replace('_', '-')}: {value!r} is not one of {', '.join(CHOICES[key])}")
            config[key] = value
    if flag_values.get("lr_schedule") == "constant" and flag_values.get("lr_min") is None:
        config["lr_min"] = None  # the file's floor belonged to the schedule the flag switched off
    if config["normalize"] is None:
        config["normalize"] = config["loss"] == "infonce" and config["similarity"] == "cosine"
    return config


def read_toml(path):
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML: {error}") from None


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string literal is a valid TOML basic string


def write_toml(path, config):
    """Write a flat config as TOML; keys whose value is None (component default) are left out."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in config.items() if value is not None]
    Path(path).write_text("# resolved by recgrad train\n" + "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------ components
def set_threads(threads):
    """Use `threads` threads in the compiled kernels (numba) and in BLAS (threadpoolctl); None keeps every core.

    Returns the threadpoolctl limiter (restore it when done) or None.
    """
    if threads is None:
        return None
    from threadpoolctl import threadpool_limits

    from recgrad import kernels

    try:
        kernels.set_num_threads(threads)
    except ValueError as error:
        raise UsageError(f"--threads: {error}") from None
    return threadpool_limits(limits=threads)


DATA_OPTIONS = ("user_col", "item_col", "rating_col", "timestamp_col", "sep", "min_rating")


def load_dataset(config, split=True):
    """The run's data: loaded, split into train/test when the files hold no test set (unless split=False),
    and a validation slice when config["validation"] > 0."""
    from recgrad.data import load, with_test_split, with_validation

    data, data_format = config["data"], config["format"]
    options = {key: config[key] for key in DATA_OPTIONS if config[key] is not None}
    try:
        if data == "synthetic" or data_format == "synthetic":
            if options:
                raise ValueError(f"--{next(iter(options)).replace('_', '-')}: does not apply to the synthetic data set")
            dataset = load("synthetic", format="synthetic", seed=config["seed"])
        else:
            dataset = load(data, format=data_format, on_error=config["on_error"], **options)
        if split and dataset.test is None:
            dataset = with_test_split(dataset, method=config["split"], ratio=config["test_ratio"], seed=config["seed"])
    except (FileNotFoundError, ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    if config["validation"]:
        dataset = with_validation(dataset, ratio=config["validation"], seed=config["seed"])
    return dataset


def build_model(config, n_users, n_items):
    from recgrad import models

    # The dense optimizers update whole tables; only the lazy modes keep row-sparse gradients.
    sparse = config["optimizer"] in ("sparse_adam", "sgd")
    common = {"sparse": sparse, "rng": config["seed"]}
    if config["init_std"] is not None:
        common["init_std"] = config["init_std"]
    name = config["model"]
    if name == "mf":
        return models.MF(n_users, n_items, dim=config["dim"], normalize=config["normalize"], **common)
    if name == "two-tower":
        return models.TwoTower(n_users, n_items, dim=config["dim"], hidden=tuple(config["hidden"]),
                               activation=config["activation"], normalize=config["normalize"], **common)
    if name == "gmf":
        return models.GMF(n_users, n_items, dim=config["dim"], **common)
    return models.NeuMF(n_users, n_items, mf_dim=config["dim"], mlp_layers=tuple(config["mlp_layers"]), **common)


def build_trainer(config, model, out_dir):
    from recgrad.training import Trainer

    infonce_only = {key: config[key] for key in ("temperature", "similarity") if config[key] is not None}
    schedule = {} if config["lr_schedule"] == "constant" else {"lr_schedule": config["lr_schedule"]}
    if config["lr_min"] is not None:
        schedule["lr_min"] = config["lr_min"]
    if config["loss"] == "infonce" and config["logq_correction"]:
        infonce_only["logq_correction"] = True
    return Trainer(
        model, loss=config["loss"], optimizer=config["optimizer"], lr=config["lr"],
        batch_size=config["batch_size"], epochs=config["epochs"], negatives=config["negatives"],
        sampler=config["sampler"], negatives_mode=config["negatives_mode"], l2=config["l2"],
        weight_decay=config["weight_decay"], eval_every=config["eval_every"], patience=config["patience"],
        ks=tuple(config["topk"]), metric=config["metric"], seed=config["seed"], out_dir=out_dir,
        engine=config["engine"], epoch_sampling=config["epoch_sampling"], dns_candidates=config["dns_candidates"],
        **infonce_only, **schedule,
    )


def _load_run(args):
    """A finished run's directory, resolved config, model (best.npz, else last.npz) and data.

    The data is the run's own (its config.toml), or --data/--format when given; it must have the
    model's numbers of users and items.
    """
    from recgrad.models import load_model

    run = Path(args.run)
    if not (run / "config.toml").exists():
        raise UsageError(f"{run}: not a run directory (no config.toml); pass the --out of a recgrad train run")
    config = resolve_config(read_toml(run / "config.toml"), {"data": args.data, "format": args.format})
    model_file = next((run / name for name in ("best.npz", "last.npz") if (run / name).exists()), None)
    if model_file is None:
        raise UsageError(f"{run}: holds no best.npz or last.npz model")
    try:
        model = load_model(model_file)
    except ValueError as error:  # ModelFileError: one line naming the file
        raise UsageError(str(error)) from None
    dataset = load_dataset(config)
    if (model.n_users, model.n_items) != (dataset.n_users, dataset.n_items):
        raise UsageError(f"{model_file} has {model.n_users} users x {model.n_items} items but the data has "
                         f"{dataset.n_users} x {dataset.n_items}; pass the data it was trained on")
    return config, model, model_file, dataset


# -------------------------------------------------------------------------------------- commands
def cmd_train(args):
    if args.resume and args.out is None:
        raise UsageError("--resume: needs --out DIR, the run directory to continue")
    if args.resume and args.config is None and (Path(args.out) / "config.toml").exists():
        file_values = read_toml(Path(args.out) / "config.toml")
    else:
        file_values = read_toml(args.config) if args.config else {}
    flag_values = {key: getattr(args, key) for key in CONFIG_DEFAULTS if getattr(args, key, None) is not None}
    config = resolve_config(file_values, flag_values)
    if config["out"] is None:
        config["out"] = os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    limits = set_threads(config["threads"])
    dataset = load_dataset(config)
    try:
        model = build_model(config, dataset.n_users, dataset.n_items)
        trainer = build_trainer(config, model, config["out"])
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    if config["data"] == "synthetic":
        print("recgrad: training on the built-in SYNTHETIC data set (generated, not real users); "
              "pass --data PATH for real data", file=sys.stderr)
    for sentence in dataset.warnings():
        print(f"recgrad: warning: {sentence}", file=sys.stderr)
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    write_toml(out / "config.toml", config)
    try:
        result = trainer.fit(dataset, resume=args.resume)
    except KeyboardInterrupt:
        print(f"\nrecgrad: interrupted; checkpoint saved. Continue with: recgrad train --out {out} --resume",
              file=sys.stderr)
        return 130
    finally:
        if limits is not None:
            limits.restore_original_limits()
    print(_result_summary(result, out))
    return 0


def _result_summary(result, out):
    from recgrad.evaluation import format_metrics_table

    rows = {}
    if result["best_metrics"]:
        rows[f"best (epoch {result['best_epoch']})"] = result["best_metrics"]
    if result["popularity"]:
        rows["popularity baseline"] = result["popularity"]
    table = format_metrics_table(rows) if rows else "(no evaluation)"
    return (f"{table}\n{result['eval_protocol']} protocol on the {result['eval_split']} split; "
            f"{result['epochs_run']} epochs{' (stopped early)' if result['stopped_early'] else ''}\n"
            f"run directory: {out}")


def cmd_evaluate(args):
    from recgrad.evaluation import evaluate_baseline, evaluate_recommender, format_metrics_table, protocol_for
    from recgrad.metrics import METRIC_NAMES

    config, model, model_file, dataset = _load_run(args)
    try:
        ks = tuple(_int_list(args.topk)) if args.topk else tuple(config["topk"])
    except ValueError:
        raise UsageError(f"--topk: expected comma-separated integers, got {args.topk!r}") from None
    protocol = protocol_for(dataset, "test")
    if protocol == "sampled" and not args.topk:
        ks = (10,)
    results = {
        "model": evaluate_recommender(model, dataset, "test", ks=ks, metrics=METRIC_NAMES),
        "popularity": evaluate_baseline(dataset, "test", ks=ks, metrics=METRIC_NAMES),
    }
    print(f"{model_file} on {dataset.name}, test split, {protocol} protocol")
    print(format_metrics_table({model_file.name: results["model"], "popularity baseline": results["popularity"]}))
    output = Path(args.output) if args.output else model_file.parent / "evaluation.json"
    output.write_text(json.dumps({"model_file": str(model_file), "data": dataset.name, "protocol": protocol,
                                  **results}, indent=2) + "\n")
    print(f"written to {output}")
    return 0


def cmd_recommend(args):
    import numpy as np

    _, model, _, dataset = _load_run(args)
    if args.users == "all":
        users = np.arange(dataset.n_users)
    else:
        try:
            users = np.array([dataset.user_index(_parse_id(token)) for token in args.users.split(",") if token])
        except KeyError as error:
            raise UsageError(f"--users: {error.args[0]}") from None
    if args.n < 1:
        raise UsageError(f"-n: must be at least 1, got {args.n}")
    seen = dataset.train if dataset.validation is None else dataset.train + dataset.validation
    handle = open(args.output, "w") if args.output else sys.stdout
    try:
        for start in range(0, len(users), 1024):
            block = users[start:start + 1024]
            ids, _ = model.recommend(block, seen[block], N=args.n, filter_already_liked_items=True)
            for user, row in zip(block, ids):
                items = " ".join(str(dataset.item_ids[i]) for i in row if i >= 0)
                handle.write(f"{dataset.user_ids[user]}\t{items}\n")
    finally:
        if args.output:
            handle.close()
    return 0


def _parse_id(token):
    """Original ids are ints when they look like ints (as the loaders map them), strings otherwise."""
    token = token.strip()
    try:
        return int(token)
    except ValueError:
        return token


def cmd_info(args):
    from recgrad.data import format_statistics, statistics

    flags = {key: getattr(args, key) for key in ("format", *DATA_OPTIONS, "on_error")}
    dataset = load_dataset(resolve_config({}, {"data": args.data, **flags}), split=False)
    print(format_statistics(statistics(dataset)))
    return 0


def cmd_check(args):
    from recgrad.selfcheck import format_results, run_checks

    results = run_checks(seed=args.seed)
    print(format_results(results))
    return 0 if all(r.ok for r in results) else 1


# --------------------------------------------------------------------------------------- parsers
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _data_format_flags(group):
    group.add_argument("--format", help="auto (default), lightgcn, ncf, movielens, csv, synthetic")
    group.add_argument("--user-col", dest="user_col", help="csv: the user column's name")
    group.add_argument("--item-col", dest="item_col", help="csv: the item column's name")
    group.add_argument("--rating-col", dest="rating_col", help="csv: the rating column's name")
    group.add_argument("--timestamp-col", dest="timestamp_col", help="csv: the timestamp column's name")
    group.add_argument("--sep", help="csv: the field separator (default: sniffed)")
    group.add_argument("--min-rating", dest="min_rating", help="keep interactions rated at least this (implicit feedback)")
    group.add_argument("--on-error", dest="on_error", help="raise (default) or skip malformed lines (counted)")


def _train_flags(parser):
    data = parser.add_argument_group("data")
    data.add_argument("--data", help="a data folder or file, or 'synthetic' (default: the built-in synthetic set)")
    _data_format_flags(data)
    data.add_argument("--split", help="data without a test file: random (default) or leave_one_out by timestamp")
    data.add_argument("--test-ratio", dest="test_ratio", help="random split: the held-out fraction per user (0.2)")
    data.add_argument("--validation", help="carve this fraction of train as a validation set for early stopping")
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="mf (default), two-tower, gmf, neumf")
    model.add_argument("--dim", help="embedding size (NeuMF: the GMF part's size); default 64")
    model.add_argument("--hidden", help="two-tower: hidden widths, e.g. 128,64")
    model.add_argument("--activation", help="two-tower: " + ", ".join(CHOICES["activation"]))
    model.add_argument("--normalize", help="mf, two-tower: score by the cosine (L2-normalised rows or tower outputs; "
                       "true/false; default: true with --loss infonce --similarity cosine)")
    model.add_argument("--mlp-layers", dest="mlp_layers", help="neumf: MLP widths, e.g. 64,32,16,8")
    model.add_argument("--init-std", dest="init_std", help="std of the N(0, std) embedding init")
    training = parser.add_argument_group("training")
    training.add_argument("--loss", help="bpr (default), bce, infonce")
    training.add_argument("--optimizer", help="adam (default), adamw, sgd, sparse_adam (lazy)")
    training.add_argument("--lr", help="learning rate (default 1e-2; the LightGCN recipe uses 1e-3 with many more epochs)")
    training.add_argument("--lr-schedule", dest="lr_schedule", help="constant (default) or cosine (anneal to --lr-min)")
    training.add_argument("--lr-min", dest="lr_min", help="the cosine schedule's final lr (default 0)")
    training.add_argument("--batch-size", dest="batch_size", help="default 2048")
    training.add_argument("--epochs", help="default 20")
    training.add_argument("--negatives", help="negatives per positive (bpr 1, bce 4, infonce 1024)")
    training.add_argument("--negatives-mode", dest="negatives_mode", help="per_user (default), shared, in_batch")
    training.add_argument("--dns-candidates", dest="dns_candidates",
                          help="dynamic negative sampling: each negative is the best-scoring of this many draws "
                               "(default 1: plain sampling)")
    training.add_argument("--temperature", help="infonce temperature (default 0.1)")
    training.add_argument("--similarity", help="infonce: dot (default) or cosine")
    training.add_argument("--logq-correction", dest="logq_correction", help="infonce: log-Q correction (true/false)")
    training.add_argument("--l2", help="LightGCN's L2 on the batch's embeddings (default 1e-4)")
    training.add_argument("--weight-decay", dest="weight_decay", help="optimizer weight decay")
    training.add_argument("--sampler", help="uniform (default) or popularity")
    training.add_argument("--epoch-sampling", dest="epoch_sampling",
                          help="interactions (default: each training interaction once per epoch) or users "
                               "(a uniform user, then one of their positives: the NGCF/LightGCN code's sampler)")
    training.add_argument("--engine", help="numpy (default, the reference step) or fused (compiled MF loop: "
                                           "sparse_adam = the same lazy Adam, sgd = hogwild SGD)")
    training.add_argument("--seed", help="seed of init, shuffle and sampler (default 0)")
    training.add_argument("--threads", help="threads for the compiled kernels and BLAS (default: all cores)")
    evaluation = parser.add_argument_group("evaluation and output")
    evaluation.add_argument("--eval-every", dest="eval_every", help="evaluate every N epochs (default 1)")
    evaluation.add_argument("--patience", help="early stopping after N evaluations without improvement")
    evaluation.add_argument("--topk", help="cut-offs, e.g. 10,20 (default 20)")
    evaluation.add_argument("--metric", help="early-stopping metric, e.g. recall@20 or ndcg@10")
    evaluation.add_argument("--out", help="run directory (default runs/<date-time>)")
    parser.add_argument("--config", help="a recipe TOML file; flags override its keys")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")


def _delegate(commands, name, help_text, module_name):
    """A sub-command whose arguments and body live in `module_name` (add_arguments, run).

    The module is imported only when the sub-command runs (the benchmarks and experiments pull
    in numba, torch and matplotlib): its own parser reads the arguments the main parser left.
    """

    def run(args, arguments):
        import importlib

        module = importlib.import_module(module_name)
        parser = _Parser(prog=f"recgrad {name}", description=help_text)
        module.add_arguments(parser)
        return module.run(parser.parse_args(arguments))

    commands.add_parser(name, help=help_text, add_help=False).set_defaults(delegated=run)


def make_parser():
    parser = _Parser(prog="recgrad", description="Neural-network fundamentals in NumPy, training embedding recommenders.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    train = commands.add_parser("train", help="train a recommender (no arguments: the synthetic data set)")
    _train_flags(train)
    train.set_defaults(run_command=cmd_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a run's model on its data (or --data)")
    evaluate.add_argument("--run", required=True, help="a run directory written by recgrad train")
    evaluate.add_argument("--data", help="data to evaluate on (default: the run's)")
    evaluate.add_argument("--format", help="format of --data (default auto)")
    evaluate.add_argument("--topk", help="cut-offs, e.g. 10,20 (default: the run's)")
    evaluate.add_argument("--output", help="JSON file for the metrics (default RUN/evaluation.json)")
    evaluate.set_defaults(run_command=cmd_evaluate)

    recommend = commands.add_parser("recommend", help="write top-N recommendations, user<TAB>item item ...")
    recommend.add_argument("--run", required=True, help="a run directory written by recgrad train")
    recommend.add_argument("--users", default="all", help="'all' or comma-separated original user ids")
    recommend.add_argument("-n", type=int, default=10, help="items per user (default 10)")
    recommend.add_argument("--data", help="data whose seen items are excluded (default: the run's)")
    recommend.add_argument("--format", help="format of --data (default auto)")
    recommend.add_argument("--output", help="output file (default: standard output)")
    recommend.set_defaults(run_command=cmd_recommend)

    info = commands.add_parser("info", help="statistics of a data set")
    info.add_argument("data", help="a data folder or file, or 'synthetic'")
    _data_format_flags(info)
    info.set_defaults(run_command=cmd_info)

    _delegate(commands, "bench", "time recgrad beside PyTorch and implicit, in one process", "recgrad.bench")
    _delegate(commands, "experiment", "run the experiments that test the textbook claims",
              "recgrad.experiments.runner")

    check = commands.add_parser("check", help="finite-difference check of every gradient")
    check.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    check.set_defaults(run_command=cmd_check)
    return parser


def main(argv=None):
    parser = make_parser()
    args, unparsed = parser.parse_known_args(argv)
    delegated = getattr(args, "delegated", None)
    if delegated is None and unparsed:
        parser.error(f"unrecognized arguments: {' '.join(unparsed)}")
    try:
        if delegated is not None:
            return delegated(args, unparsed)
        return args.run_command(args)
    except UsageError as error:
        print(f"recgrad: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
