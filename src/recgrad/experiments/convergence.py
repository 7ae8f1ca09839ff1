"""Experiment `convergence`: the same tasks trained with sigmoid, tanh, ReLU, GELU and Swish.

Two tasks, each trained once per activation with everything else equal (data, seed, widths,
optimizer, learning rate, batches):

1. Classification (`common.classification_task`: 20 features, 4 classes, labels from a random
   tanh teacher; 3000 training and 1000 test points) with an MLP of width 64, shallow (3 Linear
   layers) and deep (16 Linear layers), trained by SGD with momentum 0.9, lr 0.05, batch 128.
   Each activation gets its textbook initialisation: Xavier (gain 1) for sigmoid and tanh,
   Kaiming (ReLU gain) for ReLU, GELU and Swish; biases zero. The full training loss and the test
   accuracy are recorded every 25 steps (500 steps in all), with the cumulative wall time of the
   training steps, and averaged over 2 seeds (each draws the weights and the batch order; the task
   is fixed). --quick: 600 points, 8 layers deep, 120 steps, one seed.
2. Recommendation: a TwoTower model (embedding 32, one hidden layer of 64 per tower, the model's
   Kaiming init with PyTorch's gain per activation, L2-normalised outputs) trained on
   `recgrad.data.synthetic` with the usual two-tower loss, InfoNCE over cosine scores
   (temperature 0.1, 256 uniform negatives shared by the batch; 64 in --quick), and dense Adam
   (lr 1e-2); Recall@20 on its test split after every epoch. (Trained with BPR and Adam at lr 1e-2
   or 1e-3 instead, these towers stayed at the popularity baseline for 8 epochs with ReLU and with
   tanh when this experiment was built, so BPR would not tell the activations apart in this budget.)

The claims read off the numbers:
- "tanh converges faster than sigmoid" (LeCun et al., "Efficient BackProp", 1998: zero-centred
  outputs): the steps each needs to bring the training loss to half its initial value (ln 4 / 2),
  and for the two-tower model the Recall@20 averaged over the epochs (the area under the curve).
- "Swish/GELU are better than ReLU in deep models" (Ramachandran et al. 2017; Hendrycks & Gimpel
  2016): the deep MLP's final test accuracy, against the spread between seeds.
"""

import math
import time

import numpy as np

from recgrad.data import synthetic
from recgrad.experiments.common import (
    classification_task,
    claim,
    cross_entropy,
    figure,
    forward_backward,
    mlp,
    save_figure,
    write_result,
)
from recgrad.models import TwoTower
from recgrad.optim import SGD
from recgrad.training import Trainer

NAME = "convergence"
DESCRIPTION = "sigmoid, tanh, ReLU, GELU and Swish on the same MLP classification task and two-tower recommender"

ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu", "swish")
INIT_FOR = {"sigmoid": "xavier", "tanh": "xavier", "relu": "kaiming", "gelu": "kaiming", "swish": "kaiming"}
COLORS = {"sigmoid": "tab:blue", "tanh": "tab:orange", "relu": "tab:green", "gelu": "tab:red", "swish": "tab:purple"}
FEATURES, CLASSES, WIDTH = 20, 4, 64
LR, MOMENTUM, BATCH = 0.05, 0.9, 128
# Gaps below this (in test accuracy) count as a tie: about the seed-to-seed spread measured here.
ACCURACY_TIE = 0.01
# Recall@20 gaps below this fraction of the larger value count as a tie.
RELATIVE_TIE = 0.05


def _settings(quick):
    if quick:
        return {"n_train": 600, "n_test": 400, "depths": {"shallow": 3, "deep": 8}, "steps": 120,
                "record_every": 10, "seeds": 1,
                "synthetic": {"n_users": 300, "n_items": 500, "interactions_per_user": 20}, "tower_epochs": 3,
                "tower_batch": 256, "tower_negatives": 64}
    return {"n_train": 3000, "n_test": 1000, "depths": {"shallow": 3, "deep": 16}, "steps": 500,
            "record_every": 25, "seeds": 2,
            "synthetic": {"n_users": 2000, "n_items": 3000, "interactions_per_user": 30}, "tower_epochs": 12,
            "tower_batch": 1024, "tower_negatives": 256}


def _train_mlp(x, y, x_test, y_test, depth, activation, steps, record_every, seed):
    """SGD+momentum on one MLP; returns the recorded curves (steps, loss, test accuracy, seconds)."""
    rng = np.random.default_rng(seed)
    model = mlp(FEATURES, WIDTH, CLASSES, depth, activation, INIT_FOR[activation], rng)
    optimizer = SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    record = {"step": [], "loss": [], "test_accuracy": [], "seconds": []}
    order, position, seconds = rng.permutation(len(y)), 0, 0.0

    def measure(step):
        record["step"].append(step)
        record["loss"].append(cross_entropy(model(x), y)[0])
        record["test_accuracy"].append(float(np.mean(np.argmax(model(x_test), axis=1) == y_test)))
        record["seconds"].append(seconds)

    measure(0)
    for step in range(1, steps + 1):
        if position + BATCH > len(y):
            order, position = rng.permutation(len(y)), 0
        batch = order[position:position + BATCH]
        position += BATCH
        start = time.perf_counter()
        with np.errstate(over="ignore"):
            forward_backward(model, x[batch], y[batch])
        optimizer.step()
        seconds += time.perf_counter() - start
        if step % record_every == 0:
            measure(step)
    return record


def _steps_to(record, target):
    """First recorded step at which the training loss is <= target, or None."""
    return next((step for step, loss in zip(record["step"], record["loss"]) if loss <= target), None)


def _mean_curves(records):
    """Element-wise mean over seeds of each recorded curve."""
    return {key: np.mean([r[key] for r in records], axis=0).tolist() for key in records[0]}


def _run_classification(settings, seed):
    rng = np.random.default_rng(seed)
    x_all, y_all = classification_task(settings["n_train"] + settings["n_test"], FEATURES, CLASSES, rng)
    x, y = x_all[:settings["n_train"]], y_all[:settings["n_train"]]
    x_test, y_test = x_all[settings["n_train"]:], y_all[settings["n_train"]:]
    target = math.log(CLASSES) / 2.0
    numbers = {"target_loss": target, "depths": settings["depths"], "steps": settings["steps"],
               "seeds": settings["seeds"], "init": INIT_FOR, "lr": LR, "momentum": MOMENTUM, "batch": BATCH}
    for label, depth in settings["depths"].items():
        per_activation = {}
        for activation in ACTIVATIONS:
            records = [
                _train_mlp(x, y, x_test, y_test, depth, activation, settings["steps"], settings["record_every"],
                           seed=seed * 1000 + 17 * s + 1)
                for s in range(settings["seeds"])
            ]
            final_accuracy = [r["test_accuracy"][-1] for r in records]
            steps_to = [_steps_to(r, target) for r in records]
            per_activation[activation] = {
                "curves": _mean_curves(records),
                "final_loss": float(np.mean([r["loss"][-1] for r in records])),
                "final_test_accuracy": float(np.mean(final_accuracy)),
                "final_test_accuracy_std": float(np.std(final_accuracy)),
                "steps_to_target": steps_to,
                "mean_steps_to_target": None if None in steps_to else float(np.mean(steps_to)),
                "seconds": float(np.mean([r["seconds"][-1] for r in records])),
            }
        numbers[label] = per_activation
    return numbers


def _run_two_tower(settings, seed):
    data = synthetic(seed=seed, **settings["synthetic"])
    numbers = {"data": settings["synthetic"], "epochs": settings["tower_epochs"]}
    for activation in ACTIVATIONS:
        model = TwoTower(data.n_users, data.n_items, dim=32, hidden=(64,), activation=activation, normalize=True,
                         rng=seed)
        trainer = Trainer(model, loss="infonce", optimizer="adam", lr=1e-2, batch_size=settings["tower_batch"],
                          negatives=settings["tower_negatives"], negatives_mode="shared", similarity="cosine",
                          temperature=0.1, epochs=settings["tower_epochs"], seed=seed, progress=False)
        result = trainer.fit(data)
        history = result["history"]
        numbers[activation] = {
            "loss": [r["loss"] for r in history],
            "recall@20": [r["recall@20"] for r in history],
            "seconds": np.cumsum([r["train_seconds"] for r in history]).tolist(),
        }
        numbers["popularity_recall@20"] = result["popularity"]["recall@20"]
    return numbers


def _plot_classification(numbers, out_dir):
    labels = list(numbers["depths"])
    fig, axes = figure(len(labels), 3, panel_width=3.3, panel_height=2.6)
    for row, label in enumerate(labels):
        for activation in ACTIVATIONS:
            curves = numbers[label][activation]["curves"]
            style = {"color": COLORS[activation], "label": activation, "linewidth": 1.2}
            axes[row, 0].plot(curves["step"], curves["loss"], **style)
            axes[row, 1].plot(curves["step"], curves["test_accuracy"], **style)
            axes[row, 2].plot(curves["seconds"], curves["loss"], **style)
        depth = numbers["depths"][label]
        axes[row, 0].axhline(numbers["target_loss"], color="gray", linestyle=":", linewidth=0.8)
        axes[row, 0].set(xlabel="step", ylabel="training loss", title=f"{label} MLP ({depth} layers)")
        axes[row, 1].set(xlabel="step", ylabel="test accuracy", title=f"{label}: test accuracy")
        axes[row, 2].set(xlabel="training seconds", ylabel="training loss", title=f"{label}: loss vs wall time")
    axes[0, 0].legend(fontsize=7)
    return save_figure(fig, out_dir, "convergence_mlp.png")


def _plot_two_tower(numbers, out_dir):
    fig, axes = figure(1, 3, panel_width=3.3, panel_height=2.6)
    for activation in ACTIVATIONS:
        entry = numbers[activation]
        epochs = np.arange(1, len(entry["loss"]) + 1)
        style = {"color": COLORS[activation], "label": activation, "marker": ".", "linewidth": 1.2}
        axes[0, 0].plot(epochs, entry["loss"], **style)
        axes[0, 1].plot(epochs, entry["recall@20"], **style)
        axes[0, 2].plot(entry["seconds"], entry["recall@20"], **style)
    for axis in axes[0, 1:]:
        axis.axhline(numbers["popularity_recall@20"], color="gray", linestyle="--", linewidth=0.8)
    axes[0, 0].set(xlabel="epoch", ylabel="InfoNCE loss", title="two-tower on synthetic data")
    axes[0, 1].set(xlabel="epoch", ylabel="Recall@20", title="Recall@20 (dashed: popularity)")
    axes[0, 2].set(xlabel="training seconds", ylabel="Recall@20", title="Recall@20 vs wall time")
    axes[0, 0].legend(fontsize=7)
    return save_figure(fig, out_dir, "convergence_two_tower.png")


def _tanh_vs_sigmoid(mlp_numbers, tower):
    """Claim 1 from the steps-to-half-loss of both MLPs and the two-tower's early Recall@20."""
    settings, wins = [], 0
    for label in mlp_numbers["depths"]:
        tanh, sigmoid = (mlp_numbers[label][a]["mean_steps_to_target"] for a in ("tanh", "sigmoid"))
        faster = tanh is not None and (sigmoid is None or tanh < sigmoid)
        wins += faster
        show = (lambda s: "never" if s is None else f"{s:.0f}")
        settings.append(f"{label} MLP: tanh reaches loss {mlp_numbers['target_loss']:.2f} in {show(tanh)} steps, "
                        f"sigmoid in {show(sigmoid)}")
    tanh_r, sigmoid_r = (float(np.mean(tower[a]["recall@20"])) for a in ("tanh", "sigmoid"))
    tie = abs(tanh_r - sigmoid_r) <= RELATIVE_TIE * max(tanh_r, sigmoid_r)
    wins += tanh_r > sigmoid_r and not tie
    settings.append(f"two-tower Recall@20 averaged over the {len(tower['tanh']['recall@20'])} epochs (the area "
                    f"under its curve): tanh {tanh_r:.3f}, sigmoid {sigmoid_r:.3f}"
                    + (f" (a tie within {RELATIVE_TIE:.0%})" if tie else ""))
    total = len(mlp_numbers["depths"]) + 1
    verdict = "holds" if wins == total else ("does not hold" if wins == 0 else "holds with conditions")
    evidence = "; ".join(settings) + f" (tanh ahead in {wins}/{total})."
    return claim("tanh converges faster than sigmoid", verdict, evidence)


def _smooth_vs_relu(mlp_numbers, tower):
    """Claim 2 from the deep MLP's final test accuracy (ties within ACCURACY_TIE)."""
    deep = mlp_numbers["deep"]
    relu = deep["relu"]["final_test_accuracy"]
    better = [a for a in ("gelu", "swish") if deep[a]["final_test_accuracy"] > relu + ACCURACY_TIE]
    worse = [a for a in ("gelu", "swish") if deep[a]["final_test_accuracy"] < relu - ACCURACY_TIE]
    shallow = mlp_numbers["shallow"]
    evidence = (
        f"deep MLP ({mlp_numbers['depths']['deep']} layers) test accuracy after {mlp_numbers['steps']} steps: "
        + ", ".join(f"{a} {deep[a]['final_test_accuracy']:.3f}±{deep[a]['final_test_accuracy_std']:.3f}"
                    for a in ("relu", "gelu", "swish"))
        + "; deep MLP final training loss: "
        + ", ".join(f"{a} {deep[a]['final_loss']:.3f}" for a in ("relu", "gelu", "swish"))
        + "; shallow test accuracy: "
        + ", ".join(f"{a} {shallow[a]['final_test_accuracy']:.3f}" for a in ("relu", "gelu", "swish"))
        + "; two-tower final Recall@20: "
        + ", ".join(f"{a} {tower[a]['recall@20'][-1]:.3f}" for a in ("relu", "gelu", "swish"))
        + "; deep MLP training seconds: "
        + ", ".join(f"{a} {deep[a]['seconds']:.1f}" for a in ("relu", "gelu", "swish"))
        + "."
    )
    if len(better) == 2:
        verdict = "holds"
    elif better:
        verdict = "holds with conditions"
    else:
        verdict = "does not hold"
    return claim("Swish/GELU are better than ReLU in deep models", verdict, evidence), better, worse


def run(out_dir, quick=False, seed=0):
    """Train every activation on both tasks, draw two figures, compute the verdicts (module doc)."""
    settings = _settings(quick)
    mlp_numbers = _run_classification(settings, seed)
    tower = _run_two_tower(settings, seed)
    figures = [_plot_classification(mlp_numbers, out_dir), _plot_two_tower(tower, out_dir)]
    tanh_claim = _tanh_vs_sigmoid(mlp_numbers, tower)
    tanh_claim["figure"] = figures[0]
    smooth_claim, better, worse = _smooth_vs_relu(mlp_numbers, tower)
    smooth_claim["figure"] = figures[0]
    deep, shallow = mlp_numbers["deep"], mlp_numbers["shallow"]
    best_deep = max(ACTIVATIONS, key=lambda a: deep[a]["final_test_accuracy"])
    best_shallow = max(ACTIVATIONS, key=lambda a: shallow[a]["final_test_accuracy"])
    best_tower = max(ACTIVATIONS, key=lambda a: tower[a]["recall@20"][-1])
    worst_tower = min(ACTIVATIONS, key=lambda a: tower[a]["recall@20"][-1])
    tower_spread = 1.0 - tower[worst_tower]["recall@20"][-1] / max(tower[best_tower]["recall@20"][-1], 1e-12)
    beaten = [a for a in ACTIVATIONS if tower[a]["recall@20"][-1] > tower["popularity_recall@20"]]
    verdict = (
        f"On the classification task the best final test accuracy is {best_shallow}'s "
        f"({shallow[best_shallow]['final_test_accuracy']:.3f}) in the shallow MLP and {best_deep}'s "
        f"({deep[best_deep]['final_test_accuracy']:.3f}) in the deep one; sigmoid ends at "
        f"{shallow['sigmoid']['final_test_accuracy']:.3f} (shallow) and {deep['sigmoid']['final_test_accuracy']:.3f} "
        f"(deep). The claim that tanh converges faster than sigmoid {tanh_claim['verdict']}: "
        f"{tanh_claim['evidence']} The claim that Swish/GELU beat ReLU in deep models {smooth_claim['verdict']}"
        + (f" ({', '.join(better)} ahead of ReLU by more than {ACCURACY_TIE})" if better else
           f" (neither is ahead of ReLU by more than {ACCURACY_TIE} in test accuracy"
           + (f"; {', '.join(worse)} behind" if worse else "") + ")")
        + f". On the two-tower recommender, final Recall@20 ranges from {tower[worst_tower]['recall@20'][-1]:.3f} "
        f"({worst_tower}) to {tower[best_tower]['recall@20'][-1]:.3f} ({best_tower}), a spread of {tower_spread:.0%} "
        f"of the best, against {tower['popularity_recall@20']:.3f} for popularity"
        + (f"; {', '.join(beaten)} end{'s' if len(beaten) == 1 else ''} above popularity." if beaten else
           "; none ends above popularity in this budget.")
    )
    result = {"name": NAME, "figures": figures, "numbers": {"mlp": mlp_numbers, "two_tower": tower},
              "claims": [tanh_claim, smooth_claim], "verdict": verdict}
    return write_result(out_dir, result)
