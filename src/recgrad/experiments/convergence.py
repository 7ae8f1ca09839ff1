"""Experiment `convergence`: the same tasks trained with sigmoid, tanh, ReLU, GELU and Swish.

Each task is trained once per activation with everything else equal (data, seed, widths,
optimizer, learning rate, batches):

1. Classification with an MLP of width 64, shallow (3 Linear layers) and deep (16 Linear layers),
   trained by SGD with momentum 0.9, lr 0.05, batch 128, on two data sets: a synthetic task
   (`common.classification_task`: 20 features, 4 classes, labels from a random tanh teacher; 3000
   training and 1000 test points) and, when scikit-learn is installed, its handwritten digits (64
   standardised pixels, 10 classes, 1437 training and 360 test images). Each activation gets its
   textbook initialisation: Xavier (gain 1) for sigmoid and tanh, Kaiming (ReLU gain) for ReLU,
   GELU and Swish; biases zero. The full training loss and the test accuracy are recorded every 25
   steps (500 steps in all), with the cumulative wall time of the training steps, and averaged
   over 2 seeds (each draws the weights and the batch order; the data is fixed). --quick: 600
   synthetic points, 8 layers deep, 120 steps, one seed.
2. Recommendation: a TwoTower model (embedding 32, one hidden layer of 64 per tower, the model's
   Kaiming init with PyTorch's gain per activation, L2-normalised outputs) trained on the data set
   of `--data` (a subsample of common.RECOMMENDER_USERS users) or else `recgrad.data.synthetic`,
   with the usual two-tower loss, InfoNCE over cosine scores (temperature 0.1, 256 uniform
   negatives shared by the batch; 64 in --quick), and dense Adam (lr 1e-2); Recall@20 on its test
   split after every epoch. (Trained with BPR and Adam at lr 1e-2 or 1e-3 instead, these towers
   stayed at the popularity baseline for 8 epochs with ReLU and with tanh when this experiment was
   built, so BPR would not tell the activations apart in this budget.)

Both claims are judged on each data set separately, and each verdict weighs every measure the
experiment reports on that data set:
- "tanh converges faster than sigmoid" (LeCun et al., "Efficient BackProp", 1998: zero-centred
  outputs): on a classification set, the steps each needs to bring the training loss to half its
  initial value (ln C / 2), shallow and deep; on the recommender, the Recall@20 averaged over the
  epochs (the area under the curve). Holds when tanh is ahead on every measure, does not hold when
  on none.
- "Swish/GELU are better than ReLU in deep models" (Ramachandran et al. 2017; Hendrycks & Gimpel
  2016): on a classification set, the deep MLP's final test accuracy (ties within ACCURACY_TIE,
  about the seed-to-seed spread) and its final training loss (ties within RELATIVE_TIE); on the
  recommender, the final Recall@20 (ties within RELATIVE_TIE). Holds when both GELU and Swish are
  ahead of ReLU on every measure, does not hold when neither is ahead on any, and holds with
  conditions otherwise, naming the measures that favour them and those that do not. The training
  seconds are reported beside them as a cost and not weighed: the claim is about what is learnt.
"""

import math
import time

import numpy as np

from recgrad.data import synthetic
from recgrad.experiments.common import (
    DIGITS_MISSING,
    RECOMMENDER_USERS,
    claim,
    classification_data_sets,
    figure,
    forward_backward,
    mlp,
    save_figure,
    subsample_users,
    synthetic_classification,
    write_result,
)
from recgrad.losses import CrossEntropyLoss
from recgrad.models import TwoTower
from recgrad.optim import SGD
from recgrad.train import Trainer

NAME = "convergence"
DESCRIPTION = "sigmoid, tanh, ReLU, GELU and Swish on the same MLP classification tasks and two-tower recommender"
USES_RECOMMENDER_DATA = True

ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu", "swish")
INIT_FOR = {"sigmoid": "xavier", "tanh": "xavier", "relu": "kaiming", "gelu": "kaiming", "swish": "kaiming"}
COLORS = {"sigmoid": "tab:blue", "tanh": "tab:orange", "relu": "tab:green", "gelu": "tab:red", "swish": "tab:purple"}
FEATURES, CLASSES, WIDTH = 20, 4, 64  # features and classes of the synthetic task
DIGITS_TEST = 360
LR, MOMENTUM, BATCH = 0.05, 0.9, 128
# Gaps below this (in test accuracy) count as a tie: about the seed-to-seed spread measured here.
ACCURACY_TIE = 0.01
# Training-loss and Recall@20 gaps below this fraction of the larger value count as a tie.
RELATIVE_TIE = 0.05



def _settings(quick):
    if quick:
        return {"n_train": 600, "n_test": 400, "depths": {"shallow": 3, "deep": 8}, "steps": 120,
                "record_every": 10, "seeds": 1,
                "synthetic": {"n_users": 300, "n_items": 500, "interactions_per_user": 20}, "users": 300,
                "tower_epochs": 3, "tower_batch": 256, "tower_negatives": 64}
    return {"n_train": 3000, "n_test": 1000, "depths": {"shallow": 3, "deep": 16}, "steps": 500,
            "record_every": 25, "seeds": 2,
            "synthetic": {"n_users": 2000, "n_items": 3000, "interactions_per_user": 30}, "users": RECOMMENDER_USERS,
            "tower_epochs": 12, "tower_batch": 1024, "tower_negatives": 256}


def _train_mlp(data, depth, activation, steps, record_every, seed):
    """SGD+momentum on one MLP; returns the recorded curves (steps, loss, test accuracy, seconds) and
    "diverged_at", the step whose training loss became non-finite (training stops there; the curves
    keep the finite points), or None."""
    rng = np.random.default_rng(seed)
    model = mlp(data.features, WIDTH, data.classes, depth, activation, INIT_FOR[activation], rng)
    optimizer = SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    criterion = CrossEntropyLoss()
    record = {"step": [], "loss": [], "test_accuracy": [], "seconds": []}
    order, position, seconds = rng.permutation(len(data.y)), 0, 0.0

    def measure(step):
        """Record the step's numbers; False when the loss is no longer finite (nothing recorded)."""
        with np.errstate(over="ignore", invalid="ignore"):
            loss = float(criterion(model(data.x), data.y))
            accuracy = float(np.mean(np.argmax(model(data.x_test), axis=1) == data.y_test))
        if not math.isfinite(loss):
            return False
        record["step"].append(step)
        record["loss"].append(loss)
        record["test_accuracy"].append(accuracy)
        record["seconds"].append(seconds)
        return True

    measure(0)
    diverged_at = None
    for step in range(1, steps + 1):
        if position + BATCH > len(data.y):
            order, position = rng.permutation(len(data.y)), 0
        batch = order[position:position + BATCH]
        position += BATCH
        start = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):
            forward_backward(model, data.x[batch], data.y[batch])
        optimizer.step()
        seconds += time.perf_counter() - start
        if step % record_every == 0 and not measure(step):
            diverged_at = step
            break
    return {**record, "diverged_at": diverged_at}


def _steps_to(record, target):
    """First recorded step at which the training loss is <= target, or None."""
    return next((step for step, loss in zip(record["step"], record["loss"]) if loss <= target), None)


def _mean_curves(records):
    """Element-wise mean over seeds of each recorded curve, over the points every seed reached."""
    length = min(len(r["step"]) for r in records)
    return {key: np.mean([r[key][:length] for r in records], axis=0).tolist()
            for key in ("step", "loss", "test_accuracy", "seconds")}


def _run_classification(data, settings, seed):
    """Every activation at both depths on one classification data set; its numbers."""
    target = math.log(data.classes) / 2.0
    numbers = {"data": data.name, "train": len(data.y), "test": len(data.y_test), "features": data.features,
               "classes": data.classes, "target_loss": target, "depths": settings["depths"],
               "steps": settings["steps"], "seeds": settings["seeds"], "init": INIT_FOR, "lr": LR,
               "momentum": MOMENTUM, "batch": BATCH}
    for label, depth in settings["depths"].items():
        per_activation = {}
        for activation in ACTIVATIONS:
            records = [
                _train_mlp(data, depth, activation, settings["steps"], settings["record_every"],
                           seed=seed * 1000 + 17 * s + 1)
                for s in range(settings["seeds"])
            ]
            final_accuracy = [r["test_accuracy"][-1] for r in records]
            steps_to = [_steps_to(r, target) for r in records]
            diverged = [r["diverged_at"] for r in records if r["diverged_at"] is not None]
            per_activation[activation] = {
                "curves": _mean_curves(records),
                "diverged_at": diverged,
                # A diverged run has no final loss or accuracy: None, which every comparison counts as the worst.
                "final_loss": None if diverged else float(np.mean([r["loss"][-1] for r in records])),
                "final_test_accuracy": None if diverged else float(np.mean(final_accuracy)),
                "final_test_accuracy_std": None if diverged else float(np.std(final_accuracy)),
                "steps_to_target": steps_to,
                "mean_steps_to_target": None if None in steps_to else float(np.mean(steps_to)),
                "seconds": float(np.mean([r["seconds"][-1] for r in records])),
            }
        numbers[label] = per_activation
    return numbers


def _run_two_tower(data, settings, seed):
    """Every activation's two-tower model on `data` (None: the built-in synthetic set); its numbers."""
    if data is None:
        data, label = synthetic(seed=seed, **settings["synthetic"]), "synthetic interactions"
    else:
        data = subsample_users(data, settings["users"], seed)
        label = data.name
    numbers = {"data": label, "n_users": data.n_users, "n_items": data.n_items, "epochs": settings["tower_epochs"]}
    for activation in ACTIVATIONS:
        model = TwoTower(data.n_users, data.n_items, dim=32, hidden=(64,), activation=activation, normalize=True,
                         rng=seed)
        trainer = Trainer(model, loss="infonce", optimizer="adam", lr=1e-2, batch_size=settings["tower_batch"],
                          negatives=settings["tower_negatives"], negatives_mode="shared", similarity="cosine",
                          temperature=0.1, epochs=settings["tower_epochs"], l2=0.0, seed=seed, progress=False)
        result = trainer.fit(data)
        history = result["history"]
        numbers[activation] = {
            "loss": [r["loss"] for r in history],
            "recall@20": [r["recall@20"] for r in history],
            "seconds": np.cumsum([r["train_seconds"] for r in history]).tolist(),
        }
        numbers["popularity_recall@20"] = result["popularity"]["recall@20"]
    return numbers


def _plot_classification(numbers, out_dir, filename):
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
    fig.suptitle(f"MLP classification on {numbers['data']}")
    return save_figure(fig, out_dir, filename)


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
    axes[0, 0].set(xlabel="epoch", ylabel="InfoNCE loss", title=f"two-tower on {numbers['data']}")
    axes[0, 1].set(xlabel="epoch", ylabel="Recall@20", title="Recall@20 (dashed: popularity)")
    axes[0, 2].set(xlabel="training seconds", ylabel="Recall@20", title="Recall@20 vs wall time")
    axes[0, 0].legend(fontsize=7)
    return save_figure(fig, out_dir, "convergence_two_tower.png")


def _compare(value, reference, higher_is_better, absolute_tie=None):
    """"ahead", "tie" or "behind" of `value` against `reference`; ties within absolute_tie, else RELATIVE_TIE.

    None (a diverged run) is behind any number."""
    if value is None or reference is None:
        return "tie" if value is reference else "behind" if value is None else "ahead"
    tie = absolute_tie if absolute_tie is not None else RELATIVE_TIE * max(abs(value), abs(reference))
    if abs(value - reference) <= tie:
        return "tie"
    return "ahead" if (value > reference) == higher_is_better else "behind"


def _weigh(statement, outcomes, data_name, details):
    """A claim from every measure's outcome: holds when all are "ahead", does not hold when none is."""
    ahead = [measure for measure, outcome in outcomes.items() if outcome == "ahead"]
    if len(ahead) == len(outcomes):
        verdict = "holds"
    elif not ahead:
        verdict = "does not hold"
    else:
        verdict = "holds with conditions"
    summary = "; ".join(f"{measure}: {outcome}" for measure, outcome in outcomes.items())
    return claim(statement, verdict, f"{details} Per measure: {summary}.", data=data_name)


def _show_accuracy(entry):
    if entry["final_test_accuracy"] is None:
        return "diverged"
    return f"{entry['final_test_accuracy']:.3f}±{entry['final_test_accuracy_std']:.3f}"


def _show_loss(entry):
    if entry["final_loss"] is None:
        return f"diverged (step {', '.join(map(str, entry['diverged_at']))})"
    return f"{entry['final_loss']:.3f}"


def _show_steps(steps):
    return "never" if steps is None else f"{steps:.0f}"


def _tanh_vs_sigmoid_mlp(numbers):
    """tanh against sigmoid on a classification set: steps to half the initial loss, per depth."""
    outcomes, details = {}, []
    for label in numbers["depths"]:
        tanh, sigmoid = (numbers[label][a]["mean_steps_to_target"] for a in ("tanh", "sigmoid"))
        if tanh is None:
            outcomes[f"{label} steps to loss ln C / 2"] = "behind" if sigmoid is not None else "tie"
        else:
            outcomes[f"{label} steps to loss ln C / 2"] = "ahead" if sigmoid is None or tanh < sigmoid else (
                "tie" if tanh == sigmoid else "behind")
        details.append(f"{label} MLP: tanh reaches loss {numbers['target_loss']:.2f} in {_show_steps(tanh)} steps, "
                       f"sigmoid in {_show_steps(sigmoid)}")
    return _weigh("tanh converges faster than sigmoid", outcomes, numbers["data"], "; ".join(details) + ".")


def _tanh_vs_sigmoid_tower(tower):
    tanh_r, sigmoid_r = (float(np.mean(tower[a]["recall@20"])) for a in ("tanh", "sigmoid"))
    outcomes = {"Recall@20 averaged over the epochs": _compare(tanh_r, sigmoid_r, higher_is_better=True)}
    details = (f"two-tower Recall@20 averaged over the {len(tower['tanh']['recall@20'])} epochs (the area under "
               f"its curve): tanh {tanh_r:.3f}, sigmoid {sigmoid_r:.3f}.")
    return _weigh("tanh converges faster than sigmoid", outcomes, tower["data"], details)


def _smooth_vs_relu_mlp(numbers):
    """GELU and Swish against ReLU in the deep MLP: final test accuracy and final training loss."""
    deep = numbers["deep"]
    outcomes = {}
    for activation in ("gelu", "swish"):
        outcomes[f"{activation} test accuracy"] = _compare(
            deep[activation]["final_test_accuracy"], deep["relu"]["final_test_accuracy"], higher_is_better=True,
            absolute_tie=ACCURACY_TIE)
        outcomes[f"{activation} training loss"] = _compare(
            deep[activation]["final_loss"], deep["relu"]["final_loss"], higher_is_better=False)
    details = (
        f"deep MLP ({numbers['depths']['deep']} layers) after {numbers['steps']} steps, test accuracy "
        + ", ".join(f"{a} {_show_accuracy(deep[a])}" for a in ("relu", "gelu", "swish"))
        + f" (tie within {ACCURACY_TIE}); final training loss "
        + ", ".join(f"{a} {_show_loss(deep[a])}" for a in ("relu", "gelu", "swish"))
        + f" (tie within {RELATIVE_TIE:.0%}); training seconds "
        + ", ".join(f"{a} {deep[a]['seconds']:.1f}" for a in ("relu", "gelu", "swish"))
        + " (a cost, not weighed: the claim is about what the model learns)."
    )
    if all(deep[a]["diverged_at"] for a in ("relu", "gelu", "swish")):
        details += (f" All three diverged at lr {LR:g}, so this data set shows neither better than ReLU here: "
                    "the verdict is for want of evidence, not evidence against.")
    return _weigh("Swish/GELU are better than ReLU in deep models", outcomes, numbers["data"], details)


def _smooth_vs_relu_tower(tower):
    final = {a: tower[a]["recall@20"][-1] for a in ("relu", "gelu", "swish")}
    outcomes = {f"{a} final Recall@20": _compare(final[a], final["relu"], higher_is_better=True)
                for a in ("gelu", "swish")}
    details = ("two-tower final Recall@20 " + ", ".join(f"{a} {value:.3f}" for a, value in final.items())
               + f" (tie within {RELATIVE_TIE:.0%}).")
    return _weigh("Swish/GELU are better than ReLU in deep models", outcomes, tower["data"], details)


def _classification_paragraph(numbers):
    deep, shallow = numbers["deep"], numbers["shallow"]
    def best(runs):
        finished = [a for a in ACTIVATIONS if runs[a]["final_test_accuracy"] is not None]
        return max(finished, key=lambda a: runs[a]["final_test_accuracy"])

    best_deep, best_shallow = best(deep), best(shallow)
    diverged = [f"{a} ({label})" for label in numbers["depths"] for a in ACTIVATIONS
                if numbers[label][a]["diverged_at"]]
    return (
        f"On {numbers['data']} ({numbers['classes']} classes) the best final test accuracy is {best_shallow}'s "
        f"({shallow[best_shallow]['final_test_accuracy']:.3f}) in the shallow MLP and {best_deep}'s "
        f"({deep[best_deep]['final_test_accuracy']:.3f}) in the deep one; sigmoid ends at "
        f"{_show_accuracy(shallow['sigmoid'])} (shallow) and {_show_accuracy(deep['sigmoid'])} (deep)."
        + (f" Diverged (loss no longer finite at lr {LR:g}): {', '.join(diverged)}." if diverged else "")
    )


def _tower_paragraph(tower):
    final = {a: tower[a]["recall@20"][-1] for a in ACTIVATIONS}
    best, worst = max(final, key=final.get), min(final, key=final.get)
    spread = 1.0 - final[worst] / max(final[best], 1e-12)
    beaten = [a for a in ACTIVATIONS if final[a] > tower["popularity_recall@20"]]
    return (
        f"On the two-tower recommender ({tower['data']}), final Recall@20 ranges from {final[worst]:.3f} ({worst}) "
        f"to {final[best]:.3f} ({best}), a spread of {spread:.0%} of the best, against "
        f"{tower['popularity_recall@20']:.3f} for popularity"
        + (f"; {', '.join(beaten)} end{'s' if len(beaten) == 1 else ''} above popularity." if beaten else
           "; none ends above popularity in this budget.")
    )


def run(out_dir, quick=False, seed=0, data=None):
    """Train every activation on every task, draw the figures, judge the claims per data set (module doc).

    data: a recgrad.data.Dataset for the two-tower model (subsampled), or None for the built-in synthetic set.
    """
    settings = _settings(quick)
    synthetic = synthetic_classification(settings["n_train"], settings["n_test"], FEATURES, CLASSES,
                                         np.random.default_rng(seed))
    tasks = classification_data_sets(synthetic, NAME, DIGITS_TEST, seed)
    mlp_numbers, figures, claims, paragraphs = {}, [], [], []
    for task in tasks:
        numbers = _run_classification(task, settings, seed)
        mlp_numbers[task.name] = numbers
        suffix = "" if task.name == "synthetic" else f"_{task.name}"
        figures.append(_plot_classification(numbers, out_dir, f"convergence_mlp{suffix}.png"))
        for entry in (_tanh_vs_sigmoid_mlp(numbers), _smooth_vs_relu_mlp(numbers)):
            entry["figure"] = figures[-1]
            claims.append(entry)
        paragraphs.append(_classification_paragraph(numbers))
    tower = _run_two_tower(data, settings, seed)
    figures.append(_plot_two_tower(tower, out_dir))
    for entry in (_tanh_vs_sigmoid_tower(tower), _smooth_vs_relu_tower(tower)):
        entry["figure"] = figures[-1]
        claims.append(entry)
    paragraphs.append(_tower_paragraph(tower))
    if len(tasks) == 1:  # scikit-learn missing: the digits were skipped
        paragraphs.append(f"Real classification data: {DIGITS_MISSING}.")
    paragraphs.append("Claims, per data set: " + "; ".join(
        f"{entry['claim']} on {entry['data']}: {entry['verdict']}" for entry in claims) + ".")
    result = {"name": NAME, "figures": figures, "numbers": {"mlp": mlp_numbers, "two_tower": tower},
              "claims": claims, "verdict": " ".join(paragraphs)}
    return write_result(out_dir, result)
