"""Experiment `dying-relu`: how many hidden units die during training, by learning rate and activation.

An MLP with 3 hidden layers of 64 units (Kaiming init, zero biases) is trained on a synthetic
4-class task (16 features) with SGD, momentum 0.9, batch 64, for 300 steps (quick: 60) at several
learning rates, once with ReLU, GELU and Swish (beta = 1) in the same network from the same seed.

A unit is *dead* when its pre-activation z = w.h + b is <= 0 for every input of a fixed probe batch
(512 training inputs). For ReLU that means f'(z) = 0 on all of them: the unit's incoming weights get
no gradient from any of these inputs. GELU and Swish are judged by the same definition, and for
their dead units we also record the largest |f'(z)| over the probe, the gradient left to revive
them (0 exactly for ReLU). A unit *revives* when it is dead at one checkpoint and alive at a later
one (possible in layers 2 and 3, whose inputs keep changing; never in layer 1 for ReLU).
"""

import math

import numpy as np

from recgrad import activations as act
from recgrad import nn
from recgrad.experiments.common import (
    claim,
    classification_task,
    figure,
    finite_or_none,
    forward_backward,
    mlp,
    save_figure,
    single_threaded,
    write_result,
)
from recgrad.optim import SGD

NAME = "dying-relu"
DESCRIPTION = "fraction of dead units over training at several learning rates: ReLU against GELU and Swish"

ACTIVATIONS = ("relu", "gelu", "swish")
DERIVATIVES = {"relu": act.relu_grad, "gelu": act.gelu_grad, "swish": act.silu_grad}
FEATURES, WIDTH, CLASSES, DEPTH = 16, 64, 4, 4
MOMENTUM = 0.9
_DIES = 0.10  # "dies": at least 10% of the hidden units dead at the end
_ALIVE = 0.01  # "does not die": under 1%


def _settings(quick):
    if quick:
        return {"lrs": (0.01, 1.0), "steps": 60, "every": 5, "samples": 2048, "batch": 64, "probe": 512}
    return {"lrs": (0.01, 0.03, 0.1, 0.3, 1.0), "steps": 300, "every": 10, "samples": 4096, "batch": 64,
            "probe": 512}


def _preactivations(model, x):
    """The pre-activation z of each hidden layer (the Linear outputs that feed an activation)."""
    children = [layer for _, layer in model.children()]
    out, h = [], x
    for index, layer in enumerate(children):
        h = layer(h)
        if isinstance(layer, nn.Linear) and index + 1 < len(children):
            out.append(h)
    return out


def _dead_mask(model, probe):
    """Boolean per hidden unit (all layers concatenated): z <= 0 on every probe input."""
    return np.concatenate([np.all(z <= 0.0, axis=0) for z in _preactivations(model, probe)])


def _revival_gradient(model, probe, activation, dead):
    """Median over dead units of max |f'(z)| over the probe: what is left to move them (None if none dead)."""
    if not dead.any():
        return None
    z = np.concatenate(_preactivations(model, probe), axis=1)[:, dead]
    return finite_or_none(np.median(np.max(np.abs(DERIVATIVES[activation](z)), axis=0)))


def _train(activation, lr, x, y, s, seed):
    model = mlp(FEATURES, WIDTH, CLASSES, DEPTH, activation, "kaiming", np.random.default_rng(seed + 1))
    optimizer = SGD(model.parameters(), lr=lr, momentum=MOMENTUM)
    batches = np.random.default_rng(seed + 2)
    probe_x, probe_y = x[: s["probe"]], y[: s["probe"]]
    steps, dead_fraction, accuracy, masks = [], [], [], []
    diverged = False
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is detected and stopped below
        for step in range(s["steps"] + 1):
            if step % s["every"] == 0:
                mask = _dead_mask(model, probe_x)
                probe = forward_backward(model, probe_x, probe_y)
                if not math.isfinite(probe["loss"]):
                    diverged = True
                    break
                steps.append(step)
                masks.append(mask)
                dead_fraction.append(float(mask.mean()))
                accuracy.append(probe["accuracy"])
            if step == s["steps"]:
                break
            index = batches.integers(0, x.shape[0], s["batch"])
            forward_backward(model, x[index], y[index])
            optimizer.step()
    masks = np.array(masks)
    ever_dead = masks.any(axis=0)
    revived = ever_dead & ~masks[-1]
    final = masks[-1]
    return {
        "steps": steps,
        "dead_fraction": dead_fraction,
        "probe_accuracy": accuracy,
        "diverged": diverged,
        "final_dead_fraction": dead_fraction[-1],
        "final_dead_fraction_per_layer": [float(m.mean()) for m in np.split(final, DEPTH - 1)],
        "ever_dead_fraction": float(ever_dead.mean()),
        "revived_fraction_of_ever_dead": float(revived.sum() / ever_dead.sum()) if ever_dead.any() else None,
        "revival_gradient_median": _revival_gradient(model, probe_x, activation, final),
        "final_probe_accuracy": accuracy[-1],
    }


def _plot(results, s, out_dir):
    fig, axes = figure(2, len(ACTIVATIONS), panel_width=3.2, panel_height=2.5)
    for col, activation in enumerate(ACTIVATIONS):
        for lr in s["lrs"]:
            run = results[activation][f"{lr:g}"]
            axes[0, col].plot(run["steps"], run["dead_fraction"], label=f"lr {lr:g}")
            axes[1, col].plot(run["steps"], run["probe_accuracy"], label=f"lr {lr:g}")
        axes[0, col].set_title(activation, fontsize=9)
        axes[0, col].set_ylim(-0.02, 1.0)
        axes[1, col].set_xlabel("SGD step", fontsize=8)
        axes[1, col].set_ylim(0.0, 1.0)
    axes[0, 0].set_ylabel("dead fraction of hidden units", fontsize=8)
    axes[1, 0].set_ylabel("probe accuracy", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Dead units (z <= 0 on all {s['probe']} probe inputs), SGD momentum {MOMENTUM:g}")
    return save_figure(fig, out_dir, "dying_relu.png")


def _claims(results, s):
    relu = {lr: results["relu"][f"{lr:g}"]["final_dead_fraction"] for lr in s["lrs"]}
    dying = [lr for lr, f in relu.items() if f >= _DIES]
    safe = [lr for lr, f in relu.items() if f < _ALIVE]
    listing = ", ".join(f"{f:.1%} at lr {lr:g}" for lr, f in relu.items())
    if dying and safe:
        verdict = "holds with conditions"
        condition = f" ReLU units die (>= {_DIES:.0%}) at lr >= {min(dying):g}, not (< {_ALIVE:.0%}) at lr <= {max(safe):g}."
    else:
        verdict = "holds" if dying else "does not hold"
        condition = ""
    claims = [claim(
        "ReLU can die",
        verdict,
        f"final dead fraction of ReLU hidden units: {listing} (SGD, momentum {MOMENTUM:g}, {s['steps']} steps).{condition}",
    )]

    revived = [results["relu"][f"{lr:g}"]["revived_fraction_of_ever_dead"] for lr in dying]
    revived = [r for r in revived if r is not None]
    if revived:
        worst = max(revived)
        claims.append(claim(
            "Dead ReLU units stay dead",
            "holds" if worst < 0.05 else "holds with conditions" if worst < 0.5 else "does not hold",
            "of the ReLU units that were dead at some checkpoint, at most "
            f"{worst:.1%} were alive at the end (over the learning rates where ReLU died).",
        ))

    top = max(s["lrs"])
    top_relu = results["relu"][f"{top:g}"]["final_dead_fraction"]
    others = {a: results[a][f"{top:g}"] for a in ("gelu", "swish")}
    fractions = {a: r["final_dead_fraction"] for a, r in others.items()}
    if all(f < _ALIVE for f in fractions.values()):
        verdict = "holds"
    elif any(f < top_relu / 2.0 for f in fractions.values()):
        verdict = "holds with conditions"
    else:
        verdict = "does not hold"
    gradients = ", ".join(
        f"{a} {r['revival_gradient_median']:.1e}" for a, r in others.items() if r["revival_gradient_median"] is not None
    )
    claims.append(claim(
        "GELU and Swish do not die where ReLU does",
        verdict,
        f"at lr {top:g} the dead fraction (same definition) is ReLU {top_relu:.1%}, "
        + ", ".join(f"{a} {f:.1%}" for a, f in fractions.items())
        + (f"; the median over their dead units of the largest |f'(z)| left is {gradients}." if gradients else "."),
    ))
    return claims


def run(out_dir, quick=False, seed=0):
    """Train every activation at every learning rate, track dead units, judge the claims."""
    s = _settings(quick)
    x, y = classification_task(s["samples"], FEATURES, CLASSES, np.random.default_rng(seed))
    with single_threaded():
        results = {activation: {f"{lr:g}": _train(activation, lr, x, y, s, seed) for lr in s["lrs"]}
                   for activation in ACTIVATIONS}
    figures = [_plot(results, s, out_dir)]
    claims = _claims(results, s)
    table = "; ".join(
        f"{activation} " + ", ".join(
            f"{results[activation][f'{lr:g}']['final_dead_fraction']:.0%} (acc "
            f"{results[activation][f'{lr:g}']['final_probe_accuracy']:.2f}) at lr {lr:g}" for lr in s["lrs"]
        )
        for activation in ACTIVATIONS
    )
    verdict = (
        f"Final dead fraction of the {WIDTH * (DEPTH - 1)} hidden units and probe accuracy after {s['steps']} "
        f"SGD steps: {table}. Claims: " + "; ".join(f"{c['claim']}: {c['verdict']}" for c in claims) + "."
    )
    numbers = {
        "settings": {**s, "features": FEATURES, "width": WIDTH, "classes": CLASSES, "depth": DEPTH,
                     "momentum": MOMENTUM, "init": "kaiming"},
        "results": results,
    }
    return write_result(out_dir, {
        "name": NAME, "figures": figures, "numbers": numbers, "claims": claims, "verdict": verdict,
    })
