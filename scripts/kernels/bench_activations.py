"""Activation fwd+bwd throughput: recgrad kernels vs PyTorch autograd vs the NumPy reference, one process.

python scripts/kernels/bench_activations.py [--n 10000000] [--threads 2] [--repeats 9]
Times are the fastest of the repeats (recgrad and torch run in turn), so background load biases neither.
GB/s counts 20 bytes per float32 element (read x, write y, read g, read the cache, write dx).
Not a test: `recgrad bench --cases activations` measures the same pairs beside a memory-copy probe.
"""

import argparse
import time

import numpy as np

import recgrad.activations as A
from recgrad import kernels
from recgrad.kernels import activations as K

CASES = [  # name, kernel params, torch forward (name of a torch function), reference forward, reference backward
    ("sigmoid", {}, "sigmoid", A.sigmoid, lambda g, x, y: g * y * (1.0 - y)),
    ("tanh", {}, "tanh", A.tanh, lambda g, x, y: g * (1.0 - y * y)),
    ("relu", {}, "relu", A.relu, lambda g, x, y: g * A.relu_grad(x)),
    ("gelu", {}, "gelu", A.gelu, lambda g, x, y: g * A.gelu_grad(x)),
    ("gelu", {"approximate": "tanh"}, "gelu_tanh",
     lambda x: A.gelu(x, "tanh"), lambda g, x, y: g * A.gelu_grad(x, "tanh")),
    ("silu", {}, "silu", A.silu, lambda g, x, y: g * A.silu_grad(x)),
    ("softmax", {}, "softmax", A.softmax, lambda g, x, y: A.softmax_backward(g, y)),
    ("log_softmax", {}, "log_softmax", A.log_softmax, lambda g, x, y: A.log_softmax_backward(g, y)),
]


def timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def best_of(function, repeats):
    """The fastest of `repeats` runs: load from other processes only ever adds time."""
    return min(timed(function) for _ in range(repeats))


def interleaved(functions, repeats):
    """best_of for several functions, run in turn so that they share the same background load."""
    times = [[] for _ in functions]
    for _ in range(repeats):
        for function, bucket in zip(functions, times):
            bucket.append(timed(function))
    return [min(bucket) for bucket in times]


def case_functions(torch, x, g, name, params, torch_forward, ref_forward, ref_backward):
    """(recgrad kernel, torch autograd, NumPy reference): each runs one forward + backward of one activation."""
    cached_is_output = K.CACHED[name] == "output"
    xt, gt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(g)

    def ours():
        y = K.forward(name, x, **params)
        K.backward(name, g, y if cached_is_output else x, **params)

    def theirs():
        torch_forward(xt).backward(gt)
        xt.grad = None

    def reference():
        ref_backward(g, x, ref_forward(x))

    return ours, theirs, reference


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--row", type=int, default=1000, help="softmax row length")
    args = parser.parse_args()
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    kernels.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal(args.n)).astype(np.float32).reshape(-1, args.row)
    g = rng.standard_normal(x.shape).astype(np.float32)
    gb = 20 * x.size / 1e9
    copy = best_of(lambda: (x.copy(), g.copy()), args.repeats)
    print(f"n={x.size} threads={args.threads}  copy (x and g, 16 B/element): {16 * x.size / 1e9 / copy:.1f} GB/s")
    torch_fns = {
        "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "gelu": F.gelu,
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "silu": F.silu,
        "softmax": lambda t: torch.softmax(t, -1), "log_softmax": lambda t: torch.log_softmax(t, -1),
    }
    header = ("op", "recgrad ms", "GB/s", "torch ms", "GB/s", "numpy ms", "x torch", "x numpy")
    print(f"{header[0]:12} " + " ".join(f"{h:>10}" for h in header[1:]))
    for name, params, torch_name, ref_forward, ref_backward in CASES:
        ours, theirs, reference = case_functions(torch, x, g, name, params, torch_fns[torch_name], ref_forward,
                                                 ref_backward)
        ours(), theirs()
        t_ours, t_torch = interleaved([ours, theirs], args.repeats)
        t_ref = best_of(reference, max(2, args.repeats // 3))
        row = (t_ours * 1e3, gb / t_ours, t_torch * 1e3, gb / t_torch, t_ref * 1e3, t_torch / t_ours, t_ref / t_ours)
        print(f"{torch_name:12} " + " ".join(f"{v:10.2f}" for v in row))


if __name__ == "__main__":
    main()
