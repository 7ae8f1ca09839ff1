"""`recgrad tune`: a hyper-parameter search with Optuna that never looks at the test set.

Each trial is a `recgrad train` run (into DIR/trials/N) whose settings Optuna's TPE sampler draws
from the search space declared in `recgrad.train.settings` (`Setting.search`: lr and l2 on log
scales, the number of negatives and dynamic-negative candidates, dim, the loss, the optimizer, the
lr schedule; an InfoNCE temperature only when the loss is InfoNCE, a CCL margin and negative weight
only when it is CCL). Every trial selects its best
epoch on the validation split (`selection = "validation"`, 10% of each user's training
interactions by default, fewer on large data), reports the validation metric after each
evaluation, and is pruned when it falls below the median of earlier trials at the same epoch
(Optuna's MedianPruner). The first trial runs the defaults of `recgrad train` (enqueued), so the search starts
from them. The test set is evaluated once per trial on the selected model (TestReport) and is never
an objective.

The study lives in DIR/study.db (SQLite), so `--resume` continues a killed or interrupted search
without losing a finished trial (a trial the kill interrupted stays listed as running in
trials.csv and counts for nothing). The search stops at the time budget, which includes everything
(a running trial is stopped at the budget and its best epoch so far counts). Outputs:

    DIR/best.toml     a recipe: `recgrad train --config DIR/best.toml` runs the best trial again
    DIR/best/         the best trial's run directory (best.npz, config.toml, ...): `recgrad evaluate
                      --run DIR/best` and `recgrad recommend --run DIR/best` work on it
    DIR/trials.csv    one row per trial: number, state, value, seconds, settings
    DIR/search.png    the metric of each trial over time with the best so far, and the settings'
                      importances (Optuna's fANOVA) once enough trials finished

Where `recgrad train` refits (`recgrad.train.refit`: by default on data of at most 250,000 training
interactions; `--refit true|false` decides), DIR/best holds the best trial refit on train +
validation for its selected number of epochs, and the test metrics of both models. The refit is
part of the budget: once a trial has finished, the search stops early enough to leave the best
trial's time for it (`_refit_seconds`); if even that is not left, DIR/best
keeps the selected model and says so.
"""

import csv
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

from recgrad.train import settings as run_settings
from recgrad.train.refit import refit_run, wants_refit

DEFAULT_BUDGET = "300"
STUDY_NAME = "recgrad-tune"
FINISH_SECONDS = 5.0  # what the end takes besides a refit: trials.csv, the figure, copying the best run


class TuneError(ValueError):
    """A tune request that cannot run (one line)."""


def add_arguments(parser):
    parser.add_argument("--data", required=True, help="a data folder or file (as recgrad train --data)")
    parser.add_argument("--format", help="the data's format (default: detected)")
    parser.add_argument("--budget", default=DEFAULT_BUDGET,
                        help="time for the whole search: seconds, or with a unit (90s, 5m, 1h); default 300")
    parser.add_argument("--trials", help="stop after this many trials (default: only the budget)")
    parser.add_argument("--seed", default="0", help="seed of the sampler and of every trial (default 0)")
    parser.add_argument("--metric", help="the validation metric to maximise (default recall@20)")
    parser.add_argument("--model", default="mf", help="the model (default mf; mf and two-tower are searched)")
    parser.add_argument("--epochs", help="epochs of a trial (default: recgrad train's, which follow the drawn "
                                         "optimizer)")
    parser.add_argument("--threads", help="threads of each trial (default: all cores)")
    parser.add_argument("--refit", help="refit the best trial on train + validation (true or false; default: "
                                        "recgrad train's, true on data of at most 250,000 training interactions)")
    parser.add_argument("--out", help="the study's folder (default runs/tune-<date-time>)")
    parser.add_argument("--resume", action="store_true", help="continue the study in --out")


def parse_budget(text):
    """Seconds from "300", "90s", "5m", "1.5h"; TuneError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not match or float(match.group(1)) <= 0:
        raise TuneError(f"--budget: expected seconds or a number with s, m or h (e.g. 300, 5m), got {str(text)[:40]!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def suggest(trial, given):
    """The settings of one trial: the settings `given` (the user's flags and the tuner's own) with every
    searched setting drawn by `trial`; the rest is left to the defaults (resolved per trial, so a
    derived default follows the drawn settings)."""
    values = dict(given)
    searched = [setting for setting in run_settings.SETTINGS if setting.search is not None]
    for setting in searched:
        if not setting.applies:
            values[setting.name] = _draw(trial, setting)
    if values.get("model", run_settings.BY_NAME["model"].default) != "mf" and values["optimizer"] == "hogwild":
        values["optimizer"] = "sparse_adam"  # hogwild trains MF only
    for setting in searched:  # those that apply only with some values of the others: e.g. the temperature
        if setting.applies and all(values.get(other, run_settings.BY_NAME[other].default) in allowed
                                   for other, allowed in setting.applies.items()):
            values[setting.name] = _draw(trial, setting)
    if values["optimizer"] == "hogwild":
        values.pop("batch_size", None)
    return values


def default_trial(defaults):
    """{name: value} of the searched settings as `defaults` (resolved settings) has them, where the
    value lies in the search space (Optuna's enqueue_trial: the first trial runs the defaults)."""
    params = {}
    for setting in run_settings.SETTINGS:
        value = defaults.get(setting.name)
        if setting.search is None or value is None:
            continue
        kind, *bounds = setting.search
        inside = value in bounds[0] if kind == "choice" else bounds[0] <= value <= bounds[1]
        if inside:
            params[setting.name] = value
    return params


def _draw(trial, setting):
    kind, *bounds = setting.search
    if kind == "log":
        return trial.suggest_float(setting.name, bounds[0], bounds[1], log=True)
    if kind == "int_log":
        return trial.suggest_int(setting.name, bounds[0], bounds[1], log=True)
    if kind == "linear":
        return trial.suggest_float(setting.name, bounds[0], bounds[1])
    return trial.suggest_categorical(setting.name, list(bounds[0]))


class _Report:
    """A Trainer callback: the validation metric after each evaluation goes to Optuna; a trial
    that Optuna prunes, or whose next epoch would end past the search's deadline (`clock.deadline`,
    read live: a refit's reserve may move it), stops after the current epoch."""

    def __init__(self, trial, clock):
        self.trial, self.clock, self.pruned = trial, clock, False
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, trainer, record):
        if trainer.metric in record:
            self.trial.report(record[trainer.metric], record["epoch"])
            if self.trial.should_prune():
                self.pruned = trainer.stop_training = True
        now = time.monotonic()
        if now + (now - self.epoch_started) >= self.clock.deadline:
            trainer.stop_training = True
        self.epoch_started = now


def run(args):
    from recgrad import cli

    try:
        import optuna
    except ModuleNotFoundError:
        raise cli.UsageError("recgrad tune needs optuna: pip install optuna") from None
    try:
        budget = parse_budget(args.budget)
        trials = None if args.trials is None else run_settings.check_value("epochs", args.trials)
        if trials == 0:
            raise TuneError("--trials: expected an int >= 1, got 0")
        refit = None if args.refit is None else run_settings.check_value("refit", args.refit)
    except (TuneError, run_settings.SettingError) as error:
        raise cli.UsageError(cli._cli_words(str(error)).replace("--epochs", "--trials")) from None
    deadline = time.monotonic() + budget
    flags = {"data": args.data, "format": args.format, "seed": args.seed, "metric": args.metric,
             "model": args.model, "epochs": args.epochs, "threads": args.threads}
    given = {key: value for key, value in flags.items() if value is not None}
    given["selection"] = "validation"  # no early stopping: a cosine schedule's best epoch is late; the pruner cuts
    if given.get("data", "synthetic") != "synthetic":
        given["data"] = os.path.abspath(given["data"])
    base = cli.resolve_config({}, given)
    out = Path(args.out or os.path.join("runs", "tune-" + time.strftime("%Y%m%d-%H%M%S")))
    storage_file = out / "study.db"
    if storage_file.exists() and not args.resume:
        raise cli.UsageError(f"--out: {out} already holds a study; pass --resume to continue it or choose another "
                             "--out")
    if args.resume and not storage_file.exists():
        raise cli.UsageError(f"--resume: {out} holds no study (no study.db); run without --resume to start one")
    limits = cli.set_threads(base["threads"])
    try:
        dataset = cli.load_dataset(base)
        if dataset.validation is None:
            print("recgrad: warning: the data is too small for a validation split (no user has enough training "
                  "interactions to hold some out); trials select on the test set", file=sys.stderr)
            given["selection"] = "test"
        out.mkdir(parents=True, exist_ok=True)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            study_name=STUDY_NAME, storage=f"sqlite:///{storage_file}", direction="maximize",
            load_if_exists=args.resume,
            sampler=optuna.samplers.TPESampler(seed=base["seed"]),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))
        if not study.trials:
            study.enqueue_trial(default_trial(base))  # the first trial is the defaults: tuning starts from them
        done = sum(t.state.is_finished() for t in study.trials)
        remaining = None if trials is None else max(trials - done, 0)
        refit = wants_refit({**base, "selection": given["selection"], "refit": refit}, dataset)
        objective = _Objective(given, dataset, out, deadline, optuna)
        reserve = _RefitReserve(objective, deadline, optuna) if refit else None
        if remaining != 0:
            study.optimize(objective, n_trials=remaining, timeout=max(deadline - time.monotonic(), 0.0),
                           catch=(ValueError,), callbacks=[_progress] + ([reserve] if reserve else []))
        return _finish(study, out, base, optuna, dataset if refit else None, deadline)
    finally:
        if limits is not None:
            limits.restore_original_limits()


class _Objective:
    def __init__(self, given, dataset, out, deadline, optuna):
        self.given, self.dataset, self.out, self.deadline, self.optuna = given, dataset, out, deadline, optuna

    def __call__(self, trial):
        from recgrad import cli
        from recgrad.train import Trainer

        values = suggest(trial, self.given)
        run_dir = self.out / "trials" / str(trial.number)
        values["out"] = str(run_dir)
        config = cli.resolve_config({}, {k: v for k, v in values.items() if v is not None})
        model = cli.build_model(config, self.dataset.n_users, self.dataset.n_items, self.dataset.train)
        report = _Report(trial, self)
        trainer = Trainer(model, out_dir=str(run_dir), progress=False, callbacks=[report],
                          **{name: config[name] for name in run_settings.trainer_settings()})
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        cli.write_toml(run_dir / "config.toml", config)
        start = time.monotonic()
        result = trainer.fit(self.dataset)
        value = result["best_value"]
        if value is None or not math.isfinite(value):
            raise self.optuna.TrialPruned()
        trial.set_user_attr("seconds", time.monotonic() - start)
        trial.set_user_attr("best_epoch", result["best_epoch"])
        trial.set_user_attr("value", value)
        trial.set_user_attr("test", result["test_metrics"] or {})
        trial.set_user_attr("topk", result["topk"])
        trial.set_user_attr("epochs_run", result["epochs_run"])
        if report.pruned:
            raise self.optuna.TrialPruned()
        return value


class _RefitReserve:
    """An Optuna callback: after each trial, move the search's deadline (the objective's) to leave the
    best finished trial's time for its refit, and stop the study once that deadline has passed."""

    def __init__(self, objective, deadline, optuna):
        self.objective, self.deadline, self.optuna = objective, deadline, optuna

    def __call__(self, study, trial):
        complete = [t for t in study.trials if t.state == self.optuna.trial.TrialState.COMPLETE]
        if complete:
            best = max(complete, key=lambda t: t.value)
            self.objective.deadline = self.deadline - _refit_seconds(best) - FINISH_SECONDS
        if time.monotonic() >= self.objective.deadline:
            study.stop()


def _refit_seconds(trial):
    """What refitting a finished trial should take: its time, scaled to its selected epoch (a refit
    stops there and evaluates nothing; it trains on about a tenth more interactions)."""
    epochs = max(trial.user_attrs.get("epochs_run") or 1, 1)
    chosen = min(trial.user_attrs.get("best_epoch") or epochs, epochs)
    return trial.user_attrs.get("seconds", 0.0) * 1.1 * chosen / epochs


def _progress(study, trial):
    """One line per trial once Optuna has stored it (so a line printed is a trial a resume keeps)."""
    value = trial.user_attrs.get("value")
    shown = "no evaluation" if value is None else f"{value:.4f} (epoch {trial.user_attrs.get('best_epoch')}, " \
        f"{trial.user_attrs.get('seconds', 0.0):.1f} s)"
    print(f"recgrad tune: trial {trial.number} {trial.state.name.lower()}: {shown} " + _settings_text(trial.params),
          file=sys.stderr)


def _settings_text(params):
    return " ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                    for key, value in params.items())


def _finish(study, out, base, optuna, refit_dataset, deadline):
    """trials.csv, search.png, DIR/best (refit on `refit_dataset` when given and the budget has room
    for it), DIR/best.toml and the final table."""
    from recgrad import cli
    from recgrad.evaluation import format_metrics_table

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    _write_trials_csv(study, out / "trials.csv")
    _plot(study, complete, out / "search.png", optuna)
    if not complete:
        raise cli.UsageError(f"--budget: no trial finished within the budget; give a longer --budget (the study in "
                             f"{out} continues with --resume)")
    best = study.best_trial
    best_dir = out / "best"
    if best_dir.exists():
        shutil.rmtree(best_dir)
    shutil.copytree(out / "trials" / str(best.number), best_dir, ignore=shutil.ignore_patterns(".lock"))
    config = cli.read_toml(best_dir / "config.toml")
    config["out"] = str(best_dir)
    refit = refit_dataset is not None and deadline - time.monotonic() >= _refit_seconds(best)
    if refit_dataset is not None:
        config["refit"] = refit
    cli.write_toml(best_dir / "config.toml", config)
    recipe = {key: value for key, value in config.items() if key not in ("out", "threads")}
    cli.write_toml(out / "best.toml", recipe)
    metric = base["metric"] or "recall@20"
    print(f"best of {len(complete)} finished trials ({len(study.trials)} in all): trial {best.number}, validation "
          f"{metric} {best.value:.4f} at epoch {best.user_attrs.get('best_epoch')}")
    print("settings: " + _settings_text(best.params))
    tests = {f"test, trial {best.number}": best.user_attrs["test"]} if best.user_attrs.get("test") else {}
    if refit:
        print(f"recgrad tune: refitting trial {best.number} on train + validation for "
              f"{best.user_attrs['best_epoch']} epochs into {best_dir}", file=sys.stderr)
        values = cli.resolve_config({key: value for key, value in config.items() if key != "refit"}, {})
        result = refit_run(values, refit_dataset, {"best_epoch": best.user_attrs["best_epoch"], "topk":
                           best.user_attrs.get("topk") or [20], "test_metrics": best.user_attrs.get("test")},
                           str(best_dir))
        if result["test_metrics"]:
            tests[f"test, trial {best.number} refit"] = result["test_metrics"]
    elif refit_dataset is not None:
        print("recgrad tune: no time left in the budget to refit the best trial; its selected model is the one in "
              f"{best_dir}", file=sys.stderr)
    if tests:
        print(format_metrics_table(tests))
        print("on the test split, evaluated once (never used by the search)")
    print(f"recipe: {out / 'best.toml'}; run directory: {best_dir}")
    return 0


def _write_trials_csv(study, path):
    names = sorted({name for trial in study.trials for name in trial.params})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "state", "value", "seconds", "best_epoch", *names])
        for trial in study.trials:
            writer.writerow([trial.number, trial.state.name.lower(), trial.value, trial.user_attrs.get("seconds"),
                             trial.user_attrs.get("best_epoch"), *[trial.params.get(name) for name in names]])


def _plot(study, complete, path, optuna):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    progress, importance = figure.subplots(1, 2)
    finished = sorted(complete, key=lambda t: t.datetime_complete)
    if finished:
        start = min(t.datetime_start for t in study.trials if t.datetime_start is not None)
        minutes = [(t.datetime_complete - start).total_seconds() / 60 for t in finished]
        values = [t.value for t in finished]
        best_so_far = [max(values[: i + 1]) for i in range(len(values))]
        progress.plot(minutes, values, "o", label="trial")
        progress.step(minutes, best_so_far, where="post", color="green", label="best so far")
        progress.legend(loc="lower right")
    progress.set(xlabel="minutes", ylabel="validation metric", title="the search")
    importance.set(title="importance of each setting (fANOVA)")
    if len(complete) >= 4:
        try:
            scores = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):
            scores = {}
        names = list(scores)[:8]
        importance.barh(names[::-1], [scores[name] for name in names[::-1]])
    else:
        importance.text(0.5, 0.5, "needs 4 finished trials", ha="center", va="center")
    figure.savefig(path, format="png")
