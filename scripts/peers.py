"""Tuned peers for recgrad's default run, on the split `recgrad train --data PATH` makes, scored by an
independent evaluator. A reproduction script, not part of the library (needs torch, implicit, optuna).

    python scripts/peers.py tune --data PATH --out DIR [--trials 30] [--peers implicit,torch] [--shuffle-test]
    python scripts/peers.py score --run RUN_DIR --data PATH [--peers DIR/NAME.json ...]

tune: implicit's BPR (implicit.cpu.bpr.BayesianPersonalizedRanking) and a plain PyTorch MF-BPR, each tuned by
Optuna TPE (seeded) over lr, regularisation, factors and iterations/epochs. A trial trains on train minus a
validation slice (10% of each user's training interactions, `recgrad.data.splits.split_validation`, the slice
recgrad's default run selects on) and is scored on that slice; the best configuration is refit on the whole train
and scored once on test. Writes DIR/NAME.json (NAME: the data folder's name) and prints a table.
--shuffle-test replaces each test user's items by as many random items outside the user's train before anything
runs: the trials and the chosen configurations must come out identical, only the test figures change.

score: runs `recgrad recommend --run RUN_DIR -n 20`, maps its raw ids back to the split and prints Recall@20 and
NDCG@20 from the same evaluator, and, given a tune JSON, the percentage of each peer's figure.

The evaluator is written here on purpose and shares no code with recgrad.metrics / recgrad.evaluation; it uses
recgrad's definitions so the numbers compare (docs/evaluation.md): Recall@K = hits@K / R, NDCG@K = DCG@K / IDCG@K
with IDCG over min(K, R) positions, means over the users with R > 0, training items never recommended.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

K = 20


# ------------------------------------------------------------------------------------- evaluator
def top_k_unseen(scores, seen, k=K):
    """(n, k) best item ids of each row of `scores` (n, n_items), skipping the items stored in the aligned
    CSR rows of `seen`; best first, equal scores by lower id; -1 where fewer than k items are left."""
    scores = np.array(scores, dtype=np.float64)
    rows, cols = seen.nonzero()
    scores[rows, cols] = -np.inf
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=-1)
    ranked = np.take_along_axis(part, order, axis=1)
    ranked[np.take_along_axis(part_scores, order, axis=1) == -np.inf] = -1
    return ranked


def recall_ndcg(ranked, heldout, k=K):
    """(mean Recall@k, mean NDCG@k, number of users) of the rankings `ranked` (n, >= k; -1 pads) against the
    aligned CSR rows of `heldout`, over the rows with at least one held-out item."""
    ranked = np.asarray(ranked)[:, :k]
    n_relevant = np.diff(heldout.indptr)
    hits = np.array([np.isin(row, heldout.indices[heldout.indptr[r]:heldout.indptr[r + 1]])
                     for r, row in enumerate(ranked)], dtype=bool).reshape(ranked.shape)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    users = n_relevant > 0
    ideal = np.cumsum(discount)[np.minimum(n_relevant[users], k) - 1]
    recall = hits[users].sum(axis=1) / n_relevant[users]
    ndcg = (hits[users] @ discount) / ideal
    return float(recall.mean()), float(ndcg.mean()), int(users.sum())


def evaluate_factors(user_factors, item_factors, seen, heldout, k=K, block=512):
    """{"recall", "ndcg", "users"} of dot-product scores over the users with held-out items."""
    users = np.flatnonzero(np.diff(heldout.indptr))
    ranked = np.vstack([top_k_unseen(user_factors[b] @ item_factors.T, seen[b], k)
                        for b in np.array_split(users, max(1, -(-users.size // block)))])
    recall, ndcg, n = recall_ndcg(ranked, heldout[users], k)
    return {"recall": recall, "ndcg": ndcg, "users": n}


# ------------------------------------------------------------------------------------------ data
def load_split(path, seed=0):
    """The data exactly as `recgrad train --data PATH` splits it with its defaults (random 80/20 per user,
    seed 0, every rating an interaction) when the files hold no test set."""
    from recgrad.data import load, with_test_split

    dataset = load(path)
    if dataset.test is None:
        dataset = with_test_split(dataset, method="random", ratio=0.2, seed=seed)
    return dataset


def shuffled_test(train, test, seed):
    """Each user's test items replaced by as many distinct random items outside the user's train."""
    rng = np.random.default_rng(seed)
    n_items = train.shape[1]
    rows = []
    for user in range(test.shape[0]):
        count = test.indptr[user + 1] - test.indptr[user]
        candidates = np.setdiff1d(np.arange(n_items), train.indices[train.indptr[user]:train.indptr[user + 1]])
        rows.append(np.sort(rng.choice(candidates, size=count, replace=False)))
    indptr = np.concatenate([[0], np.cumsum([r.size for r in rows])])
    indices = np.concatenate(rows).astype(np.int64)
    return sp.csr_matrix((np.ones(indices.size, np.float32), indices, indptr), shape=test.shape)


# ----------------------------------------------------------------------------------------- peers
def fit_implicit(train, params, seed, checkpoint=None, every=50):
    """implicit's BPR (hogwild SGD). One thread: with a seed its result is then reproducible, which the
    --shuffle-test comparison needs. Its factors include a bias column (user side 1, item side the bias).
    checkpoint(iteration, user_factors, item_factors) is called after every `every` iterations."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    model = BayesianPersonalizedRanking(factors=params["factors"], learning_rate=params["lr"],
                                        regularization=params["reg"], iterations=params["iterations"],
                                        num_threads=1, random_state=seed)

    def callback(iteration, *_):
        if checkpoint is not None and (iteration + 1) % every == 0:
            checkpoint(iteration + 1, np.asarray(model.user_factors), np.asarray(model.item_factors))

    model.fit(train.astype(np.float32).tocsr(), show_progress=False, callback=callback)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)


def fit_torch(train, params, seed, checkpoint=None, every=10, batch_size=8192, init_std=0.1):
    """MF-BPR in PyTorch: user and item nn.Embedding tables (N(0, init_std) init), per training interaction
    (u, i) one negative j uniform over the items u has not interacted with, loss
    mean softplus(-(x_ui - x_uj)) + reg * (|e_u|^2 + |e_i|^2 + |e_j|^2) / (2 * batch), Adam on the dense tables,
    shuffled minibatches. checkpoint(epoch, user_factors, item_factors) is called after every `every` epochs."""
    import torch

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    n_users, n_items = train.shape
    users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(train.indptr))
    items = train.indices.astype(np.int64)
    positive_keys = np.sort(users * n_items + items)
    user_table = torch.nn.Embedding(n_users, params["factors"])
    item_table = torch.nn.Embedding(n_items, params["factors"])
    for table in (user_table, item_table):
        torch.nn.init.normal_(table.weight, std=init_std)
    optimizer = torch.optim.Adam([user_table.weight, item_table.weight], lr=params["lr"])
    factors = lambda: (user_table.weight.detach().numpy().copy(), item_table.weight.detach().numpy().copy())  # noqa: E731
    for epoch in range(1, params["epochs"] + 1):
        order = rng.permutation(users.size)
        for start in range(0, users.size, batch_size):
            batch = order[start:start + batch_size]
            u, i = users[batch], items[batch]
            j = rng.integers(n_items, size=u.size)
            while True:  # redraw the negatives that are positives of their user
                keys = u * n_items + j
                clash = positive_keys[np.minimum(np.searchsorted(positive_keys, keys), positive_keys.size - 1)] == keys
                if not clash.any():
                    break
                j[clash] = rng.integers(n_items, size=int(clash.sum()))
            e_u = user_table(torch.from_numpy(u))
            e_i, e_j = item_table(torch.from_numpy(i)), item_table(torch.from_numpy(j))
            margin = (e_u * (e_i - e_j)).sum(dim=1)
            penalty = (e_u.pow(2).sum() + e_i.pow(2).sum() + e_j.pow(2).sum()) / (2 * u.size)
            loss = torch.nn.functional.softplus(-margin).mean() + params["reg"] * penalty
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if checkpoint is not None and epoch % every == 0:
            checkpoint(epoch, *factors())
    return factors()


def implicit_space(trial, args):
    return {"lr": trial.suggest_float("lr", 1e-3, 0.3, log=True),
            "reg": trial.suggest_float("reg", 1e-5, 0.1, log=True),
            "factors": trial.suggest_categorical("factors", [32, 64, 128]),
            "iterations": trial.suggest_int("iterations", 50, args.max_iterations, step=50)}


def torch_space(trial, args):
    return {"lr": trial.suggest_float("lr", 3e-4, 5e-2, log=True),
            "reg": trial.suggest_float("reg", 1e-6, 0.1, log=True),
            "factors": trial.suggest_categorical("factors", [32, 64, 128]),
            "epochs": trial.suggest_int("epochs", 10, args.max_epochs, step=10)}


# name: (label, search space, fit, the length parameter, checkpoint spacing in its units)
PEERS = {"implicit": ("implicit BPR", implicit_space, fit_implicit, "iterations", 50),
         "torch": ("PyTorch MF-BPR", torch_space, fit_torch, "epochs", 10)}


# ----------------------------------------------------------------------------------------- modes
def tune_peer(name, dataset, test, args):
    """Optuna TPE on the validation slice (carved from train), then one refit on all of train scored on test.

    A trial trains for its sampled length and is scored on validation every few iterations/epochs (the
    checkpoints); its value is its best checkpoint, whose length becomes the trial's length (early stopping on
    validation). Optuna's median rule stops a trial whose checkpoint falls below the median of the earlier trials
    at the same length (after 5 complete trials)."""
    import optuna

    from recgrad.data.splits import split_validation

    label, space, fit, length, every = PEERS[name]
    fit_train, validation = split_validation(dataset.train, ratio=0.1, seed=args.seed)
    trials = []

    def objective(trial):
        params = space(trial, args)
        started = time.perf_counter()
        curve = {}

        def checkpoint(step, user_factors, item_factors):
            curve[step] = evaluate_factors(user_factors, item_factors, fit_train, validation)
            trial.report(curve[step]["recall"], step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        pruned = False
        try:
            fit(fit_train, params, args.seed, checkpoint=checkpoint, every=every)
        except optuna.TrialPruned:
            pruned = True
        best_step = max(curve, key=lambda step: curve[step]["recall"])
        trials.append({"number": trial.number, "params": {**params, length: best_step}, "sampled": params,
                       "validation": curve[best_step], "curve": {step: s["recall"] for step, s in curve.items()},
                       "pruned": pruned, "seconds": time.perf_counter() - started})
        print(f"  {name} trial {trial.number}: {params} best {length} {best_step}: validation recall@{K} "
              f"{curve[best_step]['recall']:.4f} ndcg@{K} {curve[best_step]['ndcg']:.4f}"
              f"{' (pruned)' if pruned else ''} ({trials[-1]['seconds']:.0f} s)", flush=True)
        if pruned:
            raise optuna.TrialPruned()
        return curve[best_step]["recall"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
    started = time.perf_counter()
    study.optimize(objective, n_trials=args.trials, timeout=args.timeout)
    tuning = time.perf_counter() - started
    best = next(t for t in trials if t["number"] == study.best_trial.number)
    started = time.perf_counter()
    user_factors, item_factors = fit(dataset.train, best["params"], args.seed)
    refit = time.perf_counter() - started
    scores = evaluate_factors(user_factors, item_factors, dataset.train, test)  # the only look at test
    return {"peer": label, "best_params": best["params"], "validation_recall": best["validation"]["recall"],
            "validation_ndcg": best["validation"]["ndcg"], "test_recall": scores["recall"],
            "test_ndcg": scores["ndcg"], "test_users": scores["users"], "trials": len(trials),
            "pruned": sum(t["pruned"] for t in trials), "tuning_seconds": tuning, "refit_seconds": refit,
            "seconds": tuning + refit, "history": trials}


def cmd_tune(args):
    dataset = load_split(args.data)
    test = shuffled_test(dataset.train, dataset.test, args.seed + 1) if args.shuffle_test else dataset.test
    name = "-".join([Path(args.data).resolve().name, *([] if set(args.peers) == set(PEERS) else args.peers),
                     *(["shuffled-test"] if args.shuffle_test else [])])
    result = {"data": str(args.data), "k": K, "shuffle_test": args.shuffle_test, "trials": args.trials,
              "timeout": args.timeout, "max_epochs": args.max_epochs, "max_iterations": args.max_iterations,
              "seed": args.seed, "threads": args.threads,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": _commit(), "peers": {}}
    for peer in args.peers:
        result["peers"][peer] = tune_peer(peer, dataset, test, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp") as handle:
        json.dump(result, handle, indent=1)
    os.replace(handle.name, out / f"{name}.json")
    print(f"\n{name}: {out / f'{name}.json'}")
    print(f"{'peer':<16} {'best params':<72} {'val R@20':>8} {'test R@20':>9} {'test N@20':>9} {'seconds':>8}")
    for peer in result["peers"].values():
        params = ", ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                           for key, value in peer["best_params"].items())
        print(f"{peer['peer']:<16} {params:<72} {peer['validation_recall']:>8.4f} {peer['test_recall']:>9.4f} "
              f"{peer['test_ndcg']:>9.4f} {peer['seconds']:>8.0f}")
    return 0


def recommended_ranking(run, dataset, n=K):
    """The run's `recgrad recommend -n n` lists as internal ids, (n_users, n) with -1 padding."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "recommendations.tsv"
        subprocess.run([sys.executable, "-c", "from recgrad.cli import main; main()", "recommend", "--run", str(run),
                        "-n", str(n), "--output", str(output)], check=True)
        lines = output.read_text().splitlines()
    user_index = {str(raw): index for index, raw in enumerate(dataset.user_ids)}
    item_index = {str(raw): index for index, raw in enumerate(dataset.item_ids)}
    ranked = np.full((dataset.n_users, n), -1, dtype=np.int64)
    listed = np.zeros(dataset.n_users, dtype=bool)
    for line in lines:
        user, _, items = line.partition("\t")
        row = [item_index[item] for item in items.split()]
        ranked[user_index[user], :len(row)] = row
        listed[user_index[user]] = True
    if not listed.all():
        raise SystemExit(f"{run}: recommend listed {listed.sum()} of {dataset.n_users} users")
    return ranked


def cmd_score(args):
    config = tomllib.loads((Path(args.run) / "config.toml").read_text())
    if Path(config.get("data", "")).resolve() != Path(args.data).resolve():
        raise SystemExit(f"{args.run}: was trained on {config.get('data')!r}, not on {args.data}")
    for key, default in (("split", "random"), ("test_ratio", 0.2), ("seed", 0), ("min_rating", None)):
        if config.get(key, default) != default:
            raise SystemExit(f"{args.run}: {key} = {config[key]!r}; this script scores the default split only")
    dataset = load_split(args.data)
    ranked = recommended_ranking(args.run, dataset)
    users = np.flatnonzero(np.diff(dataset.test.indptr))
    ranked = ranked[users]
    seen = dataset.train[users]
    in_train = sum(np.isin(row, seen.indices[seen.indptr[r]:seen.indptr[r + 1]]).sum() for r, row in enumerate(ranked))
    if in_train:
        raise SystemExit(f"{args.run}: {in_train} recommended items are training items of this split; "
                         f"the run was trained on another split of {args.data}")
    recall, ndcg, n_users = recall_ndcg(ranked, dataset.test[users])
    print(f"{'model':<16} {'R@20':>8} {'N@20':>8} {'R@20 %':>8} {'N@20 %':>8}")
    print(f"{'recgrad run':<16} {recall:>8.4f} {ndcg:>8.4f}   ({n_users} test users, {args.run})")
    for path in args.peers:
        peers = json.loads(Path(path).read_text())
        if peers["shuffle_test"] or Path(peers["data"]).resolve() != Path(args.data).resolve():
            shuffled = " (shuffled test)" if peers["shuffle_test"] else ""
            raise SystemExit(f"{path}: measured on {peers['data']}{shuffled}, not on {args.data}")
        for peer in peers["peers"].values():
            print(f"{peer['peer']:<16} {peer['test_recall']:>8.4f} {peer['test_ndcg']:>8.4f} "
                  f"{100 * recall / peer['test_recall']:>7.1f}% {100 * ndcg / peer['test_ndcg']:>7.1f}%")
    return 0


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads (default 1; implicit always runs one, see fit_implicit)")
    modes = parser.add_subparsers(dest="mode", required=True)
    tune = modes.add_parser("tune", help="tune the peers and score them once on test")
    tune.add_argument("--data", required=True, help="a data folder, as recgrad train --data")
    tune.add_argument("--out", required=True, help="folder for NAME.json")
    tune.add_argument("--trials", type=int, default=30, help="Optuna trials per peer (default 30)")
    tune.add_argument("--peers", default="implicit,torch", type=lambda text: text.split(","),
                      help="comma-separated: implicit, torch (default both)")
    tune.add_argument("--max-epochs", type=int, default=100, help="torch: most epochs tried (default 100)")
    tune.add_argument("--max-iterations", type=int, default=300, help="implicit: most iterations tried (default 300)")
    tune.add_argument("--timeout", type=float, help="seconds of tuning per peer: fewer trials when reached")
    tune.add_argument("--seed", type=int, default=0, help="validation slice, TPE, init, negatives (default 0)")
    tune.add_argument("--shuffle-test", action="store_true",
                      help="replace the test items by random non-training items (the choices must not change)")
    score = modes.add_parser("score", help="score a recgrad run's recommendations on the same split")
    score.add_argument("--run", required=True, help="a run directory of recgrad train")
    score.add_argument("--data", required=True, help="the data folder the run was trained on")
    score.add_argument("--peers", nargs="*", default=[],
                       help="JSON files written by the tune mode, for the percentages")
    args = parser.parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        if args.mode == "tune":
            unknown = set(args.peers) - set(PEERS)
            if unknown:
                parser.error(f"--peers: {', '.join(sorted(unknown))} not among {', '.join(PEERS)}")
            return cmd_tune(args)
        return cmd_score(args)


if __name__ == "__main__":
    sys.exit(main())
