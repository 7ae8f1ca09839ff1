"""`recgrad experiment`: run one experiment, list them, or run all and regenerate the findings.

    recgrad experiment --list
    recgrad experiment NAME [--quick] [--out DIR] [--seed S] [--threads N] [--data PATH]
    recgrad experiment all [--quick | --quick-for NAME,...] [--out docs/figures] [--findings PATH] [--data PATH]

An experiment writes its figures and `<NAME>.json` into --out and returns a result dict

    {"name": NAME, "figures": [file names in out], "numbers": {...},
     "claims": [{"claim", "verdict": one of VERDICTS, "evidence", optional "figure", optional "data"}],
     "verdict": a paragraph computed from the numbers}

which is checked here (a malformed result is an error, not a silent row). The experiments that
train recommenders (`USES_RECOMMENDER_DATA`) take the data set of --data, loaded as `recgrad train
--data` loads it, or the built-in synthetic set when none is given; the output says which. `all` runs every
experiment of the registry in order, keeps going when one fails, and writes the findings page
(default: findings.md next to the --out folder, so `--out docs/figures` gives docs/findings.md).
Exit status: 0 on success, 1 when an experiment failed, 2 for a usage error.
"""

import contextlib
import datetime
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

from threadpoolctl import threadpool_limits

from recgrad import experiments, kernels
from recgrad.experiments import findings

VERDICTS = ("holds", "holds with conditions", "does not hold")
DEFAULT_OUT = "experiment-results"


def add_arguments(parser):
    """Fill an argparse parser with the arguments of `recgrad experiment`."""
    parser.add_argument("name", nargs="?", help="experiment to run (see --list), or 'all'")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--quick", action="store_true", help="small, fast version (seconds; used by the tests)")
    parser.add_argument("--quick-for", default="", metavar="NAME,...",
                        help="with 'all': run only these experiments in quick mode")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"folder for figures and JSON (created; default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of BLAS and of the compiled kernels (default 1: the experiments work on "
                             "small arrays, where more threads cost more than they save: 13x slower MLP steps "
                             "with 2 BLAS threads on a loaded 2-core machine)")
    parser.add_argument("--findings", default=None, metavar="PATH",
                        help="with 'all': where to write the findings page (default: findings.md beside --out)")
    parser.add_argument("--data", default=None, metavar="PATH",
                        help="recommender data for the experiments that train recommenders (convergence, "
                             "optimizers, losses), as recgrad train --data takes it (default: the built-in "
                             "synthetic set)")
    return parser


def run(args):
    """Run `recgrad experiment` with parsed arguments; returns the exit status."""
    if args.list:
        if args.name is not None:
            return _usage_error("--list takes no experiment name")
        return _list()
    if args.name is None:
        return _usage_error("give an experiment name, 'all', or --list")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(limited_threads(args.threads))
        except ValueError as error:
            return _usage_error(f"--threads: {error}")
        return _run(args)


@contextlib.contextmanager
def limited_threads(n):
    """Inside the block, BLAS (threadpoolctl) and the compiled kernels (numba) use `n` threads.

    Only BLAS libraries already loaded are limited, as threadpoolctl does: numpy's is loaded by
    recgrad's import. ValueError (from `kernels.set_num_threads`) when n is not in [1, cores].
    """
    with kernels.num_threads(n), threadpool_limits(limits=n, user_api="blas"):
        yield


def _run(args):
    quick_for = [name for name in args.quick_for.split(",") if name]
    unknown = [name for name in quick_for if name not in experiments.names()]
    if unknown:
        return _usage_error(f"--quick-for: unknown experiment(s) {', '.join(unknown)}")
    if args.name != "all":
        if quick_for or args.findings is not None:
            return _usage_error("--quick-for and --findings apply only to 'all'")
        try:
            module = experiments.load(args.name)
        except experiments.ExperimentError as error:
            return _usage_error(str(error), status=2 if args.name not in experiments.names() else 1)
        if args.data is not None and not uses_data(module):
            return _usage_error(f"--data: experiment {args.name!r} trains no recommender and takes no data")
        try:
            data = load_data(args.data)
        except ValueError as error:
            return _usage_error(str(error))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        try:
            result = run_one(module, out, quick=args.quick, seed=args.seed, data=data)
        except Exception:
            traceback.print_exc()
            print(f"recgrad experiment: {args.name} failed", file=sys.stderr)
            return 1
        _print_result(result, out)
        return 0
    return _run_all(args, quick_for)


def uses_data(module):
    """Whether the experiment trains recommenders and so takes a data set (`run(..., data=...)`)."""
    return getattr(module, "USES_RECOMMENDER_DATA", False)


def load_data(path):
    """The data set at `path` as `recgrad train --data` loads it (split 80/20 per user when it has no
    test set), or None for the built-in synthetic set. ValueError names --data and the problem."""
    if path is None:
        return None
    from recgrad.train import settings
    from recgrad.train.build import load_data as load_run_data

    try:
        return load_run_data({**settings.defaults(), "data": path})
    except (FileNotFoundError, ValueError, TypeError) as error:
        raise ValueError(f"--data {path}: {error}") from None


def run_one(module, out, quick=False, seed=0, data=None):
    """Run one experiment module into `out` and check its result; returns the result dict.

    `data` (a recgrad.data.Dataset, or None for the built-in synthetic set) goes to the experiments
    that train recommenders, and the line saying which data they use is printed to stderr.
    """
    start = time.perf_counter()
    if uses_data(module):
        print(f"{module.NAME}: " + data_notice(data), file=sys.stderr, flush=True)
        result = module.run(out, quick=quick, seed=seed, data=data)
    else:
        result = module.run(out, quick=quick, seed=seed)
    seconds = time.perf_counter() - start
    check_result(result, module.NAME, out)
    result = dict(result)
    result["seconds"] = seconds
    result["quick"] = bool(quick)
    result["description"] = module.DESCRIPTION
    return result


def data_notice(data):
    """The line that says which recommender data an experiment trains on."""
    if data is None:
        return ("recommender data: the built-in synthetic set (generated, not real users); "
                "pass --data PATH for real data")
    return f"recommender data: {data.name} ({data.n_users} users, {data.n_items} items)"


def check_result(result, name, out):
    """Raise ExperimentError unless `result` follows the contract of the module doc."""
    def fail(message):
        raise experiments.ExperimentError(f"experiment {name!r} returned a malformed result: {message}")

    if not isinstance(result, dict):
        fail(f"expected a dict, got {type(result).__name__}")
    missing = [key for key in ("name", "figures", "numbers", "claims", "verdict") if key not in result]
    if missing:
        fail(f"missing keys {missing}")
    if result["name"] != name:
        fail(f"name is {result['name']!r}")
    for figure in result["figures"]:
        if not (Path(out) / figure).is_file():
            fail(f"figure {figure!r} was not written to {out}")
    if not (Path(out) / f"{name}.json").is_file():
        fail(f"{name}.json was not written to {out}")
    for claim in result["claims"]:
        if not {"claim", "verdict", "evidence"} <= set(claim):
            fail(f"a claim lacks claim/verdict/evidence: {claim}")
        if not isinstance(claim.get("data", ""), str):
            fail(f"the data of {claim['claim']!r} must be the name of a data set")
        if claim["verdict"] not in VERDICTS:
            fail(f"verdict {claim['verdict']!r} of {claim['claim']!r} is not one of {VERDICTS}")
        if claim.get("figure") is not None and claim["figure"] not in result["figures"]:
            fail(f"claim {claim['claim']!r} names figure {claim['figure']!r}, which is not among the figures")
    if not isinstance(result["verdict"], str) or not result["verdict"]:
        fail("verdict must be a non-empty paragraph")
    json.dumps(result["numbers"])


def _run_all(args, quick_for):
    try:
        data = load_data(args.data)
    except ValueError as error:
        return _usage_error(str(error))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    findings_path = Path(args.findings) if args.findings is not None else out.resolve().parent / "findings.md"
    results, failures = [], []
    for name in experiments.names():
        quick = args.quick or name in quick_for
        print(f"== {name}{' (quick)' if quick else ''}", file=sys.stderr, flush=True)
        try:
            result = run_one(experiments.load(name), out, quick=quick, seed=args.seed, data=data)
        except Exception as error:
            traceback.print_exc()
            failures.append({"name": name, "error": f"{type(error).__name__}: {error}"})
            continue
        _print_result(result, out)
        results.append(result)
    command = "recgrad experiment all" + (" --quick" if args.quick else "")
    command += f" --quick-for {','.join(quick_for)}" if quick_for and not args.quick else ""
    command += f" --out {args.out}" + (f" --seed {args.seed}" if args.seed else "")
    command += f" --data {args.data}" if args.data is not None else ""
    findings.write(results, failures, findings_path, out, command=command, seed=args.seed, made=_identity())
    print(f"findings written to {findings_path}", file=sys.stderr)
    if failures:
        print("failed: " + ", ".join(f["name"] for f in failures), file=sys.stderr)
        return 1
    return 0


def _identity():
    """"on DATE (UTC) at commit C" for the findings page; the commit only inside a git checkout."""
    made = f"on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return made
    return f"{made} at commit {commit}"


def _print_result(result, out):
    print(f"{result['name']}: {result['seconds']:.1f} s{' (quick)' if result['quick'] else ''}")
    for figure in result["figures"]:
        print(f"  figure {Path(out) / figure}")
    print(f"  numbers {Path(out) / (result['name'] + '.json')}")
    for claim in result["claims"]:
        on = f" (on {claim['data']})" if "data" in claim else ""
        print(f"  [{claim['verdict']}] {claim['claim']}{on}: {claim['evidence']}")
    print(f"  verdict: {result['verdict']}")


def _list():
    for name in experiments.names():
        try:
            description = experiments.load(name).DESCRIPTION
        except experiments.ExperimentError as error:
            description = f"(unavailable: {error})"
        print(f"{name:12s} {description}")
    return 0


def _usage_error(message, status=2):
    print(f"recgrad experiment: error: {message}", file=sys.stderr)
    return status
