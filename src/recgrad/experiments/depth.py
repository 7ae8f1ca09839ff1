"""Experiment `depth`: vanishing and exploding gradients in a deep MLP, for each activation and initialisation.

A 30-layer MLP (29 hidden layers of width 64; quick: width 32) is built for every activation
(sigmoid, tanh, ReLU, GELU, Swish) and every initialisation of `common.INIT_SCHEMES` (Xavier with
gain 1, Kaiming for ReLU, PyTorch's Linear default), from the same seed, on two data sets: a
synthetic 4-class task (`common.classification_task`, as many features as the width) and, when
scikit-learn is installed, its handwritten digits (64 standardised pixels, 10 classes; the
1437 training images). On a fixed probe batch of each we record per layer l:

- ||dL/dz_l||, the back-propagated gradient at the output z_l of Linear layer l,
- ||dL/dW_l||, the weight gradient (= dL/dz_l^T h_{l-1}, so it also carries the forward signal),
- Var(h_l), the variance of the hidden activations,

at initialisation and after training with SGD (momentum 0.9, lr 0.01, batch 128, 300 steps;
quick: 10 steps). "Spread" is max/min over the layers; "first/last" divides layer 1 by layer 30.

Why both gradients: a ReLU network without biases is positively homogeneous, so rescaling its
weights moves all weight-gradient norms together and ||dL/dW_l|| stays balanced across layers
under any scale; the back-propagated gradient shows the vanishing that a too-small init causes.
The init-pairing claims are therefore read off ||dL/dz_l|| and Var(h_l) at initialisation, where
the claims are made (the training loss and accuracy are reported beside them but do not decide).
Every claim is judged on each data set separately.
"""

import math

import numpy as np

from recgrad.experiments.common import (
    ACTIVATION_LAYERS,
    DIGITS_MISSING,
    INIT_SCHEMES,
    claim,
    classification_data_sets,
    figure,
    finite_or_none,
    forward_backward,
    linear_layers,
    mlp,
    save_figure,
    single_threaded,
    synthetic_classification,
    write_result,
)
from recgrad.optim import SGD

NAME = "depth"
DESCRIPTION = "per-layer gradient norms and activation variance of a 30-layer MLP, per activation x init"

DEPTH = 30
CLASSES = 4  # of the synthetic task
DIGITS_TEST = 360  # digits held out (unused here: the probe and the training batches come from the rest)
LEARNING_RATE = 0.01
MOMENTUM = 0.9
_FLOOR = 1e-30  # per-layer values are drawn as log10, floored here (the JSON keeps them exact)
_WITHIN = 10.0  # "stays in range": spread across layers at most a factor of 10


def _settings(quick):
    if quick:
        return {"width": 32, "samples": 512, "batch": 64, "probe": 256, "steps": 10, "record_every": 1}
    return {"width": 64, "samples": 2048, "batch": 128, "probe": 512, "steps": 300, "record_every": 10}


def _clean(record):
    """A forward_backward record with every float JSON-safe (None for NaN/inf)."""
    return {key: [finite_or_none(v) for v in value] if isinstance(value, list) else finite_or_none(value)
            for key, value in record.items()}


def _ratio(a, b):
    if a is None or b is None or b == 0.0:
        return None
    return finite_or_none(a / b)


def _spread(values):
    if any(v is None for v in values) or min(values) == 0.0:
        return None
    return finite_or_none(max(values) / min(values))


def _train(activation, scheme, x, y, classes, s, seed):
    """Build, probe, train and probe again one configuration; returns its numbers."""
    rng = np.random.default_rng(seed + 1)  # the same weight draws for every activation of a scheme
    model = mlp(x.shape[1], s["width"], classes, DEPTH, activation, scheme, rng)
    probe_x, probe_y = x[: s["probe"]], y[: s["probe"]]
    first_weight = linear_layers(model)[0].weight.data.copy()
    at_init = _clean(forward_backward(model, probe_x, probe_y))
    optimizer = SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    losses, diverged = [], False
    batches = np.random.default_rng(seed + 2)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is detected and stopped below
        for step in range(s["steps"]):
            index = batches.integers(0, x.shape[0], s["batch"])
            loss = forward_backward(model, x[index], y[index])["loss"]
            if not math.isfinite(loss):
                diverged = True
                break
            if step % s["record_every"] == 0:
                losses.append(loss)
            optimizer.step()
        trained = _clean(forward_backward(model, probe_x, probe_y))
    change = np.linalg.norm(linear_layers(model)[0].weight.data - first_weight) / np.linalg.norm(first_weight)
    summary = {}
    for stage, record in (("init", at_init), ("trained", trained)):
        hidden_var = record["activation_var"]
        summary[stage] = {
            "weight_grad_first_over_last": _ratio(record["weight_grad_norm"][0], record["weight_grad_norm"][-1]),
            "weight_grad_spread": _spread(record["weight_grad_norm"]),
            "output_grad_first_over_last": _ratio(record["output_grad_norm"][0], record["output_grad_norm"][-1]),
            "output_grad_spread": _spread(record["output_grad_norm"]),
            "activation_var_last_over_first": _ratio(hidden_var[-1], hidden_var[0]),
            "loss": record["loss"],
            "accuracy": record["accuracy"],
        }
    return {
        "init": at_init,
        "trained": trained,
        "summary": summary,
        "loss_curve": losses,
        "diverged": diverged,
        "first_layer_relative_change": finite_or_none(change),
    }


def _plot_per_layer(results, key, ylabel, title, out_dir, filename, stages=("init", "trained")):
    fig, axes = figure(len(stages), len(ACTIVATION_LAYERS), panel_width=2.6, panel_height=2.2)
    for row, stage in enumerate(stages):
        for col, activation in enumerate(ACTIVATION_LAYERS):
            ax = axes[row, col]
            for scheme in INIT_SCHEMES:
                values = results[activation][scheme][stage][key]
                plotted = np.log10([_FLOOR if v is None or v <= _FLOOR else v for v in values])
                ax.plot(np.arange(1, len(plotted) + 1), plotted, label=scheme)
            ax.set_title(f"{activation}, {stage}", fontsize=9)
            ax.set_xlabel("layer", fontsize=8)
        axes[row, 0].set_ylabel(ylabel, fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, out_dir, filename)


def _plot_losses(results, s, classes, data_name, out_dir, filename):
    fig, axes = figure(1, len(ACTIVATION_LAYERS), panel_width=2.6, panel_height=2.2)
    for col, activation in enumerate(ACTIVATION_LAYERS):
        ax = axes[0, col]
        for scheme in INIT_SCHEMES:
            curve = results[activation][scheme]["loss_curve"]
            ax.plot(np.arange(len(curve)) * s["record_every"], curve, label=scheme)
        ax.axhline(math.log(classes), color="0.6", linestyle=":", linewidth=1)
        ax.set_title(activation, fontsize=9)
        ax.set_xlabel("SGD step", fontsize=8)
    axes[0, 0].set_ylabel(f"training loss (dotted: log {classes}, chance)", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Training a {DEPTH}-layer MLP with SGD (lr {LEARNING_RATE:g}, momentum {MOMENTUM:g}) "
                 f"on {data_name}")
    return save_figure(fig, out_dir, filename)


def _fmt(value):
    return "n/a" if value is None else f"{value:.1e}"


def _pairing_claim(statement, results, activation, scheme, others, data_name):
    """Does `scheme` keep the gradients (spread <= 10) and, better still, the forward signal for `activation`?

    holds: back-propagated gradient spread <= 10 and activation variance last/first in [0.1, 10];
    holds with conditions: the gradients stay in range but the forward signal does not;
    does not hold: the gradients leave the range.
    """
    summary = results[activation][scheme]["summary"]["init"]
    spread, var_ratio = summary["output_grad_spread"], summary["activation_var_last_over_first"]
    grads_ok = spread is not None and spread <= _WITHIN
    signal_ok = var_ratio is not None and 1.0 / _WITHIN <= var_ratio <= _WITHIN
    verdict = "does not hold" if not grads_ok else "holds" if signal_ok else "holds with conditions"
    rivals = ", ".join(
        f"{other} {_fmt(results[activation][other]['summary']['init']['output_grad_spread'])}" for other in others
    )
    evidence = (
        f"at init, {activation} + {scheme}: back-propagated gradient spread over {DEPTH} layers "
        f"{_fmt(spread)} (other inits: {rivals}; in range means <= {_WITHIN:g}), activation variance "
        f"last/first hidden layer {_fmt(var_ratio)}."
    )
    return claim(statement, verdict, evidence, data=data_name)


def _claims(results, classes, data_name):
    claims = []
    sigmoid_ratios = {scheme: results["sigmoid"][scheme]["summary"]["init"]["weight_grad_first_over_last"]
                      for scheme in INIT_SCHEMES}
    vanishing = all(r is not None and r < 1e-3 for r in sigmoid_ratios.values())
    xavier_ratio = sigmoid_ratios["xavier"]
    claims.append(claim(
        "Sigmoid causes vanishing gradients in deep networks",
        "holds" if vanishing else "holds with conditions" if xavier_ratio is not None and xavier_ratio < 1e-3
        else "does not hold",
        f"in a {DEPTH}-layer sigmoid MLP the first layer's weight-gradient norm over the last layer's is "
        + ", ".join(f"{_fmt(r)} with {scheme}" for scheme, r in sigmoid_ratios.items()) + " at initialisation.",
        data=data_name,
    ))
    for statement, activation, scheme, others in (
        ("Kaiming init suits ReLU", "relu", "kaiming", ("xavier", "default")),
        ("Xavier init suits tanh", "tanh", "xavier", ("kaiming", "default")),
        ("Xavier init suits sigmoid", "sigmoid", "xavier", ("kaiming", "default")),
    ):
        claims.append(_pairing_claim(statement, results, activation, scheme, others, data_name))

    spreads = {act: results[act]["kaiming"]["summary"]["init"]["output_grad_spread"] for act in ("gelu", "swish")}
    fine = [act for act, value in spreads.items() if value is not None and value <= _WITHIN]
    claims.append(claim(
        "Kaiming init (ReLU gain) also keeps GELU and Swish gradients in range",
        "holds" if len(fine) == len(spreads) else "holds with conditions" if fine else "does not hold",
        "back-propagated gradient spread at init with Kaiming: "
        + ", ".join(f"{act} {_fmt(value)}" for act, value in spreads.items())
        + f" (in range means <= {_WITHIN:g}).",
        data=data_name,
    ))

    default_spreads = {act: results[act]["default"]["summary"]["init"]["output_grad_spread"]
                       for act in ACTIVATION_LAYERS}
    kept = [act for act, value in default_spreads.items() if value is not None and value <= _WITHIN]
    claims.append(claim(
        f"PyTorch's default Linear init (Var = 1/(3 fan_in)) keeps gradients in range in a {DEPTH}-layer MLP",
        "holds" if len(kept) == len(default_spreads) else "holds with conditions" if kept else "does not hold",
        "back-propagated gradient spread at init with the default: "
        + ", ".join(f"{act} {_fmt(value)}" for act, value in default_spreads.items()) + ".",
        data=data_name,
    ))

    sigmoid_run, relu_run = results["sigmoid"]["xavier"], results["relu"]["kaiming"]
    moved = sigmoid_run["first_layer_relative_change"]
    final = sigmoid_run["summary"]["trained"]["loss"]
    final = math.inf if final is None else final  # a diverged probe counts as not learning
    stuck = moved is not None and moved < 1e-6 and final >= 0.95 * math.log(classes)
    claims.append(claim(
        f"A {DEPTH}-layer sigmoid MLP does not learn with SGD: its first layer does not move and its loss "
        "stays at chance",
        "holds" if stuck else "does not hold",
        f"after training, sigmoid + Xavier's first-layer weights moved by a relative {_fmt(moved)} "
        f"(ReLU + Kaiming: {_fmt(relu_run['first_layer_relative_change'])}) and its probe loss is {final:.3f} "
        f"against log {classes} = {math.log(classes):.3f} for chance "
        f"(ReLU + Kaiming: {relu_run['summary']['trained']['loss']:.3f}).",
        data=data_name,
    ))
    return claims


def _loss_drop(run):
    """Relative decrease of the probe loss from initialisation to the end of training (None if diverged)."""
    start, end = run["summary"]["init"]["loss"], run["summary"]["trained"]["loss"]
    if run["diverged"] or start is None or end is None:
        return None
    return (start - end) / start


def _verdict(results, claims, classes, data_name):
    best = {}
    for activation in ACTIVATION_LAYERS:
        spreads = {scheme: results[activation][scheme]["summary"]["init"]["output_grad_spread"]
                   for scheme in INIT_SCHEMES}
        known = {k: v for k, v in spreads.items() if v is not None}
        best[activation] = min(known, key=known.get) if known else None
    trained = {
        f"{activation}+{scheme}": results[activation][scheme]["summary"]["trained"]["accuracy"]
        for activation in ACTIVATION_LAYERS for scheme in INIT_SCHEMES
    }
    top = max((k for k, v in trained.items() if v is not None), key=trained.get)
    verdicts = "; ".join(f"{c['claim']}: {c['verdict']}" for c in claims)
    return (
        f"On {data_name}: in a {DEPTH}-layer MLP the initialisation that keeps the back-propagated gradient most even "
        "across layers is " + ", ".join(f"{best[a]} for {a}" for a in ACTIVATION_LAYERS)
        + f". After training, the best probe accuracy is {trained[top]:.3f} ({top}); sigmoid + Xavier reaches "
        f"{trained['sigmoid+xavier']:.3f} and ReLU + Kaiming {trained['relu+kaiming']:.3f} "
        f"(chance about {1.0 / classes:.2f}). Claims: {verdicts}."
    )


def _run_data_set(data, s, seed, out_dir, suffix):
    """Every activation x init on one data set: (results, figures, claims, verdict paragraph)."""
    x, y = data.x[: s["samples"]], data.y[: s["samples"]]
    with single_threaded():
        results = {activation: {scheme: _train(activation, scheme, x, y, data.classes, s, seed)
                                for scheme in INIT_SCHEMES}
                   for activation in ACTIVATION_LAYERS}
    on = f" on {data.name}"
    figures = [
        _plot_per_layer(results, "output_grad_norm", "log10 ||dL/dz_l||", "Back-propagated gradient per layer" + on,
                        out_dir, f"depth_output_gradients{suffix}.png"),
        _plot_per_layer(results, "weight_grad_norm", "log10 ||dL/dW_l||", "Weight gradient per layer" + on,
                        out_dir, f"depth_weight_gradients{suffix}.png"),
        _plot_per_layer(results, "activation_var", "log10 Var(h_l)", "Activation variance per hidden layer" + on,
                        out_dir, f"depth_activation_variance{suffix}.png"),
        _plot_losses(results, s, data.classes, data.name, out_dir, f"depth_loss{suffix}.png"),
    ]
    claims = _claims(results, data.classes, data.name)
    for entry in claims:
        entry["figure"] = figures[0]
    return results, figures, claims, _verdict(results, claims, data.classes, data.name)


def run(out_dir, quick=False, seed=0):
    """Train every activation x init configuration on each data set, draw the figures, judge the claims."""
    s = _settings(quick)
    synthetic = synthetic_classification(s["samples"], 0, s["width"], CLASSES, np.random.default_rng(seed))
    data_sets = classification_data_sets(synthetic, NAME, DIGITS_TEST, seed)
    results, figures, claims, paragraphs = {}, [], [], []
    for data in data_sets:
        suffix = "" if data.name == "synthetic" else f"_{data.name}"
        results[data.name], data_figures, data_claims, paragraph = _run_data_set(data, s, seed, out_dir, suffix)
        figures += data_figures
        claims += data_claims
        paragraphs.append(paragraph)
    if len(data_sets) == 1:  # scikit-learn missing: the digits were skipped
        paragraphs.append(f"Real data: {DIGITS_MISSING}.")
    numbers = {
        "settings": {**s, "depth": DEPTH, "lr": LEARNING_RATE, "momentum": MOMENTUM},
        "data_sets": {data.name: {"classes": data.classes, "features": data.features,
                                  "samples": len(data.x[: s["samples"]])} for data in data_sets},
        "results": results,
    }
    return write_result(out_dir, {
        "name": NAME, "figures": figures, "numbers": numbers, "claims": claims, "verdict": " ".join(paragraphs),
    })
