"""LightGCN training step: recgrad beside an equivalent PyTorch step, in one process, on the same batches.

    python scripts/bench_lightgcn.py --data ../shared/data/gowalla [--batches 20] [--threads 2]

Both sides do what LightGCN-PyTorch does per batch: propagate the whole (n_users + n_items, 64)
table through K = 3 layers of A_hat, take the layer mean, score (u, i+, i-) by dot products, BPR
plus 1e-4 * 0.5 (|e_u|^2 + |e_i+|^2 + |e_i-|^2) / B on the ego rows, one backward, one dense Adam
step (lr 1e-3). recgrad runs `Trainer.train_batch` (its sampler draws the negatives); PyTorch
autograd runs `torch.sparse.mm` on A_hat as a coalesced COO tensor (the reference code's layout)
and, as a second row, as CSR, with negatives from torch.randint. The batches alternate between the
implementations (a burst of load from another process hits them alike); each row reports the
median seconds per batch and that times the batches of an epoch (ceil(nnz / 2048)), an
extrapolation the output says it is. A second table times the forward propagation alone.
"""

import argparse
import math
import statistics
import time
import warnings

import numpy as np

from recgrad import kernels
from recgrad.data import load
from recgrad.engine import default_engine_set
from recgrad.models import LightGCN
from recgrad.models.lightgcn import propagate
from recgrad.samplers import epoch_batches
from recgrad.train import Trainer

DIM, LAYERS, BATCH, LR, L2 = 64, 3, 2048, 1e-3, 1e-4


def torch_step(torch, adjacency, n_users, n_items, seed=0):
    """A LightGCN-PyTorch training step on `adjacency` (a torch sparse tensor): (users, positives) -> loss."""
    torch.manual_seed(seed)
    user_table = torch.nn.Parameter(torch.empty(n_users, DIM).normal_(std=0.1))
    item_table = torch.nn.Parameter(torch.empty(n_items, DIM).normal_(std=0.1))
    optimizer = torch.optim.Adam([user_table, item_table], lr=LR)

    def step(users, positives):
        users, positives = torch.from_numpy(users), torch.from_numpy(positives)
        negatives = torch.randint(0, n_items, (users.shape[0],))
        layer = torch.cat([user_table, item_table])
        total = layer
        for _ in range(LAYERS):
            layer = torch.sparse.mm(adjacency, layer)
            total = total + layer
        final = total / (LAYERS + 1)
        p, qi, qj = final[users], final[n_users + positives], final[n_users + negatives]
        loss = torch.nn.functional.softplus((p * qj).sum(1) - (p * qi).sum(1)).mean()
        ego = (user_table[users].square().sum() + item_table[positives].square().sum()
               + item_table[negatives].square().sum())
        loss = loss + L2 * 0.5 * ego / users.shape[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def alternate(functions, batches, repeats=1):
    """{name: [seconds per call]}: each function called on each batch, round-robin, after one untimed call."""
    times = {name: [] for name in functions}
    for function in functions.values():
        function(*batches[0])
    for batch in batches[1:] * repeats:
        for name, function in functions.items():
            start = time.perf_counter()
            function(*batch)
            times[name].append(time.perf_counter() - start)
    return times


def report(title, times, per_epoch):
    print(f"\n{title}")
    base = statistics.median(next(iter(times.values())))
    for name, values in times.items():
        median = statistics.median(values)
        epoch = f"  {median * per_epoch:7.1f} s/epoch (extrapolated)" if per_epoch else ""
        print(f"  {name:38s} {median * 1e3:8.1f} ms{epoch}  x{median / base:5.2f} of the first row  "
              f"({len(values)} timed)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a data folder (e.g. the Gowalla LightGCN split)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per implementation (+1 warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="threads of numba and torch (default: all)")
    args = parser.parse_args()
    import torch

    threads = args.threads or kernels.get_num_threads()
    kernels.set_num_threads(threads)
    torch.set_num_threads(threads)
    dataset = load(args.data)
    train = dataset.train.tocsr()
    n_users, n_items = train.shape
    per_epoch = math.ceil(train.nnz / BATCH)
    model = LightGCN(n_users, n_items, dim=DIM, layers=LAYERS, interactions=train, rng=0)
    trainer = Trainer(model, loss="bpr", optimizer="adam", lr=LR, batch_size=BATCH, l2=L2, epoch_sampling="users",
                      epochs=1, progress=False)
    trainer.prepare(dataset)
    batches = []
    for users, positives in epoch_batches(trainer.train, BATCH, np.random.default_rng(0), sampling="users"):
        batches.append((users, positives))
        if len(batches) == args.batches + 1:
            break
    coo = model.adjacency.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    adjacency_coo = torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data), coo.shape,
                                            check_invariants=True).coalesce()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        adjacency_csr = adjacency_coo.to_sparse_csr()
    print(f"{dataset.name}: {n_users} users, {n_items} items, {train.nnz} training interactions, {per_epoch} "
          f"batches of {BATCH} per epoch; dim {DIM}, {LAYERS} layers; {threads} threads; torch {torch.__version__}")

    def numpy_step(users, positives):
        with default_engine_set("numpy"):
            trainer.train_batch(users, positives)

    steps = {
        "recgrad (numba propagation)": trainer.train_batch,
        "torch sparse.mm, COO (the reference)": torch_step(torch, adjacency_coo, n_users, n_items),
        "torch sparse.mm, CSR": torch_step(torch, adjacency_csr, n_users, n_items),
        "recgrad (scipy propagation)": numpy_step,
    }
    report("training step (propagation forward and back, BPR + L2, Adam)", alternate(steps, batches), per_epoch)

    table = np.random.default_rng(0).normal(0.0, 0.1, (n_users + n_items, DIM)).astype(np.float32)
    table_torch = torch.from_numpy(table)

    def torch_propagation(adjacency):
        def run():
            with torch.no_grad():
                layer, total = table_torch, table_torch
                for _ in range(LAYERS):
                    layer = torch.sparse.mm(adjacency, layer)
                    total = total + layer
                return total / (LAYERS + 1)
        return run

    propagations = {
        "recgrad numba layer_mean": lambda: propagate(model.adjacency, table, LAYERS, "compiled"),
        "recgrad scipy (reference)": lambda: propagate(model.adjacency, table, LAYERS, "numpy"),
        "torch sparse.mm COO": torch_propagation(adjacency_coo),
        "torch sparse.mm CSR": torch_propagation(adjacency_csr),
    }
    report("forward propagation alone (3 layers + mean)", alternate(propagations, [()] * (args.batches + 1)), None)


if __name__ == "__main__":
    main()
