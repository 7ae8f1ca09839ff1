"""Experiment `cost`: forward + backward time per element of each activation, relative to ReLU.

Two implementations are timed on the same float32 input (standard normal, 4M elements; quick:
64K) and the same upstream gradient, in one process:

- "reference": the NumPy formulas of recgrad.activations, one forward and the matching
  backward (y (1 - y) for sigmoid, 1 - y^2 for tanh, g * f'(x) for the others, the
  vector-Jacobian product for softmax), as recgrad.nn's layers compute them;
- "kernels": recgrad.kernels.activations' fused compiled passes (`forward`, then `backward` from
  the array CACHED[name] names), when that module can be imported; otherwise the numbers say so.

Both run on one thread (the reference is single-threaded NumPy; the kernels are pinned to one
thread for the timing), so a ratio measures the work per element, not the thread pool: on a shared
machine a 2-thread parallel region can wait milliseconds for its second thread. Multi-threaded
throughput against PyTorch is `recgrad bench`'s job. Softmax runs over rows of 64. Each repeat
times every activation once, round-robin, so load on a shared machine hits all of them alike.
The fastest repeat is reported (load only ever adds time, so the minimum is the least noisy
estimate of the cost itself), with ns per element and the ratio to ReLU of the same
implementation (ratios are what compare across machines).
"""

import importlib
import time

import numpy as np

from recgrad import activations as act
from recgrad.experiments.common import claim, figure, save_figure, single_threaded, write_result

NAME = "cost"
DESCRIPTION = "forward+backward time per element of each activation relative to ReLU (NumPy reference, kernels)"

SOFTMAX_ROW = 64
_CHEAP = 1.25  # "as cheap as ReLU": at most 25% slower


def _reference_cases():
    """name -> fwd+bwd callable (x, g) -> dL/dx using recgrad.activations, as recgrad.nn computes it."""

    def sigmoid(x, g):
        y = act.sigmoid(x)
        return g * y * (1.0 - y)

    def tanh(x, g):
        y = act.tanh(x)
        return g * (1.0 - y * y)

    def softmax(x, g):
        return act.softmax_backward(g, act.softmax(x))

    def elementwise(f, f_grad):
        def fwd_bwd(x, g):
            f(x)
            return g * f_grad(x)
        return fwd_bwd

    return {
        "relu": elementwise(act.relu, act.relu_grad),
        "sigmoid": sigmoid,
        "tanh": tanh,
        "gelu": elementwise(act.gelu, act.gelu_grad),
        "gelu-tanh": elementwise(lambda x: act.gelu(x, "tanh"), lambda x: act.gelu_grad(x, "tanh")),
        "swish": elementwise(act.silu, act.silu_grad),
        "softmax": softmax,
    }


def _kernel_cases(module):
    """The same cases through the fused kernels' forward/backward pair."""

    def case(name, **params):
        def fwd_bwd(x, g):
            y = module.forward(name, x, **params)
            cached = y if module.CACHED[name] == "output" else x
            return module.backward(name, g, cached, **params)
        return fwd_bwd

    return {
        "relu": case("relu"),
        "sigmoid": case("sigmoid"),
        "tanh": case("tanh"),
        "gelu": case("gelu", approximate="none"),
        "gelu-tanh": case("gelu", approximate="tanh"),
        "swish": case("silu"),
        "softmax": case("softmax"),
    }


def _load_kernels():
    """(module, None) when recgrad.kernels.activations imports, else (None, the reason)."""
    try:
        return importlib.import_module("recgrad.kernels.activations"), None
    except ImportError as error:
        return None, f"recgrad.kernels.activations is not importable: {error}"


def _time(implementations, x, g, repeats):
    """Fastest seconds per fwd+bwd over the repeats for each (implementation, activation), round-robin."""
    samples = {impl: {name: [] for name in cases} for impl, cases in implementations.items()}
    for cases in implementations.values():  # warm up: compile kernels, touch memory
        for name, fwd_bwd in cases.items():
            fwd_bwd(*_shaped(name, x[:4096], g[:4096]))
    for _ in range(repeats):
        for impl, cases in implementations.items():
            for name, fwd_bwd in cases.items():
                xs, gs = _shaped(name, x, g)
                start = time.perf_counter()
                fwd_bwd(xs, gs)
                samples[impl][name].append(time.perf_counter() - start)
    return {impl: {name: float(np.min(times)) for name, times in by_name.items()}
            for impl, by_name in samples.items()}


def _shaped(name, x, g):
    """Softmax sees rows of SOFTMAX_ROW; the elementwise activations the flat array."""
    if name == "softmax":
        return x.reshape(-1, SOFTMAX_ROW), g.reshape(-1, SOFTMAX_ROW)
    return x, g


def run(out_dir, quick=False, seed=0):
    """Time every activation in both implementations, draw the ratios, judge the claims."""
    elements = 2**16 if quick else 2**22
    repeats = 5 if quick else 9
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(elements).astype(np.float32)
    g = rng.standard_normal(elements).astype(np.float32)
    module, missing = _load_kernels()
    implementations = {"reference": _reference_cases()}
    if module is not None:
        implementations["kernels"] = _kernel_cases(module)
    with single_threaded():
        seconds = _time(implementations, x, g, repeats)

    ns_per_element = {impl: {name: 1e9 * t / elements for name, t in by_name.items()}
                      for impl, by_name in seconds.items()}
    ratio = {impl: {name: t / by_name["relu"] for name, t in by_name.items()} for impl, by_name in seconds.items()}
    speedup = ({name: seconds["reference"][name] / seconds["kernels"][name] for name in seconds["reference"]}
               if module is not None else None)
    numbers = {
        "dtype": "float32",
        "elements": elements,
        "softmax_row": SOFTMAX_ROW,
        "repeats": repeats,
        "threads": 1,
        "kernels_available": module is not None,
        "kernels_missing_reason": missing,
        "seconds_min": seconds,
        "ns_per_element": ns_per_element,
        "ratio_to_relu": ratio,
        "kernel_speedup_over_reference": speedup,
    }

    fig, axes = figure(1, 1, panel_width=6.5, panel_height=3.2)
    ax = axes[0, 0]
    names = list(seconds["reference"])
    width = 0.8 / len(ratio)
    for offset, (impl, by_name) in enumerate(ratio.items()):
        positions = np.arange(len(names)) + (offset - (len(ratio) - 1) / 2) * width
        bars = ax.bar(positions, [by_name[n] for n in names], width, label=impl)
        ax.bar_label(bars, labels=[f"{ns_per_element[impl][n]:.1f}" for n in names], fontsize=6)
    ax.axhline(1.0, color="0.4", linestyle=":", linewidth=1)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("fwd+bwd time / ReLU's")
    ax.legend(fontsize=8)
    ax.set_title(f"Forward+backward cost, float32, {elements:,} elements (labels: ns per element)", fontsize=9)
    figures = [save_figure(fig, out_dir, "cost.png")]

    claims = [_swish_claim(ratio), _relu_cheapest_claim(ratio), _gelu_forms_claim(seconds)]
    if module is None:
        available = f"Only the NumPy reference was timed ({missing})."
    else:
        slowest = max(speedup, key=speedup.get)
        available = (
            "On one thread the fused kernels run fwd+bwd "
            f"{min(speedup.values()):.1f}-{max(speedup.values()):.1f}x faster than the reference "
            f"(most for {slowest})."
        )
    verdict = (
        f"On {elements:,} float32 elements, relative to ReLU of the same implementation, "
        + "; ".join(
            f"the {impl} costs " + ", ".join(f"{n} {r:.2f}x" for n, r in by_name.items() if n != "relu")
            for impl, by_name in ratio.items()
        )
        + f". {available} Claims: " + "; ".join(f"{c['claim']}: {c['verdict']}" for c in claims) + "."
    )
    return write_result(out_dir, {
        "name": NAME, "figures": figures, "numbers": numbers, "claims": claims, "verdict": verdict,
    })


def _swish_claim(ratio):
    cheap = {impl: by_name["swish"] <= _CHEAP for impl, by_name in ratio.items()}
    verdict = "holds" if all(cheap.values()) else "holds with conditions" if any(cheap.values()) else "does not hold"
    return claim(
        "Swish is as cheap as ReLU (fwd+bwd at most 1.25x ReLU's time)",
        verdict,
        "Swish's fwd+bwd time over ReLU's: "
        + ", ".join(f"{by_name['swish']:.2f}x in the {impl}" for impl, by_name in ratio.items()) + ".",
    )


def _relu_cheapest_claim(ratio):
    cheapest = {impl: min(by_name, key=by_name.get) for impl, by_name in ratio.items()}
    agree = [impl for impl, name in cheapest.items() if name == "relu"]
    verdict = "holds" if len(agree) == len(ratio) else "holds with conditions" if agree else "does not hold"
    return claim(
        "ReLU is the cheapest activation",
        verdict,
        "the cheapest fwd+bwd is " + ", ".join(
            f"{name} in the {impl} ({ratio[impl][name]:.2f}x ReLU's time)" for impl, name in cheapest.items()
        ) + ".",
    )


def _gelu_forms_claim(seconds):
    faster = {impl: by_name["gelu"] / by_name["gelu-tanh"] for impl, by_name in seconds.items()}
    wins = [impl for impl, r in faster.items() if r > 1.1]
    verdict = "holds" if len(wins) == len(faster) else "holds with conditions" if wins else "does not hold"
    return claim(
        "GELU's tanh approximation is cheaper than the exact (erf) GELU",
        verdict,
        "exact GELU's time over the tanh form's: "
        + ", ".join(f"{r:.2f}x in the {impl}" for impl, r in faster.items()) + " (cheaper means > 1.1x).",
    )
