"""`recgrad bench`: recgrad beside PyTorch, implicit and a memory-copy probe, in one process.

Every case runs all its implementations in the same process, on the same arrays, with the same
number of threads and the same dtype (float32), and reports the median of several repeats
(taken round-robin over the implementations, so a burst of load from another process hits them
alike). Ratios between rows of one case are what the machine's noise cannot fake; absolute
numbers move with the machine and its load.

Cases (groups selectable with --cases):
    copy         np.copyto of two float32 arrays (1 thread, and N threads on N slices): the
                 memory-bandwidth limit of every elementwise case (8 bytes per element moved).
    activations  forward + backward of sigmoid, tanh, ReLU, GELU (erf and tanh forms), SiLU and
                 softmax (rows of 1000) on 1e7 float32 elements: recgrad's compiled kernel, the
                 NumPy reference (recgrad.activations) and torch autograd. GB/s counts 20 bytes
                 per element (forward reads x and writes y; backward reads dy and x or y and
                 writes dx).
    optim        one step of SGD with momentum, SGD with Nesterov momentum, Adam, Adam with
                 AMSGrad and AdamW on one 10M-parameter tensor and on 100 tensors of 100k:
                 recgrad as constructed by default (the compiled step), the recgrad reference
                 (engine="numpy") and torch fused=True / foreach=True.
                 GB/s counts the arrays each algorithm must read and write (Adam: p, g, m, v
                 read, p, m, v written = 28 bytes per parameter).
    mf           one MF-BPR epoch (dim 64) on the data: recgrad's fused hogwild SGD and fused
                 minibatch Adam, the Trainer (NumPy reference), implicit's BPR, torch with dense
                 Adam and with SparseAdam. Slow implementations run on a fixed number of
                 batches and are extrapolated to an epoch (the row says so).
    eval         full-ranking top-20 of every test user over every item, training items masked:
                 full_ranking with the numba engine (fused mask + top-K), with the numpy engine
                 (the reference) and torch
                 (block matmul + masked topk), on the same factors.
    quality      time-to-quality (not with --quick, only on real data): wall time until MF-BPR
                 reaches Recall@20 0.1291 (NGCF's MF-BPR on Gowalla) and 0.1627 (reczoo's tuned
                 MF-BPR on Gowalla), and implicit's Recall@20 within the same training-time budget.
    defaults     (not with --quick, only on real data) what a user gets with no flags: the wall
                 time and test Recall@20 / NDCG@20 of `recgrad train --data PATH` (a subprocess, as
                 a user starts it: start-up, compilation, validation selection and the final test
                 evaluation included) beside implicit's BPR with its own defaults (fit, then the
                 top 20 of every test user with the training items excluded), back to back.

Data: --data PATH takes a data folder or file as `recgrad train --data` does (format detected from
the file names; data without a test file is split 80/20 per user, seed 0). Without --data the
bench runs on a built-in SYNTHETIC set of Gowalla's shape (users, items, interactions; Zipf item
popularity) and says so: its timings are comparable, its recall means nothing, and the quality
case is skipped. The Gowalla data set (LightGCN's split) is what docs/performance.md measures.

Goals: each comparison the project sets a performance goal for (docs/performance.md) is graded
met / missed in the output.

Threads: --threads N (default: all cores) sets numba's threads (recgrad.kernels.set_num_threads),
torch.set_num_threads, implicit's num_threads, the BLAS pools (threadpoolctl) and the copy
probe's slices; the BLAS libraries found are listed in the output.
"""

import argparse
import datetime
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import scipy
import scipy.sparse as sp
from threadpoolctl import threadpool_info, threadpool_limits

import recgrad
from recgrad import activations as reference_activations
from recgrad import kernels
from recgrad.data import Dataset, load, with_test_split
from recgrad.data.dataset import interactions_to_csr
from recgrad.data.splits import random_holdout
from recgrad.engine import default_engine_set
from recgrad.evaluation import default_block_size, full_ranking
from recgrad.kernels import activations as activation_kernels
from recgrad.models import MF
from recgrad.nn.module import Parameter
from recgrad.train import Trainer
from recgrad.train.compiled_mf import CompiledMFLoop

__all__ = ["add_arguments", "run"]

GROUPS = ("copy", "activations", "optim", "mf", "eval", "quality", "defaults")
GOWALLA_SHAPE = {"users": 29858, "items": 40981, "train": 810128, "test": 217242}
SYNTHETIC = "synthetic"
QUALITY_TARGETS = (0.1291, 0.1627)
ACTIVATION_BYTES = 20  # per element: x, y, dy, x-or-y, dx
COPY_BYTES = 8  # per element: read src, write dst
DIM = 64
BATCH_SIZE = 2048
TOP_K = 20


# --------------------------------------------------------------------------------------- options
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Fill an argparse parser with `recgrad bench`'s options."""
    parser.add_argument("--quick", action="store_true",
                        help="smaller arrays, fewer repeats, MF on part of an epoch, no time-to-quality")
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table and the machine as Markdown")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for recgrad, torch, implicit and BLAS (default: all cores)")
    parser.add_argument("--data", metavar="PATH",
                        help="a data folder or file, as recgrad train --data takes it (default: a built-in "
                             "SYNTHETIC set of Gowalla's shape, for timings only)")
    parser.add_argument("--cases", default=",".join(GROUPS),
                        help=f"comma-separated groups to run, from {','.join(GROUPS)} (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per timing (default 7, --quick 3)")
    parser.add_argument("--quality-seconds", type=float, default=300.0,
                        help="training-time budget per run of the time-to-quality case (default 300)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every size by this (smoke tests; < 1 needs the synthetic data set)")
    return parser


def _check_options(args):
    cases = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = sorted(set(cases) - set(GROUPS))
    if unknown:
        raise ValueError(f"--cases: unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    limit = numba.config.NUMBA_NUM_THREADS
    threads = limit if args.threads is None else args.threads
    if not 1 <= threads <= limit:
        raise ValueError(f"--threads: must be in [1, {limit}] (the machine's cores), got {threads}")
    if args.repeats is not None and args.repeats < 1:
        raise ValueError(f"--repeats: must be at least 1, got {args.repeats}")
    if not 0.0 < args.scale <= 1.0:
        raise ValueError(f"--scale: must be in (0, 1], got {args.scale}")
    if args.scale < 1.0 and args.data is not None and args.data != SYNTHETIC:
        raise ValueError(f"--scale: below 1 ({args.scale:g}) scales the synthetic data set; drop --data {args.data}")
    if args.quick:
        cases = [case for case in cases if case not in ("quality", "defaults")]
    return cases, threads


class Sizes:
    """Every size the cases use, from --quick and --scale."""

    def __init__(self, quick, scale, repeats):
        full = not quick
        self.elements = max(1000, int((1e7 if full else 2e6) * scale))
        self.softmax_width = min(1000, self.elements)
        self.optim_params = max(1000, int((1e7 if full else 2e6) * scale))
        self.optim_tensors = max(2, round((100 if full else 20) * scale))
        self.optim_tensor_size = max(100, int(1e5 * scale))
        self.repeats = repeats or (7 if full else 3)
        self.epoch_repeats = 3 if full else 1
        # slow MF implementations train on this many batches and are extrapolated to an epoch
        self.reference_batches = 400 if full else 60
        self.torch_dense_batches = 150 if full else 20
        self.torch_sparse_batches = 300 if full else 40
        self.eval_users = None if full else 4096


# --------------------------------------------------------------------------------------- timing
def compare(implementations, repeats):
    """Timings {name: [seconds, ...]} of each callable in `implementations`.

    Each callable runs once untimed (compilation, caches, first-step state), then `repeats`
    times, round-robin over the implementations.
    """
    times = {name: [] for name in implementations}
    for function in implementations.values():
        function()
    for _ in range(repeats):
        for name, function in implementations.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


class Results:
    """Rows of the table: one per (case, implementation), with the baseline each case compares to."""

    def __init__(self):
        self.rows = []
        self.notes = []
        self.quality = []
        self.defaults = []

    def add(self, group, case, implementation, kind, times, work, unit, baseline=None, note=""):
        """Record a row; `work` is the amount per call (bytes for GB/s, samples, users)."""
        seconds = statistics.median(times)
        scale = {"GB/s": 1e9, "M samples/s": 1e6, "users/s": 1.0}[unit]
        self.rows.append({
            "group": group, "case": case, "implementation": implementation, "kind": kind,
            "seconds": seconds, "times": [float(t) for t in times], "throughput": work / seconds / scale,
            "unit": unit, "baseline": baseline, "note": note,
        })

    def find(self, case, implementation):
        for row in self.rows:
            if row["case"] == case and row["implementation"] == implementation:
                return row
        return None

    def finish(self):
        """Group the rows by case (in the order the cases ran) and fill each row's speedup over its
        case's baseline row (baseline seconds / row seconds)."""
        first = {}
        for position, row in enumerate(self.rows):
            first.setdefault(row["case"], position)
        self.rows.sort(key=lambda row: first[row["case"]])
        for row in self.rows:
            base = self.find(row["case"], row["baseline"]) if row["baseline"] else None
            row["speedup"] = base["seconds"] / row["seconds"] if base else None


# --------------------------------------------------------------------------------------- machine
def _optional(name):
    try:
        return __import__(name)
    except ImportError:
        return None


def machine_info(threads):
    """CPU model, cores, library versions and the BLAS thread pools, for the report."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    torch, implicit = _optional("torch"), _optional("implicit")
    pools = [{"library": pool.get("internal_api"), "api": pool.get("user_api"), "threads": pool.get("num_threads"),
              "version": pool.get("version"), "file": os.path.basename(pool.get("filepath", ""))}
             for pool in threadpool_info()]
    return {
        "cpu": model, "cores": os.cpu_count(), "threads": threads, "platform": platform.platform(),
        "python": platform.python_version(), "recgrad": recgrad.__version__, "numpy": np.__version__,
        "scipy": scipy.__version__, "numba": numba.__version__,
        "torch": torch.__version__ if torch else None, "implicit": implicit.__version__ if implicit else None,
        "thread_pools": pools,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def set_threads(threads):
    """Give every library the same thread count; returns the threadpoolctl limiter (keep it alive)."""
    kernels.set_num_threads(threads)
    torch = _optional("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return threadpool_limits(limits=threads)


# --------------------------------------------------------------------------------------- copy
def bench_copy(results, sizes, threads):
    """np.copyto of float32 arrays, on one thread and on `threads` slices at once (GIL released)."""
    n = sizes.elements
    source = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    target = np.empty_like(source)
    bounds = np.linspace(0, n, threads + 1).astype(np.int64)
    slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    with ThreadPoolExecutor(threads) as pool:
        def sliced():
            list(pool.map(lambda part: np.copyto(target[part], source[part]), slices))

        times = compare({"np.copyto (1 thread)": lambda: np.copyto(target, source),
                         f"np.copyto ({threads} threads)": sliced}, sizes.repeats)
    case = f"copy {n:.0e} float32"
    for name, measured in times.items():
        results.add("copy", case, name, "probe", measured, COPY_BYTES * n, "GB/s", note="8 bytes/element")


def copy_bandwidth(results):
    """The best copy-probe GB/s of this run (None when the copy group did not run)."""
    values = [row["throughput"] for row in results.rows if row["group"] == "copy"]
    return max(values) if values else None


# --------------------------------------------------------------------------------------- activations
ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu", "gelu_tanh", "silu", "softmax")
ACTIVATION_LABELS = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "ReLU", "gelu": "GELU (erf)",
                     "gelu_tanh": "GELU (tanh)", "silu": "SiLU", "softmax": "softmax (rows of 1000)"}


def reference_activation(name):
    """The NumPy reference forward + backward: (x, dy) -> (y, dx), as recgrad.nn's layers compute them."""
    ra = reference_activations
    if name == "sigmoid":
        def run(x, dy):
            y = ra.sigmoid(x)
            return y, dy * y * (1.0 - y)
    elif name == "tanh":
        def run(x, dy):
            y = ra.tanh(x)
            return y, dy * (1.0 - y * y)
    elif name == "softmax":
        def run(x, dy):
            y = ra.softmax(x, axis=-1)
            return y, ra.softmax_backward(dy, y, axis=-1)
    else:
        forward, derivative = {
            "relu": (ra.relu, ra.relu_grad),
            "gelu": (ra.gelu, ra.gelu_grad),
            "gelu_tanh": (lambda x: ra.gelu(x, "tanh"), lambda x: ra.gelu_grad(x, "tanh")),
            "silu": (ra.silu, ra.silu_grad),
        }[name]

        def run(x, dy):
            return forward(x), dy * derivative(x)
    return run


def kernel_activation(name):
    """recgrad's compiled forward + backward (recgrad.kernels.activations): (x, dy) -> (y, dx)."""
    module = activation_kernels
    kernel_name, params = {"gelu_tanh": ("gelu", {"approximate": "tanh"})}.get(name, (name, {}))
    keeps_output = module.CACHED[kernel_name] == "output"

    def run(x, dy):
        y = module.forward(kernel_name, x, **params)
        return y, module.backward(kernel_name, dy, y if keeps_output else x, **params)
    return run


def torch_activation(torch, name):
    """torch autograd forward + backward of a leaf tensor: (x, dy) -> x.grad."""
    functional = torch.nn.functional
    forward = {
        "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "gelu": functional.gelu,
        "gelu_tanh": lambda t: functional.gelu(t, approximate="tanh"), "silu": functional.silu,
        "softmax": lambda t: torch.softmax(t, dim=-1),
    }[name]

    def run(x, dy):
        x.grad = None
        forward(x).backward(dy)
        return x.grad
    return run


def bench_activations(results, sizes):
    torch = _optional("torch")
    n = sizes.elements
    rng = np.random.default_rng(1)
    x = (3.0 * rng.standard_normal(n, dtype=np.float32))
    dy = rng.standard_normal(n, dtype=np.float32)
    shape = (n // sizes.softmax_width, sizes.softmax_width)
    n = shape[0] * shape[1]  # softmax rows need n divisible by the width; every case uses the same n
    x, dy = x[:n].reshape(shape), dy[:n].reshape(shape)
    if torch is not None:
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        dyt = torch.from_numpy(dy)
    # A process's first few 40 MB allocations page-fault while the allocator grows its heap (measured:
    # 313, 90, 90, 72 ms, then 11 ms per sigmoid fwd+bwd); warm it so no timed case is charged for it.
    warm = kernel_activation(ACTIVATIONS[0])
    for _ in range(6):
        warm(x, dy)
    for name in ACTIVATIONS:
        implementations = {
            "recgrad kernel": functools.partial(kernel_activation(name), x, dy),
            "recgrad reference (NumPy)": functools.partial(reference_activation(name), x, dy),
        }
        if torch is not None:
            implementations["torch autograd"] = functools.partial(torch_activation(torch, name), xt, dyt)
        times = compare(implementations, sizes.repeats)
        baseline = "torch autograd" if torch is not None else "recgrad reference (NumPy)"
        case = f"{ACTIVATION_LABELS[name]} fwd+bwd"
        for impl, measured in times.items():
            kind = "peer" if impl.startswith("torch") else ("kernel" if impl == "recgrad kernel" else "reference")
            results.add("activations", case, impl, kind, measured, ACTIVATION_BYTES * n, "GB/s", baseline)


# --------------------------------------------------------------------------------------- optim
# (label, class name, hyper-parameters, bytes moved per parameter per step)
OPTIMIZERS = (
    ("SGD momentum", "SGD", {"lr": 1e-2, "momentum": 0.9}, 20),
    ("SGD Nesterov", "SGD", {"lr": 1e-2, "momentum": 0.9, "nesterov": True}, 20),
    ("Adam", "Adam", {"lr": 1e-3}, 28),
    ("Adam AMSGrad", "Adam", {"lr": 1e-3, "amsgrad": True}, 36),
    ("AdamW", "AdamW", {"lr": 1e-3, "weight_decay": 1e-2}, 28),
)


TRAFFIC_PROBE = "traffic probe (Adam's 7 streams, no arithmetic)"


@numba.njit(parallel=True, cache=True)
def _adam_traffic_probe(param, grad, exp_avg, exp_avg_sq):
    """Adam's memory traffic with next to no arithmetic: read theta, g, m, v; write theta, m, v.
    The fastest any single-pass Adam step can be on this machine."""
    for i in numba.prange(param.size):
        g = grad[i]
        exp_avg[i] += g
        exp_avg_sq[i] += g
        param[i] -= g


def bench_optim(results, sizes):
    import recgrad.optim as optim

    torch = _optional("torch")
    layouts = (
        (f"{sizes.optim_params / 1e6:g}M params", [sizes.optim_params]),
        (f"{sizes.optim_tensors} x {sizes.optim_tensor_size / 1e3:g}k",
         [sizes.optim_tensor_size] * sizes.optim_tensors),
    )
    rng = np.random.default_rng(2)
    for layout, shapes in layouts:
        total = sum(shapes)
        data = [rng.standard_normal(size, dtype=np.float32) for size in shapes]
        grads = [rng.standard_normal(size, dtype=np.float32) for size in shapes]
        for label, class_name, hyper, bytes_per_param in OPTIMIZERS:
            cls = getattr(optim, class_name)
            implementations = {}
            kinds = {}
            for name, extra, kind in (("recgrad fused", {}, "kernel"),  # the default construction
                                      ("recgrad reference", {"engine": "numpy"}, "reference")):
                params = [Parameter(array.copy()) for array in data]
                for param, grad in zip(params, grads):
                    param.grad = grad
                implementations[name] = cls(params, **hyper, **extra).step
                kinds[name] = kind
            if torch is not None:
                torch_class = getattr(torch.optim, class_name)
                for name, extra in (("torch fused=True", {"fused": True}), ("torch foreach=True", {"foreach": True})):
                    tensors = [torch.from_numpy(array.copy()).requires_grad_(True) for array in data]
                    for tensor, grad in zip(tensors, grads):
                        tensor.grad = torch.from_numpy(grad)
                    try:
                        optimizer = torch_class(tensors, **hyper, **extra)
                        optimizer.step()
                    except (RuntimeError, ValueError) as error:
                        results.notes.append(f"{label}, {layout}: {name} unavailable ({error})")
                        continue
                    implementations[name] = optimizer.step
                    kinds[name] = "peer"
            if bytes_per_param == 28:  # Adam, AdamW
                state = [(array.copy(), grad, np.zeros_like(array), np.zeros_like(array))
                         for array, grad in zip(data, grads)]
                implementations[TRAFFIC_PROBE] = lambda state=state: [_adam_traffic_probe(*arrays) for arrays in state]
                kinds[TRAFFIC_PROBE] = "probe"
            times = compare(implementations, sizes.repeats)
            baseline = "torch fused=True" if "torch fused=True" in times else "recgrad reference"
            for name, measured in times.items():
                results.add("optim", f"{label} step, {layout}", name, kinds[name], measured,
                            bytes_per_param * total, "GB/s", baseline)


# --------------------------------------------------------------------------------------- data
def synthetic_like_gowalla(scale=1.0, seed=0):
    """A SYNTHETIC data set with Gowalla's shape (users, items, interactions, 80/20 split), for timing only.

    Users' activity is log-normal, items follow a Zipf law with exponent 0.8 over a random
    permutation of the items; (user, item) pairs are drawn from both, duplicates dropped, and
    Gowalla's number of interactions (times `scale`) kept at random among the distinct pairs.
    It has no structure a model could learn.
    """
    rng = np.random.default_rng(seed)
    n_users = max(200, round(GOWALLA_SHAPE["users"] * scale))
    n_items = max(300, round(GOWALLA_SHAPE["items"] * scale))
    total = max(5 * n_users, round((GOWALLA_SHAPE["train"] + GOWALLA_SHAPE["test"]) * scale))
    activity = rng.lognormal(0.0, 1.0, n_users)
    popularity = (rng.permutation(n_items) + 1.0) ** -0.8
    draws = 2 * total
    users = rng.choice(n_users, draws, p=activity / activity.sum())
    items = rng.choice(n_items, draws, p=popularity / popularity.sum())
    pairs = np.sort(users * n_items + items)
    pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))]  # distinct pairs (np.unique hashes: slower)
    pairs = rng.choice(pairs, min(total, pairs.size), replace=False)
    matrix, _, _ = interactions_to_csr(pairs // n_items, pairs % n_items, (n_users, n_items))
    train, test = random_holdout(matrix, 0.2, seed)
    return Dataset(train=train, test=test, user_ids=np.arange(n_users), item_ids=np.arange(n_items),
                   name="synthetic (Gowalla's shape)")


def load_data(data, scale):
    """(dataset, label, real): the data set `--data` names, loaded as `recgrad train --data` loads it (a
    missing test file replaced by a per-user 80/20 split, seed 0), or the synthetic set of Gowalla's
    shape times `scale` when `data` is None or "synthetic". ValueError names --data and the problem."""
    if data is None or data == SYNTHETIC:
        return synthetic_like_gowalla(scale), f"SYNTHETIC, Gowalla's shape x {scale:g}", False
    try:
        dataset = load(data)
        if dataset.test is None:
            dataset = with_test_split(dataset, method="random", ratio=0.2, seed=0)
    except (FileNotFoundError, ValueError, TypeError) as error:
        message = str(error)  # the loaders' messages mostly start with the file (and line) they name
        raise ValueError(f"--data {message if message.startswith(str(data)) else f'{data}: {message}'}") from None
    return dataset, f"{dataset.name} ({data})", True


def data_notice(label, real):
    """The line that says which data the MF, evaluation and quality cases ran on."""
    if real:
        return f"data: {label}"
    return (f"data: {label} (built in; generated, not real users), for timings only; "
            "pass --data PATH for real data")


def _interaction_subset(train, count, seed):
    """A CSR of the same shape holding `count` of train's interactions drawn at random."""
    coo = train.tocoo()
    keep = np.sort(np.random.default_rng(seed).choice(coo.nnz, count, replace=False))
    matrix, _, _ = interactions_to_csr(coo.row[keep], coo.col[keep], train.shape)
    return matrix


def _first_users(matrix, n_users):
    """matrix with every row after the first `n_users` emptied (same shape)."""
    keep = np.zeros(matrix.shape[0], np.float32)
    keep[:n_users] = 1.0
    return sp.csr_matrix(sp.diags(keep) @ matrix)


# --------------------------------------------------------------------------------------- MF
def trainer_epoch(dataset, optimizer, lr, batches):
    """Seconds per epoch of the Trainer on the NumPy reference engine (MF-BPR, dim 64, batch 2048, l2 1e-4).

    It trains one epoch over `batches` batches of interactions drawn from the training set (the
    whole set when that is smaller) and scales its training time to the full set; the evaluation
    after the epoch runs on 50 users and is not counted. Returns (seconds per epoch, samples used).
    """
    train = dataset.train
    used = min(train.nnz, batches * BATCH_SIZE)
    subset = train if used == train.nnz else _interaction_subset(train, used, seed=3)
    small = Dataset(train=subset, test=_first_users(dataset.test, 50), user_ids=dataset.user_ids,
                    item_ids=dataset.item_ids, name=dataset.name)
    model = MF(train.shape[0], train.shape[1], DIM, sparse=True, rng=0)
    with default_engine_set("numpy"):
        trainer = Trainer(model, loss="bpr", optimizer=optimizer, lr=lr, batch_size=BATCH_SIZE, epochs=1, l2=1e-4,
                          progress=False)
        trainer.fit(small)
    return trainer.history[0]["train_seconds"] * train.nnz / used, used


def torch_mf_epoch(torch, train, batches, optimizer):
    """Seconds per epoch of MF-BPR in PyTorch (nn.Embedding, dim 64, batch 2048, l2 1e-4 on the batch's rows).

    optimizer: "adam" (dense, torch's default implementation), "adam_fused" (dense, fused=True) or
    "sparse_adam" (sparse=True embeddings + SparseAdam). Negatives are uniform from torch.randint
    (a negative equal to a positive is kept). Times `batches` batches after 3 warm-up batches and
    scales to an epoch. Returns (seconds per epoch, samples timed).
    """
    functional = torch.nn.functional
    n_users, n_items = train.shape
    users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(train.indptr))
    items = train.indices.astype(np.int64)
    order = np.random.default_rng(4).permutation(train.nnz)
    torch.manual_seed(0)
    sparse = optimizer == "sparse_adam"
    user_table = torch.nn.Embedding(n_users, DIM, sparse=sparse)
    item_table = torch.nn.Embedding(n_items, DIM, sparse=sparse)
    for table in (user_table, item_table):
        torch.nn.init.normal_(table.weight, std=0.1)
    parameters = [user_table.weight, item_table.weight]
    if sparse:
        step = torch.optim.SparseAdam(parameters, lr=1e-3)
    else:
        step = torch.optim.Adam(parameters, lr=1e-3, fused=optimizer == "adam_fused")
    warm = 3
    samples = 0
    start = None
    for number in range(batches + warm):  # batches wrap around the shuffled interactions
        if number == warm:
            start = time.perf_counter()
        batch = order[(number * BATCH_SIZE) % train.nnz:][:BATCH_SIZE]
        u = torch.from_numpy(users[batch])
        i = torch.from_numpy(items[batch])
        j = torch.randint(0, n_items, (batch.size,))
        pu, qi, qj = user_table(u), item_table(i), item_table(j)
        loss = functional.softplus(((qj - qi) * pu).sum(dim=1)).mean()
        loss = loss + 1e-4 * 0.5 * (pu.square().sum() + qi.square().sum() + qj.square().sum()) / batch.size
        step.zero_grad()
        loss.backward()
        step.step()
        if number >= warm:
            samples += batch.size
    seconds = time.perf_counter() - start
    return seconds * train.nnz / samples, samples


def implicit_model(implicit, threads, seed=0):
    """implicit's BPR (hogwild SGD, CPU), dim 64, with recgrad's hogwild learning rate and L2
    (FUSED_RECIPES["hogwild"]; implicit's defaults, lr 0.01 and regularization 0.01, reached only
    Recall@20 0.0245 on Gowalla after 389 epochs)."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    return BayesianPersonalizedRanking(factors=DIM, learning_rate=FUSED_RECIPES["hogwild"]["lr"],
                                       regularization=FUSED_RECIPES["hogwild"]["l2"], iterations=1,
                                       num_threads=threads, random_state=seed)


# The compiled MF loop's settings for the epoch timings (MF-BPR, dim 64, one uniform negative per positive,
# positives re-drawn); the hogwild one is also a time-to-quality recipe.
FUSED_RECIPES = {
    "hogwild": {"optimizer": "hogwild", "lr": 0.05, "l2": 0.01, "dns_candidates": 1},
    "sparse_adam": {"optimizer": "sparse_adam", "lr": 0.01, "l2": 1e-4, "batch_size": BATCH_SIZE},
}
FUSED_LABELS = {"hogwild": "recgrad fused hogwild SGD", "sparse_adam": "recgrad fused minibatch Adam"}
IMPLICIT = "implicit BPR (hogwild SGD)"
# Time-to-quality: (label, CompiledMFLoop settings, epochs of a cosine lr schedule down to 0, or None for
# a constant lr and no epoch limit). The DNS recipe is recipes/gowalla-mf-bpr-dns.toml's.
QUALITY_RECIPES = (
    ("recgrad fused hogwild SGD + DNS (32 candidates), l2 0.03, cosine lr 0.05 -> 0 over 60 epochs",
     {"optimizer": "hogwild", "lr": 0.05, "l2": 0.03, "dns_candidates": 32}, 60),
    (FUSED_LABELS["hogwild"], FUSED_RECIPES["hogwild"], None),
    ("recgrad fused minibatch Adam, 8 negatives, l2 1e-3, cosine lr 5e-3 -> 0 over 25 epochs",
     {"optimizer": "sparse_adam", "lr": 5e-3, "l2": 1e-3, "negatives": 8, "batch_size": BATCH_SIZE}, 25),
)


def fused_trainer(dataset, settings, seed=0):
    """(model, CompiledMFLoop) for a fresh MF (dim 64, N(0, 0.1) tables) trained with BPR and `settings`."""
    model = MF(dataset.train.shape[0], dataset.train.shape[1], DIM, rng=seed)
    return model, CompiledMFLoop(model, dataset.train, loss="bpr", seed=seed, **settings)


def cosine_epochs(trainer, lr, epochs):
    """trainer.train_epoch preceded by the cosine lr of the epoch: epoch e (1-based) of `epochs` trains at
    lr (1 + cos(pi (e - 1) / epochs)) / 2 (the Trainer's lr_schedule="cosine" with lr_min 0)."""
    done = []

    def train_epoch():
        trainer.optimizer.param_groups[0]["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * len(done) / epochs))
        done.append(trainer.train_epoch())
    return train_epoch


def bench_mf(results, dataset, sizes, threads):
    torch, implicit = _optional("torch"), _optional("implicit")
    train = dataset.train
    nnz = train.nnz
    rows = []  # (path, implementation, kind, seconds per epoch, note)
    if implicit is not None:
        model = implicit_model(implicit, threads)
        measured = compare({"implicit": lambda: model.fit(train, show_progress=False)}, sizes.epoch_repeats)
        rows.append(("sgd", IMPLICIT, "peer", measured["implicit"],
                     f"one fit(iterations=1) call per epoch; {model.factors} factors + an item bias"))
    for optimizer, path in (("hogwild", "sgd"), ("sparse_adam", "adam")):
        _, trainer = fused_trainer(dataset, FUSED_RECIPES[optimizer])
        kernel_seconds = []

        def epoch(trainer=trainer, kernel_seconds=kernel_seconds):
            kernel_seconds.append(trainer.train_epoch()["seconds"])
        measured = compare({"fused": epoch}, sizes.epoch_repeats)["fused"]
        kernel_rate = nnz / statistics.median(kernel_seconds[1:]) / 1e6
        rows.append((path, FUSED_LABELS[optimizer], "kernel", measured,
                     f"whole train_epoch() call incl. the shuffle; kernel alone {kernel_rate:.2f} M/s"))
    for optimizer, lr, path in (("sgd", 0.05, "sgd"), ("sparse_adam", 1e-3, "adam")):
        seconds, used = trainer_epoch(dataset, optimizer, lr, sizes.reference_batches)
        note = "minibatch SGD, " if optimizer == "sgd" else ""
        note += "whole epoch" if used == nnz else f"extrapolated from {used:,} samples"
        rows.append((path, f"recgrad Trainer {optimizer} (reference)", "reference", [seconds], note))
    if torch is not None:
        for optimizer, batches in (("adam", sizes.torch_dense_batches), ("adam_fused", sizes.torch_dense_batches),
                                   ("sparse_adam", sizes.torch_sparse_batches)):
            seconds, used = torch_mf_epoch(torch, train, batches, optimizer)
            label = {"adam": "torch dense Adam", "adam_fused": "torch dense Adam fused=True",
                     "sparse_adam": "torch SparseAdam"}[optimizer]
            rows.append(("adam", label, "peer", [seconds], f"extrapolated from {used:,} samples"))
    for path, implementation, kind, measured, note in rows:
        case = f"MF-BPR epoch, {'SGD' if path == 'sgd' else 'Adam'} path"
        baseline = None
        if path == "sgd" and implicit is not None:
            baseline = IMPLICIT
        elif path == "adam" and torch is not None:
            baseline = "torch SparseAdam"
        results.add("mf", case, implementation, kind, measured, nnz, "M samples/s", baseline, note)
    results.notes.append(f"MF: {train.shape[0]:,} users, {train.shape[1]:,} items, "
                         f"{nnz:,} training interactions; dim {DIM}, batch {BATCH_SIZE}; times are seconds per epoch")


# --------------------------------------------------------------------------------------- evaluation
EVAL_KERNEL = "recgrad full_ranking (numba engine)"
EVAL_REFERENCE = "recgrad full_ranking (numpy engine, reference)"
EVAL_TORCH = "torch (matmul + masked topk)"


def bench_eval(results, dataset, sizes):
    """Top-20 of every test user over every item with the training items masked, on random factors."""
    torch = _optional("torch")
    train, test = dataset.train, dataset.test
    n_users, n_items = train.shape
    rng = np.random.default_rng(5)
    user_vectors = (0.1 * rng.standard_normal((n_users, DIM))).astype(np.float32)
    item_vectors = (0.1 * rng.standard_normal((n_items, DIM))).astype(np.float32)
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    if sizes.eval_users is not None:
        users = users[: sizes.eval_users]
    block = default_block_size(n_items)

    def evaluate(**engine):
        return full_ranking(lambda rows: user_vectors[rows] @ item_vectors.T, train, test, ks=(TOP_K,),
                            users=users, block_size=block, **engine)

    implementations = {EVAL_KERNEL: lambda: evaluate(engine="compiled", threads=kernels.get_num_threads()),
                       EVAL_REFERENCE: lambda: evaluate(engine="numpy")}
    if torch is not None:
        user_tensor, item_tensor = torch.from_numpy(user_vectors), torch.from_numpy(item_vectors)

        def torch_topk():
            for start in range(0, users.size, block):
                rows = users[start : start + block]
                scores = user_tensor[torch.from_numpy(rows)] @ item_tensor.T
                seen = train[rows]
                seen_rows = np.repeat(np.arange(rows.size), np.diff(seen.indptr))
                scores[torch.from_numpy(seen_rows), torch.from_numpy(seen.indices.astype(np.int64))] = -math.inf
                torch.topk(scores, min(TOP_K, n_items), dim=1)  # a data set may hold fewer items
        implementations[EVAL_TORCH] = torch_topk
    times = compare(implementations, max(1, sizes.repeats // 2))
    baseline = EVAL_TORCH if torch is not None else EVAL_REFERENCE
    case = f"full ranking top-{TOP_K}, {users.size:,} users x {n_items:,} items"
    for name, measured in times.items():
        kind = {EVAL_KERNEL: "kernel", EVAL_REFERENCE: "reference", EVAL_TORCH: "peer"}[name]
        results.add("eval", case, name, kind, measured, users.size, "users/s", baseline)
    results.notes.append(f"full ranking: random N(0, 0.01) factors of dim {DIM}, blocks of {block} users; the "
                         "recgrad rows also compute Recall/NDCG@20 from the top-K, torch only the top-K ids")


# --------------------------------------------------------------------------------------- quality
def recall_at_k(user_vectors, item_vectors, train, test, k=TOP_K):
    """Mean Recall@k over the users with a test item, training items masked (evaluation.full_ranking)."""
    return full_ranking(lambda rows: user_vectors[rows] @ item_vectors.T, train, test, ks=(k,),
                        metrics=("recall",), threads=kernels.get_num_threads())[f"recall@{k}"]


def time_to_quality(implementation, kind, train_epoch, factors, dataset, budget_seconds, targets=QUALITY_TARGETS,
                    min_eval_seconds=2.0, max_epochs=None):
    """Train epoch by epoch, evaluating Recall@20 on the test set, until every target is reached,
    `budget_seconds` of training time are spent or `max_epochs` (None: no limit) have run.

    Evaluations run whenever the training time since the last one reaches max(min_eval_seconds,
    10% of the training time so far), so a target's time is known to within about 10% and the evaluations
    add a bounded share to the wall time. Returns (records, curve): one record per target with
    the epoch, training seconds and wall seconds (evaluations included) at the first evaluation
    that reached it (None when not reached), and the curve [(epoch, train s, wall s, recall)].
    """
    curve, reached = [], {}
    trained = since_eval = 0.0
    epoch = 0
    wall_start = time.perf_counter()
    while trained < budget_seconds and len(reached) < len(targets) and epoch != max_epochs:
        start = time.perf_counter()
        train_epoch()
        seconds = time.perf_counter() - start
        trained += seconds
        since_eval += seconds
        epoch += 1
        if since_eval >= max(min_eval_seconds, 0.1 * trained) or trained >= budget_seconds or epoch == max_epochs:
            since_eval = 0.0
            user_vectors, item_vectors = factors()
            recall = recall_at_k(user_vectors, item_vectors, dataset.train, dataset.test)
            wall = time.perf_counter() - wall_start
            curve.append((epoch, trained, wall, recall))
            for target in targets:
                if recall >= target and target not in reached:
                    reached[target] = (epoch, trained, wall)
    records = []
    for target in targets:
        epoch_at, train_at, wall_at = reached.get(target, (None, None, None))
        records.append({"implementation": implementation, "kind": kind, "recall_target": target, "epochs": epoch_at,
                        "train_seconds": train_at, "wall_seconds": wall_at, "budget_seconds": budget_seconds,
                        "best_recall": max(point[3] for point in curve) if curve else None,
                        "epochs_run": epoch, "trained_seconds": trained, "curve": curve})
    return records


def _quality_line(record):
    head = f"time to Recall@20 {record['recall_target']}: {record['implementation']}: "
    if record["wall_seconds"] is None:
        return head + (f"not reached: best {record['best_recall']:.4f} after {record['epochs_run']} epochs, "
                       f"{record['trained_seconds']:.0f} s of training (budget {record['budget_seconds']:.0f} s)")
    return head + (f"{record['wall_seconds']:.1f} s wall ({record['train_seconds']:.1f} s training, "
                   f"epoch {record['epochs']}; best {record['best_recall']:.4f} in {record['epochs_run']} epochs)")


def bench_quality(results, dataset, real, budget_seconds, threads):
    if not real:
        results.notes.append("time-to-quality skipped: it needs real data (--data; recall on synthetic data means "
                             "nothing)")
        return
    implicit = _optional("implicit")
    runs = []
    for label, settings, epochs in QUALITY_RECIPES:
        model, trainer = fused_trainer(dataset, settings)
        train_epoch = trainer.train_epoch if epochs is None else cosine_epochs(trainer, settings["lr"], epochs)
        runs.append((label, "kernel", train_epoch, lambda model=model: (model.user_factors(), model.item_factors()),
                     epochs))
    if implicit is not None:
        model = implicit_model(implicit, threads)
        runs.append((IMPLICIT, "peer", lambda: model.fit(dataset.train, show_progress=False),
                     lambda: (model.user_factors, model.item_factors), None))
    for implementation, kind, train_epoch, factors, epochs in runs:
        print(f"recgrad bench: time to quality, {implementation} ...", file=sys.stderr, flush=True)
        results.quality.extend(time_to_quality(implementation, kind, train_epoch, factors, dataset, budget_seconds,
                                               max_epochs=epochs))


# --------------------------------------------------------------------------------------- defaults
def run_default_train(data, threads):
    """(seconds, test metrics) of `recgrad train --data DATA --threads N` with no other flag, run as a
    user runs it, in a fresh process writing to a temporary run directory."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "recgrad.cli", "train", "--data", str(data), "--threads", str(threads),
                   "--out", os.path.join(folder, "run")]
        start = time.perf_counter()
        finished = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        if finished.returncode != 0:
            lines = finished.stderr.strip().splitlines() or ["(no message)"]
            raise RuntimeError(f"recgrad train --data {data} failed: {lines[-1]}")
        metrics = json.loads(Path(folder, "run", "test_metrics.json").read_text())
    return seconds, metrics


def run_implicit_defaults(implicit, dataset, threads):
    """(seconds, test metrics) of implicit's BPR with its own defaults: fit, then the top 20 of every test
    user with the training items excluded (what a user of implicit runs), scored by recgrad's metrics."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    from recgrad.metrics import ndcg_at_k, recall_at_k

    train, test = dataset.train.tocsr(), dataset.test.tocsr()
    users = np.flatnonzero(np.diff(test.indptr))
    start = time.perf_counter()
    model = BayesianPersonalizedRanking(num_threads=threads, random_state=0)
    model.fit(train, show_progress=False)
    ranked, _ = model.recommend(users, train[users], N=TOP_K, filter_already_liked_items=True)
    seconds = time.perf_counter() - start
    relevant = test[users]
    return seconds, {"recall@20": float(recall_at_k(ranked, relevant, TOP_K).mean()),
                     "ndcg@20": float(ndcg_at_k(ranked, relevant, TOP_K).mean())}


def bench_defaults(results, data, dataset, real, threads):
    if not real:
        results.notes.append("defaults skipped: it needs real data (--data)")
        return
    runs = [("recgrad train (no flags)", lambda: run_default_train(data, threads))]
    implicit = _optional("implicit")
    if implicit is not None:
        runs.append(("implicit BPR (its defaults)", lambda: run_implicit_defaults(implicit, dataset, threads)))
    for implementation, measure in runs:
        print(f"recgrad bench: defaults, {implementation} ...", file=sys.stderr, flush=True)
        seconds, metrics = measure()
        results.defaults.append({"implementation": implementation, "wall_seconds": seconds,
                                 "recall@20": metrics["recall@20"], "ndcg@20": metrics["ndcg@20"]})


def _defaults_line(record):
    return (f"defaults: {record['implementation']}: {record['wall_seconds']:.1f} s wall, test Recall@20 "
            f"{record['recall@20']:.4f}, NDCG@20 {record['ndcg@20']:.4f}")


# --------------------------------------------------------------------------------------- targets
def _target(name, goal, measured, met):
    return {"target": name, "goal": goal, "measured": measured, "met": met}


def _speedup(results, case, implementation, peer):
    mine, theirs = results.find(case, implementation), results.find(case, peer)
    if mine is None or theirs is None:
        return None
    return theirs["seconds"] / mine["seconds"]


def evaluate_targets(results):
    """The project's performance goals (docs/performance.md) for the comparisons this run measured,
    each met / missed / None (reported, no goal), with the numbers."""
    targets = []
    copy = copy_bandwidth(results)
    for name in ACTIVATIONS:
        case = f"{ACTIVATION_LABELS[name]} fwd+bwd"
        mine = results.find(case, "recgrad kernel")
        torch_row = results.find(case, "torch autograd")
        if mine is None:
            continue
        if torch_row is not None:
            ratio = torch_row["seconds"] / mine["seconds"]
            targets.append(_target(f"{case}: recgrad kernel vs torch autograd", ">= 3x",
                                   f"{ratio:.2f}x ({mine['throughput']:.1f} vs {torch_row['throughput']:.1f} GB/s)",
                                   ratio >= 3.0))
        if copy is not None:
            fraction = mine["throughput"] / copy
            goal = ">= 55% of copy" if name in ("relu", "sigmoid") else "close to copy (reported)"
            met = fraction >= 0.55 if name in ("relu", "sigmoid") else None
            targets.append(_target(f"{case}: share of copy bandwidth", goal,
                                   f"{100 * fraction:.0f}% ({mine['throughput']:.1f} of {copy:.1f} GB/s)", met))
    optim_cases = sorted({row["case"] for row in results.rows if row["group"] == "optim"})
    for case in optim_cases:
        goal = 1.0 if case.startswith("SGD momentum") else 1.25 if case.startswith(("Adam step", "AdamW")) else None
        if goal is None:
            continue
        ratio = _speedup(results, case, "recgrad fused", "torch fused=True")
        if ratio is None:
            continue
        mine, theirs = results.find(case, "recgrad fused"), results.find(case, "torch fused=True")
        targets.append(_target(f"{case}: recgrad fused vs torch fused=True", f">= {goal:g}x",
                               f"{ratio:.2f}x ({mine['throughput']:.1f} vs {theirs['throughput']:.1f} GB/s)",
                               ratio >= goal))
        probe = results.find(case, TRAFFIC_PROBE)
        if probe is not None:  # the ceiling of the ratio: no Adam pass can move its bytes faster
            ceiling = theirs["seconds"] / probe["seconds"]
            targets.append(_target(f"{case}: the traffic probe vs torch fused=True (ceiling)", "(reported)",
                                   f"{ceiling:.2f}x; recgrad fused at {mine['throughput'] / probe['throughput']:.0%} "
                                   "of the probe", None))
    sgd_case, adam_case = "MF-BPR epoch, SGD path", "MF-BPR epoch, Adam path"
    for case, mine, peer, goal in (
        (sgd_case, "recgrad fused hogwild SGD", IMPLICIT, 1.3),
        (adam_case, "recgrad fused minibatch Adam", "torch dense Adam", 10.0),
        (adam_case, "recgrad fused minibatch Adam", "torch dense Adam fused=True", 10.0),
        (adam_case, "recgrad fused minibatch Adam", "torch SparseAdam", 5.0),
    ):
        ratio = _speedup(results, case, mine, peer)
        if ratio is None:
            continue
        a, b = results.find(case, mine)["throughput"], results.find(case, peer)["throughput"]
        targets.append(_target(f"MF-BPR samples/s: {mine} vs {peer}", f">= {goal:g}x",
                               f"{ratio:.2f}x ({a:.2f} vs {b:.3f} M/s)", ratio >= goal))
    eval_cases = sorted({row["case"] for row in results.rows if row["group"] == "eval"})
    for case in eval_cases:
        mine = results.find(case, EVAL_KERNEL)
        torch_row = results.find(case, EVAL_TORCH)
        if mine is not None and torch_row is not None:
            fraction = mine["seconds"] / torch_row["seconds"]
            targets.append(_target(f"{case}: recgrad numba engine time / torch time", "<= 0.6",
                                   f"{fraction:.2f} ({mine['seconds']:.2f} s vs {torch_row['seconds']:.2f} s)",
                                   fraction <= 0.6))
    best = {record["implementation"]: record["best_recall"] for record in results.quality}
    mine, peer = FUSED_LABELS["hogwild"], IMPLICIT
    if best.get(mine) is not None and best.get(peer) is not None:
        targets.append(_target(f"Recall@20 of {mine} vs {peer} (best within the same training-time budget)",
                               ">= implicit's", f"{best[mine]:.4f} vs {best[peer]:.4f}", best[mine] >= best[peer]))
    for record in results.quality:
        if record.get("recall_target") == QUALITY_TARGETS[-1] and record.get("kind") == "kernel":
            seconds = record.get("wall_seconds")
            targets.append(_target(f"time to Recall@20 {QUALITY_TARGETS[-1]}: {record['implementation']}",
                                   "< 300 s wall", "not reached" if seconds is None else f"{seconds:.0f} s",
                                   seconds is not None and seconds < 300.0))
    if len(results.defaults) == 2:
        mine, peer = results.defaults
        ratio = mine["wall_seconds"] / peer["wall_seconds"]
        targets.append(_target("wall time of recgrad train with no flags / implicit BPR with its defaults",
                               "<= 4", f"{ratio:.2f} ({mine['wall_seconds']:.0f} s vs {peer['wall_seconds']:.0f} s)",
                               ratio <= 4.0))
        targets.append(_target("test Recall@20 of recgrad train with no flags (Gowalla: reczoo's tuned MF-BPR "
                               f"{QUALITY_TARGETS[-1]})", ">= implicit's defaults",
                               f"{mine['recall@20']:.4f} vs {peer['recall@20']:.4f}",
                               mine["recall@20"] >= peer["recall@20"]))
    return targets


# --------------------------------------------------------------------------------------- output
def _format_time(row):
    if row["group"] == "mf":
        return f"{row['seconds']:.2f} s/epoch"
    return f"{row['seconds'] * 1e3:.3g} ms" if row["seconds"] < 1.0 else f"{row['seconds']:.2f} s"


def _format_speedup(row):
    if row["speedup"] is None:
        return ""
    if row["implementation"] == row["baseline"]:
        return "1.00 (baseline)"
    return f"{row['speedup']:.2f}x"


def table_rows(results):
    """Header and rows (lists of strings) of the results table, cases in the order they ran."""
    header = ["case", "implementation", "kind", "median", "throughput", "vs baseline", "note"]
    body = []
    for row in results.rows:
        body.append([row["case"], row["implementation"], row["kind"], _format_time(row),
                     f"{row['throughput']:.3g} {row['unit']}", _format_speedup(row), row["note"]])
    return header, body


def format_text(results, targets, machine):
    header, body = table_rows(results)
    widths = [max(len(line[column]) for line in [header] + body) for column in range(len(header))]
    lines = [f"recgrad bench, {machine['date']}: {machine['cpu']}, {machine['cores']} cores, "
             f"{machine['threads']} threads; numpy {machine['numpy']}, numba {machine['numba']}, "
             f"torch {machine['torch']}, implicit {machine['implicit']}"]
    pools = ", ".join(f"{pool['library']} ({pool['api']}, {pool['threads']} threads)"
                      for pool in machine["thread_pools"])
    lines.append(f"thread pools: {pools}")
    previous = None
    for line in [header] + body:
        if previous is not None and line[0] != previous:
            lines.append("")
        previous = line[0] if line is not header else None
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    for record in results.quality:
        lines.append(_quality_line(record))
    lines.extend(_defaults_line(record) for record in results.defaults)
    lines.extend(f"note: {note}" for note in results.notes)
    lines.append("")
    lines.append("performance goals (docs/performance.md):" + ("" if targets else " none measured by these cases"))
    for target in targets:
        verdict = {True: "MET", False: "MISSED", None: "info"}[target["met"]]
        lines.append(f"  [{verdict}] {target['target']}: {target['measured']} (goal {target['goal']})")
    return "\n".join(lines)


def format_markdown(results, targets, machine):
    header, body = table_rows(results)
    lines = [
        f"Run {machine['date']} with `recgrad bench --threads {machine['threads']}` on {machine['cpu']}, "
        f"{machine['cores']} cores; Python {machine['python']}, numpy {machine['numpy']}, numba {machine['numba']}, "
        f"torch {machine['torch']}, implicit {machine['implicit']}.",
        "",
        "Thread pools: " + ", ".join(f"{pool['library']} {pool['version']} ({pool['api']}, {pool['threads']} threads)"
                                     for pool in machine["thread_pools"]) + ".",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if column < 3 else "---:" for column in range(len(header) - 1)) + "|---|",
    ]
    lines.extend("| " + " | ".join(cell.replace("|", "/") for cell in line) + " |" for line in body)
    if results.quality:
        lines.append("")
        lines.extend(f"- {_quality_line(record)}" for record in results.quality)
    if results.defaults:
        lines.append("")
        lines.extend(f"- {_defaults_line(record)}" for record in results.defaults)
    if results.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in results.notes)
    lines += ["", "Performance goals (docs/performance.md):", "",
              "| performance goal | goal | measured | verdict |", "|---|---|---|---|"]
    for target in targets:
        verdict = {True: "met", False: "**missed**", None: "(reported)"}[target["met"]]
        lines.append(f"| {target['target']} | {target['goal']} | {target['measured']} | {verdict} |")
    return "\n".join(lines) + "\n"


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


# --------------------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by `args` (from `add_arguments`); returns the exit status."""
    try:
        cases, threads = _check_options(args)
        sizes = Sizes(args.quick, args.scale, args.repeats)
        dataset, data_label, real = None, None, False
        if {"mf", "eval", "quality", "defaults"} & set(cases):
            dataset, data_label, real = load_data(args.data, args.scale)
    except ValueError as error:
        print(f"recgrad bench: error: {error}", file=sys.stderr)
        return 2
    results = Results()
    if dataset is not None:
        results.notes.append(data_notice(data_label, real))
        print(f"recgrad bench: {results.notes[-1]}", file=sys.stderr, flush=True)
    limiter = set_threads(threads)
    for name in ("torch", "implicit"):
        _optional(name)  # imported before the thread pools are listed
    machine = machine_info(threads)
    started = time.perf_counter()
    steps = {
        "copy": lambda: bench_copy(results, sizes, threads),
        "activations": lambda: bench_activations(results, sizes),
        "optim": lambda: bench_optim(results, sizes),
        "mf": lambda: bench_mf(results, dataset, sizes, threads),
        "eval": lambda: bench_eval(results, dataset, sizes),
        "quality": lambda: bench_quality(results, dataset, real, args.quality_seconds, threads),
        "defaults": lambda: bench_defaults(results, args.data, dataset, real, threads),
    }
    for name in GROUPS:
        if name in cases:
            print(f"recgrad bench: {name} ...", file=sys.stderr, flush=True)
            steps[name]()
    results.finish()
    targets = evaluate_targets(results)
    print(format_text(results, targets, machine))
    report = {"machine": machine, "quick": bool(args.quick), "scale": args.scale, "threads": threads,
              "cases": cases, "data": {"label": data_label, "synthetic": dataset is not None and not real},
              "seconds": time.perf_counter() - started, "rows": results.rows,
              "quality": results.quality, "defaults": results.defaults, "notes": results.notes, "targets": targets}
    if args.json:
        Path(args.json).write_text(json.dumps(_json_safe(report), indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(format_markdown(results, targets, machine))
    limiter.restore_original_limits()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m recgrad.bench ...` (the same as `recgrad bench ...`)."""
    parser = add_arguments(argparse.ArgumentParser(prog="recgrad bench", description=__doc__.splitlines()[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
