"""The `recgrad` command line: train, evaluate, recommend, similar, serve, info, prepare, check, bench, experiment.

A run is described by one flat dict of settings, each declared once in `recgrad.train.settings`
(which also gives every flag below its name, help and checks); a `--config recipe.toml` file sets
keys and command-line flags override the file. The resolved config is written to the run
directory as config.toml, so `recgrad evaluate --run DIR` and `recgrad recommend --run DIR`
rebuild the same data and model.

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

from recgrad.engine import EngineError, get_default_engine, set_default_engine
from recgrad.train import settings as run_settings
from recgrad.train.build import DATA_OPTIONS, build_model
from recgrad.train.checkpoint import atomic_write
from recgrad.train.settings import SettingError


class UsageError(Exception):
    """A bad option value: reported as one line, exit status 2."""


# ----------------------------------------------------------------------------------------- config
def _cli_words(message):
    """A setting error in the CLI's words: "lr: ..." becomes "--lr: ..."."""
    name, colon, rest = message.partition(":")
    if colon and name in run_settings.BY_NAME:
        return f"{run_settings.flag_name(name)}:{rest}"
    return message


def resolve_config(file_values, flag_values, file_name=None):
    """Defaults, then the recipe file, then the flags: every value converted, checked and the
    derived defaults filled in (`recgrad.train.settings.resolve`)."""
    for key, value in file_values.items():
        try:
            run_settings.check_value(key, value)
        except SettingError as error:
            raise UsageError(f"{file_name}: {error}" if file_name else str(error)) from None
    for key, value in flag_values.items():
        try:
            run_settings.check_value(key, value)
        except SettingError as error:
            raise UsageError(_cli_words(str(error))) from None
    values = {key: value for source in (file_values, flag_values) for key, value in source.items()
              if value is not None}
    if flag_values.get("lr_schedule") == "constant" and flag_values.get("lr_min") is None:
        values.pop("lr_min", None)  # the file's floor belonged to the schedule the flag switched off
    try:
        return run_settings.resolve(values)
    except SettingError as error:
        raise UsageError(_cli_words(str(error))) from None


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
    """Write a flat config as TOML, atomically; keys whose value is None (unset) are left out."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in config.items() if value is not None]
    text = "# resolved by recgrad train\n" + "\n".join(lines) + "\n"
    atomic_write(str(path), lambda handle: handle.write(text.encode()))


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


def load_dataset(config, split=True, id_maps=None):
    """The run's data (`recgrad.train.build.load_data`, re-indexed to the run's id maps when given),
    its errors as one-line usage errors."""
    from recgrad.train.build import load_data

    try:
        dataset = load_data(config, split=split, id_maps=id_maps)
    except (FileNotFoundError, ValueError, TypeError) as error:
        raise UsageError(_cli_words(str(error))) from None
    if split and getattr(dataset, "test_file", None) is not None \
            and config["test_ratio"] != run_settings.BY_NAME["test_ratio"].default:
        print(f"recgrad: warning: --test-ratio is ignored: {config['data']} has a test file ({dataset.test_file})",
              file=sys.stderr)
    return dataset


def build_trainer(config, model, out_dir, cluster=None):
    """The Trainer of a resolved config (its training and evaluation settings), on a
    `recgrad.distributed.RayCluster` when one is given."""
    from recgrad.train import Trainer

    return Trainer(model, out_dir=out_dir, cluster=cluster,
                   **{name: config[name] for name in run_settings.trainer_settings()})


def start_cluster(config):
    """The started `RayCluster` of --workers (None without it): one line and status 2 when Ray is
    missing or the cluster at --address cannot be joined."""
    if config["workers"] is None:
        return None
    try:
        from recgrad.distributed import RayCluster
        from recgrad.distributed.cluster import import_ray

        import_ray()
    except ImportError as error:
        raise UsageError(f"--workers: {error}") from None
    cluster = RayCluster(config["workers"], address=config["address"], threads=config["threads"] or 1)
    try:
        return cluster.start()
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"--address {config['address']}" if config["address"] else "--workers"
        raise UsageError(f"{where}: cannot start or join the Ray cluster: {str(error).splitlines()[0]}") from None


def _load_run(args):
    """A finished run's directory, resolved config, model (best.npz, else last.npz) and data.

    config.toml and the model are read as one consistent pair (`recgrad.rundir.read_run`), even
    while the run is being written. The data is the run's own (its config.toml), or --data/--format
    when given, re-indexed to the run's id maps when it has them (a grown run); it must have the
    model's numbers of users and items.
    """
    from recgrad.rundir import read_run

    run = Path(args.run)
    try:
        files = read_run(run)
        file_values = tomllib.loads(files.config_text)
    except (FileNotFoundError, ValueError) as error:  # ModelFileError, RunDirError: one line naming the file
        raise UsageError(str(error)) from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{run / 'config.toml'}: not valid TOML: {error}") from None
    config = resolve_config(file_values, {"data": args.data, "format": args.format},
                            file_name=str(run / "config.toml"))
    model, model_file = files.model, files.model_file
    dataset = load_dataset(config, id_maps=files.id_maps)
    if (model.n_users, model.n_items) != (dataset.n_users, dataset.n_items):
        raise UsageError(f"{model_file} has {model.n_users} users x {model.n_items} items but the data has "
                         f"{dataset.n_users} x {dataset.n_items}; pass the data it was trained on")
    return config, model, model_file, dataset


# -------------------------------------------------------------------------------------- commands
def cmd_train(args):
    """Everything that can be checked is checked before the run directory is created or written;
    then the directory is locked for this process (`recgrad.rundir.RunDirLock`) while it trains."""
    from recgrad.rundir import RunDirError, read_id_maps
    from recgrad.train.checkpoint import CheckpointError, load_checkpoint

    if args.resume and args.resume_from is not None:
        raise UsageError("--resume-from: --resume continues --out itself, --resume-from starts --out from another "
                         "run; give one of them")
    if args.resume and args.out is None:
        raise UsageError("--resume: needs --out DIR, the run directory to continue")
    if args.resume and not Path(args.out).is_dir():
        raise UsageError(f"--resume: {args.out} is not a run directory; train without --resume to start it")
    grown_from = None if args.resume_from is None else _check_grow_arguments(args)
    if args.resume and args.config is None and (Path(args.out) / "config.toml").exists():
        file_name = str(Path(args.out) / "config.toml")
    elif grown_from is not None and args.config is None:
        file_name = str(grown_from / "config.toml")
    else:
        file_name = args.config
    file_values = read_toml(file_name) if file_name else {}
    flag_values = {key: getattr(args, key) for key in run_settings.BY_NAME if getattr(args, key, None) is not None}
    config = resolve_config(file_values, flag_values, file_name=file_name)
    if config["out"] is None:
        config["out"] = os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    if config["data"] != "synthetic":
        config["data"] = os.path.abspath(config["data"])  # so that the run evaluates from any directory
    out = Path(config["out"])
    checkpoint = grow_checkpoint = id_maps = None
    try:
        if args.resume:
            checkpoint = load_checkpoint(str(out / "checkpoint.npz"))
            id_maps = read_id_maps(out)
        if grown_from is not None:
            grow_checkpoint, id_maps = _grown_run_start(grown_from, config)
    except (CheckpointError, RunDirError) as error:
        raise UsageError(str(error)) from None
    limits = set_threads(config["threads"])
    if config["engine"] is not None:
        set_default_engine(config["engine"])
    cluster = None
    try:
        dataset = load_dataset(config, id_maps=id_maps)
        cluster = start_cluster(config)
        try:
            model = build_model(config, dataset.n_users, dataset.n_items, dataset.train)
            trainer = build_trainer(config, model, config["out"], cluster)
            trainer.evaluation.plan(dataset)
        except (TypeError, ValueError) as error:
            raise UsageError(_cli_words(str(error))) from None
        if checkpoint is not None:
            changed = run_settings.resume_conflicts(checkpoint["settings"], trainer.config())
            if changed:
                raise UsageError("--resume: the checkpoint was written with different settings: " + ", ".join(changed))
        if grow_checkpoint is not None:
            _check_growable(grown_from, grow_checkpoint, model, id_maps, trainer)
            print(f"recgrad: growing {grown_from} ({len(id_maps[0])} users x {len(id_maps[1])} items) to "
                  f"{dataset.n_users} x {dataset.n_items} in {out}", file=sys.stderr)
        status = _train_locked(trainer, dataset, config, out, checkpoint, grow_checkpoint, cluster)
        if cluster is not None and cluster.loop is not None and cluster.loop.history:
            print(_distributed_summary(cluster.loop), file=sys.stderr)
        return status
    finally:
        if cluster is not None:
            cluster.shutdown()
        if limits is not None:
            limits.restore_original_limits()


def _distributed_summary(loop):
    """One line on a distributed run's epochs: time, each worker's compute throughput, bytes moved."""
    import numpy as np

    history = loop.history
    seconds = sum(epoch["seconds"] for epoch in history) / len(history)
    trained = np.sum([epoch["worker_samples"] for epoch in history], axis=0)
    busy = np.sum([epoch["worker_seconds"] for epoch in history], axis=0)
    per_worker = " ".join(f"{rate:,.0f}" for rate in trained / np.maximum(busy, 1e-12))
    return (f"recgrad: {loop.n} workers, {len(history)} epochs: {seconds:.2f} s per epoch, compute throughput per "
            f"worker {per_worker} samples/s, {history[-1]['bytes_moved'] / 2**20:.1f} MiB moved per epoch, "
            f"{loop.restarts} epoch(s) run again after a worker died")


def _check_grow_arguments(args):
    """The directory --resume-from names, once the flags that go with it are checked."""
    source = Path(args.resume_from)
    if args.out is None:
        raise UsageError("--resume-from: needs --out NEWDIR, the directory of the grown run")
    if args.data is None:
        raise UsageError("--resume-from: needs --data, the data with the new users and items")
    if not (source / "config.toml").is_file():
        raise UsageError(f"--resume-from: {source} is not a run directory (no config.toml); pass the --out of a "
                         "recgrad train run")
    if Path(args.out).resolve() == source.resolve():
        raise UsageError(f"--resume-from: --out must be a new directory, not {source} itself (the run grown from "
                         "stays as it is; to continue it on its own data use --resume)")
    return source


def _grown_run_start(source, config):
    """(checkpoint, id maps) of the run a grown run starts from. The id maps are its ids.npz, else
    those of its data as its config.toml loads it; the model settings must be the run's."""
    from recgrad.rundir import read_id_maps
    from recgrad.train.checkpoint import load_checkpoint

    checkpoint_file = source / "checkpoint.npz"
    if not checkpoint_file.is_file():
        raise UsageError(f"--resume-from: {source} holds no checkpoint.npz (a run writes it at the end of each "
                         "epoch); a run grows from its checkpoint")
    checkpoint = load_checkpoint(str(checkpoint_file))
    source_config = resolve_config(read_toml(source / "config.toml"), {}, file_name=str(source / "config.toml"))
    changed = [f"{name}={source_config[name]!r} (now {config[name]!r})" for name in run_settings.BY_NAME
               if run_settings.BY_NAME[name].group == "model" and source_config[name] != config[name]]
    if changed:
        raise UsageError(f"--resume-from: a grown run keeps the model of {source}; these model settings differ: "
                         + ", ".join(changed))
    id_maps = read_id_maps(source)
    if id_maps is None:
        try:
            known = load_dataset(source_config, split=False)
        except UsageError as error:
            raise UsageError(f"--resume-from: the id maps of {source} come from its data, which cannot be read: "
                             f"{error}") from None
        id_maps = (known.user_ids, known.item_ids)
    return checkpoint, id_maps


def _check_growable(source, checkpoint, model, id_maps, trainer):
    """The model can grow, and the checkpoint's tables have a row per id of the run's maps (growing
    the parameters here, before anything is written, is what checks that they fit)."""
    import numpy as np

    from recgrad.train.grow import grow_parameters

    tables = type(model).ID_TABLES
    if not tables:
        raise UsageError(f"--resume-from: a {type(model).__name__} model cannot grow: only models with user and "
                         "item embedding tables can (mf, two-tower, gmf, mlp, neumf)")
    changed = run_settings.resume_conflicts(checkpoint["settings"], trainer.config())
    if changed:
        raise UsageError(f"--resume-from: {source / 'checkpoint.npz'} was written with different settings: "
                         + ", ".join(changed))
    sizes = {"user": len(id_maps[0]), "item": len(id_maps[1])}
    for name, side in tables.items():
        rows = np.shape(checkpoint["model"].get(name))[:1]
        if rows != (sizes[side],):
            raise UsageError(f"--resume-from: {source / 'checkpoint.npz'} has {rows[0] if rows else 'no'} {side} rows "
                             f"in {name} but the run's data has {sizes[side]} {side}s; its data changed since it was "
                             "trained")
    try:
        grow_parameters(model, checkpoint["model"])
    except ValueError as error:
        raise UsageError(f"--resume-from: {source / 'checkpoint.npz'}: {error}") from None


# What a training run writes into its directory (a new run removes an earlier run's copies first).
RUN_FILES = ("best.npz", "last.npz", "checkpoint.npz", "metrics.jsonl", "test_metrics.json", "learning_curve.png",
             "evaluation.json", "ids.npz")


def _train_locked(trainer, dataset, config, out, checkpoint, grow_checkpoint=None, cluster=None):
    """Lock the run directory, write config.toml (and a grown run's id maps), train and refit
    (`recgrad.train.refit`, when the refit setting or its default says so); the lock is released
    however it ends."""
    from recgrad.rundir import RunDirError, RunDirLock, write_id_maps
    from recgrad.train.refit import refit_run, wants_refit

    try:
        lock = RunDirLock(out).acquire()
    except RunDirError as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"--out: cannot create {out}: {error.strerror}") from None
    if config["data"] == "synthetic":
        print("recgrad: training on the built-in SYNTHETIC data set (generated, not real users); "
              "pass --data PATH for real data", file=sys.stderr)
    for sentence in dataset.warnings():
        print(f"recgrad: warning: {sentence}", file=sys.stderr)
    if config["selection"] == "validation" and config["validation"] != 0 and dataset.validation is None:
        print("recgrad: warning: no user has enough training interactions to hold out a validation part; "
              "the test set chooses the epoch, so the reported numbers are optimistic", file=sys.stderr)
    try:
        if checkpoint is None:  # a new run into a used directory: no earlier run's files beside its config
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        write_toml(out / "config.toml", config)
        if grow_checkpoint is not None:
            write_id_maps(out, dataset.user_ids, dataset.item_ids)
        if checkpoint is not None:
            print(f"recgrad: resuming {out} at epoch {checkpoint['epoch'] + 1} (batch {checkpoint['batch']})",
                  file=sys.stderr)
        result = trainer.fit(dataset, resume=checkpoint is not None, grow_from=grow_checkpoint)
        if wants_refit(config, dataset) and result["eval_split"] == "validation" and result["best_epoch"] is not None:
            print(f"recgrad: refitting on train + validation for {result['best_epoch']} epochs (the selected epoch; "
                  "--refit false keeps the selected model)", file=sys.stderr)
            result = refit_run(config, dataset, result, str(out), cluster=cluster, progress=True)
    except KeyboardInterrupt:
        print(f"\nrecgrad: interrupted; checkpoint saved. Continue with: recgrad train --out {out} --resume",
              file=sys.stderr)
        return 130
    except OSError as error:
        raise UsageError(f"--out: cannot write to {out}: {error.strerror or error}; free space or choose another "
                         "--out (the last checkpoint is intact)") from None
    finally:
        lock.release()
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
    lines = [table, f"selected on the {result['eval_split']} split ({result['eval_protocol']} protocol); "
                    f"{result['epochs_run']} epochs{' (stopped early)' if result['stopped_early'] else ''}"]
    if result["eval_split"] == "test":
        lines.append("the test set chose the epoch (selection = test: the papers' protocol), so these test "
                     "numbers are optimistic")
    search = result.get("prior_search")
    if search:
        lines.append(f"popularity prior: beta {search['popularity_prior']:.4g} chosen on the {result['eval_split']} "
                     f"split ({result['best_metric']} {search[result['best_metric']]:.4f}; beta 0: "
                     f"{search['grid']['0']:.4f}); the rankings add beta log(1 + n_i)")
    if result.get("refit_epochs") is not None and result["test_metrics"]:
        lines += ["", format_metrics_table({f"test, epoch {result['best_epoch']} (selected)":
                                            result["selected_test_metrics"] or {},
                                            f"test, refit ({result['refit_epochs']} epochs)": result["test_metrics"]}),
                  "the selected model and the refit one (train + validation, the run's model) on the test split, "
                  f"evaluated once each ({result['test_protocol']} protocol)"]
    elif result["test_metrics"]:
        lines += ["", format_metrics_table({f"test, epoch {result['best_epoch']}": result["test_metrics"]}),
                  f"the selected model on the test split, evaluated once ({result['test_protocol']} protocol)"]
    lines.append(f"run directory: {out}")
    return "\n".join(lines)


def cmd_evaluate(args):
    from recgrad.evaluation import evaluate_baseline, evaluate_recommender, format_metrics_table, protocol_for
    from recgrad.metrics import METRIC_NAMES

    config, model, model_file, dataset = _load_run(args)
    try:
        ks = tuple(run_settings.check_value("topk", args.topk) or config["topk"] or (20,))
    except SettingError as error:
        raise UsageError(_cli_words(str(error))) from None
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
    text = json.dumps({"model_file": str(model_file), "data": dataset.name, "protocol": protocol, **results},
                      indent=2) + "\n"
    try:
        atomic_write(str(output), lambda handle: handle.write(text.encode()))
    except OSError as error:
        raise UsageError(f"--output: cannot write {output}: {error.strerror or error}") from None
    print(f"written to {output}")
    return 0


def cmd_recommend(args):
    import numpy as np

    from recgrad.serving.run import ServedRun, ServingError, read_histories

    config, model, _, dataset = _load_run(args)
    if args.n < 1:
        raise UsageError(f"-n: must be at least 1, got {args.n}")
    try:
        served = ServedRun(config, model, dataset, index=args.index)
        if args.history is not None:
            lines = served.history_lines(read_histories(args.history), args.n)
    except ServingError as error:
        raise UsageError(str(error)) from None
    if args.history is None:
        if args.users == "all":
            users = np.arange(dataset.n_users)
        else:
            try:
                users = np.array([dataset.user_index(_parse_id(token)) for token in args.users.split(",")
                                  if token.strip()], dtype=np.int64)
            except KeyError as error:
                raise UsageError(f"--users: {error.args[0]}") from None
            if users.size == 0:
                raise UsageError(f"--users: no user id in {args.users[:60]!r}; give 'all' or ids separated by commas")
        lines = _recommendation_lines(served, dataset, users, args.n)
    if not args.output:
        sys.stdout.writelines(lines)
        return 0
    try:
        atomic_write(args.output, lambda handle: handle.writelines(line.encode() for line in lines))
    except OSError as error:
        raise UsageError(f"--output: cannot write {args.output}: {error.strerror or error}") from None
    return 0


def _recommendation_lines(served, dataset, users, n):
    """user<TAB>item item ... lines, computed in blocks of 1024 users."""
    for start in range(0, len(users), 1024):
        block = users[start:start + 1024]
        ids, _ = served.recommend(block, n)
        for user, row in zip(block, ids):
            items = " ".join(str(dataset.item_ids[i]) for i in row if i >= 0)
            yield f"{dataset.user_ids[user]}\t{items}\n"


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


def cmd_prepare(args):
    """Read --data in chunks into the prepared directory --out (`recgrad.data.prepared.prepare`)."""
    from recgrad.data.prepared import prepare

    flags = {key: getattr(args, key) for key in ("format", *DATA_OPTIONS, "on_error")}
    config = resolve_config({}, {"data": args.data, **flags})
    if not args.chunk_mb > 0:
        raise UsageError(f"--chunk-mb: must be a positive number, got {args.chunk_mb}")
    options = {key: config[key] for key in DATA_OPTIONS if config.get(key) is not None}
    try:
        manifest = prepare(config["data"], args.out, format=config["format"], on_error=config["on_error"],
                           chunk_bytes=max(1, int(args.chunk_mb * (1 << 20))), **options)
    except (FileNotFoundError, FileExistsError, ValueError, TypeError) as error:
        raise UsageError(_cli_words(str(error))) from None
    except OSError as error:
        raise UsageError(f"--out: cannot write {args.out}: {error.strerror or error}") from None
    from recgrad.data.dataset import report_warnings

    for sentence in report_warnings(manifest["report"]):
        print(f"recgrad: warning: {sentence}", file=sys.stderr)
    test = f", {manifest['test_nnz']} test" if manifest["test_nnz"] is not None else ""
    print(f"prepared {args.out}: {manifest['n_users']} users x {manifest['n_items']} items, "
          f"{manifest['train_nnz']} train{test} interactions in {manifest['seconds']:.1f} s; "
          f"train with: recgrad train --data {args.out}")
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


def _flag(group, name):
    """The flag of one setting, its help text derived from the setting's declaration."""
    setting = run_settings.BY_NAME[name]
    if setting.default is not None:
        default = f"default {_shown(setting.default)}"
    elif name in run_settings.DERIVED_DEFAULTS:
        default = f"default {run_settings.DERIVED_DEFAULTS[name][0]}"
    else:
        default = None
    details = "; ".join(part for part in (setting.allowed(), default) if part)
    group.add_argument(run_settings.flag_name(name), dest=name, metavar=name.upper(),
                       help=f"{setting.help} ({details})")


def _shown(value):
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _data_format_flags(group):
    for name in ("format", *DATA_OPTIONS, "on_error"):
        _flag(group, name)


def _train_flags(parser):
    groups = {name: parser.add_argument_group(name) for name in run_settings.GROUPS}
    for setting in run_settings.SETTINGS:
        _flag(groups[setting.group], setting.name)
    parser.add_argument("--config", help="a recipe TOML file (keys: the settings above); flags override its keys")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--resume-from", metavar="DIR",
                        help="start the run in --out from the checkpoint of the run in DIR, on --data that may add "
                             "users and items: known ids keep their rows and optimizer state, new ones start as in "
                             "a fresh run (the settings are DIR's unless given)")


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
    parser = _Parser(prog="recgrad",
                     description="Neural-network fundamentals in NumPy, training embedding recommenders.")
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
    recommend.add_argument("--history", help="new users (fold-in): a file of lines key<TAB>item item ... of raw "
                           "item ids; one output line per key (mf, two-tower, lightgcn)")
    recommend.add_argument("--index", default="exact", help="exact (default) or faiss (HNSW; the ann extra)")
    recommend.set_defaults(run_command=cmd_recommend)

    info = commands.add_parser("info", help="statistics of a data set")
    info.add_argument("data", help="a data folder or file, or 'synthetic'")
    _data_format_flags(info)
    info.set_defaults(run_command=cmd_info)

    prepare = commands.add_parser("prepare", help="read interaction files of any size in chunks into a directory "
                                  "of memory-mapped CSR arrays that train --data reads")
    prepare.add_argument("--data", required=True, help="a data folder or file (any format train --data reads)")
    prepare.add_argument("--out", required=True, help="the directory to write (must not exist)")
    _data_format_flags(prepare)
    prepare.add_argument("--chunk-mb", type=float, default=4.0,
                         help="MiB of text read at once; memory is a few times this (default 4)")
    prepare.set_defaults(run_command=cmd_prepare)

    _delegate(commands, "bench", "time recgrad beside PyTorch and implicit, in one process", "recgrad.bench")
    _delegate(commands, "experiment", "run the experiments that test the textbook claims",
              "recgrad.experiments.runner")
    _delegate(commands, "tune", "search the settings with Optuna on validation data (never the test set)",
              "recgrad.tune")
    _delegate(commands, "similar", "the items (or users) most similar to given ones", "recgrad.serving.similar_command")
    _delegate(commands, "serve", "an HTTP JSON service answering recommend, fold-in and similar",
              "recgrad.serving.http")

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
        get_default_engine()  # RECGRAD_ENGINE checked here, so that a bad value is one line
        if delegated is not None:
            return delegated(args, unparsed)
        return args.run_command(args)
    except (UsageError, EngineError) as error:
        print(f"recgrad: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
