"""Experiment `dying-relu`: how many hidden units die during training, by learning rate and activation.

An MLP with 3 hidden layers of 64 units (Kaiming init, zero biases) is trained with SGD, momentum
0.9, batch 64, for 300 steps (quick: 60) at several learning rates, once with ReLU, GELU and Swish
(beta = 1) in the same network from the same seed, on each data set: a synthetic 4-class task
(16 features) and, when scikit-learn is installed, its handwritten digits (64 standardised pixels,
10 classes, 360 images held out). Every claim is judged on each data set separately, from the
final dead and stuck fractions (the test accuracy is reported beside them, it does not decide).

At every checkpoint, on the whole training set:

- a unit is *dead* when its pre-activation z = w.h + b is <= 0 for every training input. For ReLU
  this means f'(z) = 0 on all of them: its incoming weights get no gradient from any example.
  GELU and Swish are judged by the same definition;
- a unit is *stuck* when max |f'(z)| over the training set is below 1e-6: no gradient left to move
  it. For ReLU stuck and dead are the same units; a dead GELU or Swish unit is stuck only when its
  pre-activations are far enough below 0 that the derivative's tail has vanished.

A unit *revives* when it is dead at one checkpoint and alive at the end: possible when the layers
below it change its inputs, or while the momentum buffer still carries old gradient. A run whose
loss becomes non-finite is stopped and marked diverged; its numbers are those of its last finite
checkpoint, and the claims leave diverged runs out. Accuracy is measured on held-out inputs (1024
of the synthetic task).
"""

import math

import numpy as np

from recgrad import activations as act
from recgrad import nn
from recgrad.experiments.common import (
    DIGITS_MISSING,
    claim,
    classification_data_sets,
    figure,
    finite_or_none,
    forward_backward,
    mlp,
    save_figure,
    single_threaded,
    synthetic_classification,
    write_result,
)
from recgrad.optim import SGD

NAME = "dying-relu"
DESCRIPTION = "fraction of dead units over training at several learning rates: ReLU against GELU and Swish"

ACTIVATIONS = ("relu", "gelu", "swish")
DERIVATIVES = {"relu": act.relu_grad, "gelu": act.gelu_grad, "swish": act.silu_grad}
FEATURES, WIDTH, CLASSES, DEPTH = 16, 64, 4, 4  # features and classes of the synthetic task
DIGITS_TEST = 360
MOMENTUM = 0.9
_DIES = 0.10  # "dies": at least 10% of the hidden units dead at the end
_ALIVE = 0.01  # "does not die": under 1%
_STUCK = 1e-6  # a unit whose largest |f'(z)| over the training set is below this gets no gradient
_TEST = 1024  # held-out inputs of the synthetic task for the accuracy


def _settings(quick):
    if quick:
        return {"lrs": (0.01, 0.3, 1.0), "steps": 60, "every": 10, "samples": 2048, "batch": 64}
    return {"lrs": (0.01, 0.03, 0.1, 0.3, 1.0), "steps": 300, "every": 10, "samples": 4096, "batch": 64}


def _preactivations(model, x):
    """The pre-activation z of each hidden layer (the Linear outputs that feed an activation)."""
    children = [layer for _, layer in model.children()]
    out, h = [], x
    for index, layer in enumerate(children):
        h = layer(h)
        if isinstance(layer, nn.Linear) and index + 1 < len(children):
            out.append(h)
    return out


def _unit_states(model, x, activation):
    """(dead, stuck, max |f'(z)|) per hidden unit, all layers concatenated, over the inputs x."""
    z = np.concatenate(_preactivations(model, x), axis=1)
    largest_slope = np.max(np.abs(DERIVATIVES[activation](z)), axis=0)
    return np.all(z <= 0.0, axis=0), largest_slope < _STUCK, largest_slope


def _train(activation, lr, data, s, seed):
    x, y, x_test, y_test = data.x, data.y, data.x_test, data.y_test
    model = mlp(data.features, WIDTH, data.classes, DEPTH, activation, "kaiming", np.random.default_rng(seed + 1))
    optimizer = SGD(model.parameters(), lr=lr, momentum=MOMENTUM)
    batches = np.random.default_rng(seed + 2)
    record = {"steps": [], "dead_fraction": [], "stuck_fraction": [], "test_accuracy": []}
    masks, slopes, diverged_at = [], None, None
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is detected and stopped below
        for step in range(s["steps"] + 1):
            if step % s["every"] == 0:
                test = forward_backward(model, x_test, y_test)
                if not math.isfinite(test["loss"]):
                    diverged_at = step
                    break
                dead, stuck, slopes = _unit_states(model, x, activation)
                masks.append(dead)
                record["steps"].append(step)
                record["dead_fraction"].append(float(dead.mean()))
                record["stuck_fraction"].append(float(stuck.mean()))
                record["test_accuracy"].append(test["accuracy"])
            if step == s["steps"]:
                break
            index = batches.integers(0, x.shape[0], s["batch"])
            forward_backward(model, x[index], y[index])
            optimizer.step()
    masks = np.array(masks)
    final, ever_dead = masks[-1], masks.any(axis=0)
    revived = ever_dead & ~final
    return {
        **record,
        "diverged": diverged_at is not None,
        "diverged_at_step": diverged_at,
        "final_dead_fraction": record["dead_fraction"][-1],
        "final_stuck_fraction": record["stuck_fraction"][-1],
        "final_dead_fraction_per_layer": [float(m.mean()) for m in np.split(final, DEPTH - 1)],
        "ever_dead_fraction": float(ever_dead.mean()),
        "revived_fraction_of_ever_dead": float(revived.sum() / ever_dead.sum()) if ever_dead.any() else None,
        "dead_units_median_max_slope": finite_or_none(np.median(slopes[final])) if final.any() else None,
        "final_test_accuracy": record["test_accuracy"][-1],
    }


def _plot(results, s, data_name, out_dir, filename):
    rows = (("dead_fraction", "dead: z <= 0 on all inputs"), ("stuck_fraction", "stuck: max |f'(z)| < 1e-6"),
            ("test_accuracy", "test accuracy"))
    fig, axes = figure(len(rows), len(ACTIVATIONS), panel_width=3.2, panel_height=2.2)
    for col, activation in enumerate(ACTIVATIONS):
        for lr in s["lrs"]:
            run = results[activation][f"{lr:g}"]
            for row, (key, _) in enumerate(rows):
                line = axes[row, col].plot(run["steps"], run[key], label=f"lr {lr:g}")[0]
                if run["diverged"]:  # mark where the run stopped
                    axes[row, col].plot(run["steps"][-1], run[key][-1], "x", color=line.get_color())
        axes[0, col].set_title(activation, fontsize=9)
        axes[-1, col].set_xlabel("SGD step", fontsize=8)
        for row in range(len(rows)):
            axes[row, col].set_ylim(-0.02, 1.02)
    for row, (_, label) in enumerate(rows):
        axes[row, 0].set_ylabel(label, fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Hidden units over training on {data_name} (SGD, momentum {MOMENTUM:g}; x: diverged)")
    return save_figure(fig, out_dir, filename)


def _finished(results, activation, lrs):
    """The learning rates at which `activation`'s run did not diverge."""
    return [lr for lr in lrs if not results[activation][f"{lr:g}"]["diverged"]]


def _claims(results, s, data_name):
    lrs = _finished(results, "relu", s["lrs"])
    relu = {lr: results["relu"][f"{lr:g}"]["final_dead_fraction"] for lr in lrs}
    dying = [lr for lr, f in relu.items() if f >= _DIES]
    safe = [lr for lr, f in relu.items() if f < _ALIVE]
    listing = ", ".join(f"{f:.1%} at lr {lr:g}" for lr, f in relu.items())
    if dying and safe:
        verdict = "holds with conditions"
        condition = (f" ReLU units die (>= {_DIES:.0%}) at lr >= {min(dying):g}, "
                     f"not (< {_ALIVE:.0%}) at lr <= {max(safe):g}.")
    else:
        verdict = "holds" if dying else "does not hold"
        condition = ""
    claims = [claim(
        "ReLU can die",
        verdict,
        f"final fraction of ReLU hidden units inactive on every training input: {listing} (SGD, momentum "
        f"{MOMENTUM:g}, {s['steps']} steps).{condition}",
        data=data_name,
    )]

    revived = {lr: results["relu"][f"{lr:g}"]["revived_fraction_of_ever_dead"] for lr in dying}
    if revived:
        worst = max(revived.values())
        claims.append(claim(
            "Dead ReLU units stay dead",
            "holds" if worst < 0.05 else "holds with conditions" if worst < 0.5 else "does not hold",
            "of the ReLU units dead at some checkpoint, the fraction alive at the end is "
            + ", ".join(f"{r:.1%} at lr {lr:g}" for lr, r in revived.items())
            + " (a dead unit revives only when the layers below change its inputs, or through momentum).",
            data=data_name,
        ))

    compared = [lr for lr in dying if all(lr in _finished(results, a, s["lrs"]) for a in ("gelu", "swish"))]
    if compared:
        stuck = {a: {lr: results[a][f"{lr:g}"]["final_stuck_fraction"] for lr in compared} for a in ACTIVATIONS}
        dead = {a: {lr: results[a][f"{lr:g}"]["final_dead_fraction"] for lr in compared} for a in ACTIVATIONS}
        never = all(stuck[a][lr] < _ALIVE for a in ("gelu", "swish") for lr in compared)
        fewer = any(stuck[a][lr] < stuck["relu"][lr] / 2.0 for a in ("gelu", "swish") for lr in compared)
        verdict = "holds" if never else "holds with conditions" if fewer else "does not hold"
        evidence = "; ".join(
            f"at lr {lr:g}, stuck (no gradient left) / dead (z <= 0 everywhere): "
            + ", ".join(f"{a} {stuck[a][lr]:.1%} / {dead[a][lr]:.1%}" for a in ACTIVATIONS)
            for lr in compared
        )
    else:
        verdict, evidence = "does not hold", "no learning rate killed ReLU units without a GELU or Swish run diverging"
    diverged = [f"{a} at lr {lr:g}" for a in ACTIVATIONS for lr in s["lrs"] if results[a][f"{lr:g}"]["diverged"]]
    if diverged:
        evidence += "; diverged (left out): " + ", ".join(diverged)
    claims.append(claim("GELU and Swish units do not die where ReLU units do", verdict, evidence + ".",
                        data=data_name))
    return claims


def _run_data_set(data, s, seed, out_dir, filename):
    """Every activation at every learning rate on one data set: (results, figure, claims, paragraph)."""
    with single_threaded():
        results = {activation: {f"{lr:g}": _train(activation, lr, data, s, seed) for lr in s["lrs"]}
                   for activation in ACTIVATIONS}
    figure_name = _plot(results, s, data.name, out_dir, filename)
    claims = _claims(results, s, data.name)
    for entry in claims:
        entry["figure"] = figure_name
    table = "; ".join(
        f"{activation} " + ", ".join(
            f"{r['final_dead_fraction']:.0%}/{r['final_stuck_fraction']:.0%} (acc {r['final_test_accuracy']:.2f}"
            + (f", diverged at step {r['diverged_at_step']}" if r["diverged"] else "") + f") at lr {lr}"
            for lr, r in results[activation].items()
        )
        for activation in ACTIVATIONS
    )
    paragraph = (
        f"On {data.name}: dead/stuck fraction of the {WIDTH * (DEPTH - 1)} hidden units and test accuracy after "
        f"{s['steps']} SGD steps: {table}. Claims: " + "; ".join(f"{c['claim']}: {c['verdict']}" for c in claims) + "."
    )
    return results, figure_name, claims, paragraph


def run(out_dir, quick=False, seed=0):
    """Train every activation at every learning rate on each data set, track dead and stuck units, judge."""
    s = _settings(quick)
    synthetic = synthetic_classification(s["samples"], _TEST, FEATURES, CLASSES, np.random.default_rng(seed))
    data_sets = classification_data_sets(synthetic, NAME, DIGITS_TEST, seed)
    results, figures, claims, paragraphs = {}, [], [], []
    for data in data_sets:
        filename = "dying_relu.png" if data.name == "synthetic" else f"dying_relu_{data.name}.png"
        results[data.name], figure_name, data_claims, paragraph = _run_data_set(data, s, seed, out_dir, filename)
        figures.append(figure_name)
        claims += data_claims
        paragraphs.append(paragraph)
    if len(data_sets) == 1:  # scikit-learn missing: the digits were skipped
        paragraphs.append(f"Real data: {DIGITS_MISSING}.")
    numbers = {
        "settings": {**s, "width": WIDTH, "depth": DEPTH, "momentum": MOMENTUM, "init": "kaiming",
                     "stuck_below": _STUCK},
        "data_sets": {data.name: {"features": data.features, "classes": data.classes, "train": len(data.y),
                                  "test": len(data.y_test)} for data in data_sets},
        "results": results,
    }
    return write_result(out_dir, {
        "name": NAME, "figures": figures, "numbers": numbers, "claims": claims, "verdict": " ".join(paragraphs),
    })
