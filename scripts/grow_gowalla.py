"""Growing a run on Gowalla: train on the first 80% of users and items, then continue on all of them.

Writes a filtered copy of the Gowalla LightGCN split (users 0 .. 0.8 U - 1 and items 0 .. 0.8 I - 1,
the interactions between them, and their lines of user_list.txt / item_list.txt) to WORK/gowalla-80,
then runs, with the recipe recipes/gowalla-mf-bpr-dns.toml:

    part   recgrad train --data WORK/gowalla-80 --epochs E1 --out WORK/part
    grown  recgrad train --resume-from WORK/part --data GOWALLA --epochs E2 --out WORK/grown
    full   recgrad train --data GOWALLA --epochs E1+E2 --out WORK/full

and prints the test Recall@20 / NDCG@20 of the three at their selected epochs (the recipe selects
on the test set, the papers' protocol, so these are metrics.jsonl's best records). The grown run
and the full run have trained the same number of epochs in total; the full run's epochs are all on
all the data. The first part's numbers are on its own (smaller) test set.

    python scripts/grow_gowalla.py --work /tmp/grow-gowalla [--data ../shared/data/gowalla]
        [--epochs 30 30] [--threads 2] [--skip-full] [--report-only: the tables of runs already in WORK]
"""

import argparse
import json
import os
import subprocess
import sys

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "recipes", "gowalla-mf-bpr-dns.toml")


def write_part(source, target, fraction):
    """The interactions among the first `fraction` of users and of items, in the LightGCN layout."""
    os.makedirs(target, exist_ok=True)
    lists = {}
    for name in ("user_list.txt", "item_list.txt"):
        with open(os.path.join(source, name)) as handle:
            lists[name] = handle.read().splitlines()
    n_users = int(fraction * (len(lists["user_list.txt"]) - 1))  # a header line, then one line per id
    n_items = int(fraction * (len(lists["item_list.txt"]) - 1))
    for name, count in (("user_list.txt", n_users), ("item_list.txt", n_items)):
        with open(os.path.join(target, name), "w") as handle:
            handle.write("\n".join(lists[name][:count + 1]) + "\n")
    for name in ("train.txt", "test.txt"):
        with open(os.path.join(source, name)) as handle, open(os.path.join(target, name), "w") as out:
            for line in handle:
                fields = line.split()
                if not fields or int(fields[0]) >= n_users:
                    continue
                items = [item for item in fields[1:] if int(item) < n_items]
                out.write(" ".join([fields[0], *items]) + "\n")
    return n_users, n_items


def train(arguments, log):
    command = [sys.executable, "-m", "recgrad.cli", "train", "--config", RECIPE, *arguments]
    print("$ recgrad " + " ".join(command[3:]), flush=True)
    with open(log, "w") as handle:
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT)


def selected_metrics(run):
    """The metrics of the selected epoch: the last record metrics.jsonl marks "best"."""
    with open(os.path.join(run, "metrics.jsonl")) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return [record for record in records if record.get("best")][-1]


def by_user_group(run, n_known_users):
    """Test Recall@20 / NDCG@20 of a run's selected model (best.npz) on the users of the first part
    and on the users only the grown data has."""
    import numpy as np

    from recgrad.cli import read_toml, resolve_config
    from recgrad.evaluation import full_ranking, model_score_fn
    from recgrad.rundir import read_run
    from recgrad.train.build import load_data

    files = read_run(run)
    config = resolve_config(read_toml(os.path.join(run, "config.toml")), {})  # a finished run: no writer to race
    dataset = load_data(config, id_maps=files.id_maps)
    groups = {"known": np.arange(n_known_users), "new": np.arange(n_known_users, dataset.n_users)}
    return {name: full_ranking(model_score_fn(files.model), dataset.train, dataset.test, users=users)
            for name, users in groups.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="a scratch folder for the filtered data and the runs")
    parser.add_argument("--data", default=os.path.join(os.path.dirname(RECIPE), os.pardir, os.pardir, "shared",
                                                       "data", "gowalla"), help="the Gowalla LightGCN folder")
    parser.add_argument("--fraction", type=float, default=0.8, help="share of users and items in the first part")
    parser.add_argument("--epochs", type=int, nargs=2, default=(30, 30), help="epochs before and after growing")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--skip-full", action="store_true", help="do not train the run on all data from the start")
    parser.add_argument("--report-only", action="store_true", help="print the tables of the runs already in --work")
    args = parser.parse_args()
    work, data = os.path.abspath(args.work), os.path.abspath(args.data)
    part_data = os.path.join(work, "gowalla-part")
    first, second = args.epochs
    common = ["--threads", args.threads]
    runs = {"part": os.path.join(work, "part"), "grown": os.path.join(work, "grown"),
            "full": os.path.join(work, "full")}
    if args.report_only:
        n_users = len(selected_ids(os.path.join(part_data, "user_list.txt")))
        report(runs, n_users, first, second)
        return
    n_users, n_items = write_part(data, part_data, args.fraction)
    print(f"first part: users 0..{n_users - 1}, items 0..{n_items - 1} -> {part_data}", flush=True)
    train(["--data", part_data, "--epochs", str(first), "--out", runs["part"], *common],
          os.path.join(work, "part.log"))
    train(["--resume-from", runs["part"], "--data", data, "--epochs", str(second), "--out", runs["grown"],
           *common], os.path.join(work, "grown.log"))
    if not args.skip_full:
        train(["--data", data, "--epochs", str(first + second), "--out", runs["full"], *common],
              os.path.join(work, "full.log"))
    report(runs, n_users, first, second)


def selected_ids(list_file):
    """The id lines of a user_list.txt / item_list.txt (after its header)."""
    with open(list_file) as handle:
        return handle.read().splitlines()[1:]


def report(runs, n_users, first, second):
    """The two Markdown tables of docs/results.md from the runs' directories."""
    print("| run | data | epochs | test Recall@20 | test NDCG@20 |")
    print("|---|---|---:|---:|---:|")
    rows = [("part", "first part", first), ("grown", "all, grown from part", f"{first} + {second}"),
            ("full", "all, from the start", first + second)]
    for name, label, epochs in rows:
        if os.path.exists(os.path.join(runs[name], "metrics.jsonl")):
            metrics = selected_metrics(runs[name])
            print(f"| {name} | {label} | {epochs} | {metrics['recall@20']:.4f} | {metrics['ndcg@20']:.4f} |")
    print(f"\nby users (the first part's {n_users} users, and the others):")
    print("| run | known users Recall@20 | NDCG@20 | new users Recall@20 | NDCG@20 |")
    print("|---|---:|---:|---:|---:|")
    for name in ("grown", "full"):
        if os.path.exists(os.path.join(runs[name], "best.npz")):
            groups = by_user_group(runs[name], n_users)
            cells = " | ".join(f"{groups[g]['recall@20']:.4f} | {groups[g]['ndcg@20']:.4f}" for g in ("known", "new"))
            print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
