"""How close fold-in comes to training, on a recipe's data (the figure in docs/results.md).

    python -m recgrad.serving.foldin_quality --config RECIPE --trained DIR --out DIR2 [--holdout 0.1]

1. DIR is the recipe trained normally (`recgrad train --config RECIPE --out DIR`).
2. A seeded `holdout` fraction of the users with test items loses its training rows; the recipe is
   trained again on the rest into DIR2 (same settings, same seed).
3. Each held-out user is folded into DIR2's model from their training items (`FoldIn` of the
   recipe's loss and L2), and their Recall@20 / NDCG@20 on their test items (their training items
   excluded, `recgrad.evaluation.full_ranking`) is compared with the same users' figures under DIR.
"""

import argparse
import dataclasses
import json
import time

import numpy as np
import scipy.sparse as sp


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recgrad.serving.foldin_quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the recipe TOML")
    parser.add_argument("--trained", required=True, help="the recipe's normal run directory")
    parser.add_argument("--out", required=True, help="run directory of the training without the held-out users")
    parser.add_argument("--holdout", type=float, default=0.1, help="fraction of the test users held out (0.1)")
    parser.add_argument("--threads", type=int, default=1, help="training threads (1)")
    args = parser.parse_args(argv)

    from recgrad.cli import build_model, build_trainer, load_dataset, read_toml, resolve_config, set_threads
    from recgrad.evaluation import full_ranking
    from recgrad.models import load_model
    from recgrad.serving.foldin import FoldIn

    config = resolve_config(read_toml(args.config), {"threads": args.threads, "out": args.out})
    set_threads(args.threads)
    data = load_dataset(config)
    test_users = np.flatnonzero(np.diff(data.test.indptr) > 0)
    rng = np.random.default_rng(config["seed"])
    held = np.sort(rng.choice(test_users, size=int(round(args.holdout * test_users.size)), replace=False))
    keep = np.ones(data.n_users, dtype=bool)
    keep[held] = False
    reduced = dataclasses.replace(data, train=sp.csr_matrix(sp.diags(keep.astype(np.float32)) @ data.train))
    model = build_model(config, data.n_users, data.n_items, reduced.train)
    started = time.perf_counter()
    build_trainer(config, model, args.out).fit(reduced)
    train_seconds = time.perf_counter() - started

    fold = FoldIn.from_run_config(config, model)
    items = model.item_factors()
    started = time.perf_counter()
    folded = np.zeros((data.n_users, items.shape[1]), dtype=items.dtype)
    for user in held:
        folded[user] = model.fold_in(data.train[user].indices, fold, items)
    fold_ms = 1000 * (time.perf_counter() - started) / held.size
    trained = load_model(f"{args.trained}/best.npz")
    trained_users, trained_items = trained.user_factors(), trained.item_factors()
    metrics = {
        "folded": full_ranking(lambda users: folded[users] @ items.T, data.train, data.test, users=held),
        "trained": full_ranking(lambda users: trained_users[users] @ trained_items.T, data.train, data.test,
                                users=held),
    }
    report = {"held_out_users": int(held.size), "train_seconds": round(train_seconds, 1),
              "fold_in_ms_per_user": round(fold_ms, 2), "fold": dataclasses.asdict(fold),
              **{name: {key: round(float(value), 4) for key, value in values.items()}
                 for name, values in metrics.items()}}
    report["ratio"] = {key: round(report["folded"][key] / report["trained"][key], 4) for key in report["trained"]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
