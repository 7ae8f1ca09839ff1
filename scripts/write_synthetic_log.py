"""Write a large interaction log (TSV `user<TAB>item<TAB>timestamp`, a header) for out-of-core measurements.

The log is `copies` copies of one `recgrad.data.synthetic` set (its train and test interactions,
power-law item popularity), each copy with its own user ids, so the item popularity of the whole
log is the synthetic set's Zipf law while the file grows to any size in bounded memory. The
timestamp column counts the lines (seconds from 1.6e9), as a log's would grow.

    python scripts/write_synthetic_log.py OUT.tsv --copies 100 [--users 4000 --items 5000 --per-user 60]
"""

import argparse

import numpy as np

from recgrad.data import synthetic


def write_log(path, copies, n_users, n_items, per_user, seed=0):
    data = synthetic(n_users=n_users, n_items=n_items, interactions_per_user=per_user, seed=seed)
    matrix = (data.train + data.test).tocsr()
    users = np.repeat(np.arange(n_users), np.diff(matrix.indptr))
    items = np.char.add(np.char.add(b"\t", matrix.indices.astype("S")), b"\t")
    with open(path, "wb") as handle:
        handle.write(b"user\titem\ttimestamp\n")
        for copy in range(copies):
            stamps = (1_600_000_000 + copy * matrix.nnz + np.arange(matrix.nnz)).astype("S")
            lines = np.char.add(np.char.add((users + copy * n_users).astype("S"), items), np.char.add(stamps, b"\n"))
            handle.write(b"".join(lines.tolist()))
    return copies * matrix.nnz


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--copies", type=int, required=True)
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--per-user", type=int, default=60)
    args = parser.parse_args()
    rows = write_log(args.out, args.copies, args.users, args.items, args.per_user)
    print(f"{args.out}: {rows} interactions")


if __name__ == "__main__":
    main()
