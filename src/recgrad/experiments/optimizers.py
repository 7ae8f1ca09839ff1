"""Experiment `optimizers`: SGD, SGD+momentum (both forms), Adam, Adam with L2 and AdamW on MF-BPR.

Data: the data set of `--data` when one is given, as a seeded subsample of common.RECOMMENDER_USERS
users drawn uniformly with the items they trained on (test items outside that set are dropped; a
budget): 6 epochs, Recall@20 evaluated every second epoch (a 400-user subsample with --quick).
Otherwise `recgrad.data.synthetic` (15 epochs, or 6 on a smaller set with --quick).

Model and loss: MF (dim 32, N(0, 0.1^2) tables, dense gradients) with BPR, batch 1024 (256 in
--quick, to take enough steps on the small quick set), one
uniform negative, no LightGCN l2 (regularisation comes only from each optimizer's weight decay),
every optimizer given as a `recgrad.optim` instance to the `Trainer`.

Learning rates. The BPR loss is a batch mean, so a table row's gradient is about 1/B of a
per-example gradient: plain SGD needs lr = B x 0.1 (100 at B = 1024) to move the rows as fast as Adam's
scale-free lr 1e-2. Momentum 0.9 in PyTorch's form (dampening 0) sums gradients, so its
steady-state step is lr / (1 - 0.9) = 10 lr: it gets a tenth of SGD's lr (the same effective
step). The EMA form (dampening = momentum = 0.9) averages instead and gets SGD's lr.
Adam with L2 (weight_decay in the gradient) and AdamW (decoupled) use lr 1e-2 and PyTorch's
AdamW default decay 1e-2 in the curves.

Weight-decay sweep: Adam with L2 and AdamW at each decay of DECAYS (the decay 0 point, where both
are Adam, is the Adam curve). Adam with L2 adds lambda * theta to the gradient, which Adam then
divides by sqrt(v): a row with small loss gradients (a rarely seen item) is pulled to zero at up
to lr per step whatever lambda is. AdamW shrinks every weight by the factor 1 - lr * lambda per step,
independent of the gradient scale. The claim "AdamW handles weight decay better than Adam with
L2" (Loshchilov & Hutter, ICLR 2019) is read off the sweep: the best Recall@20 each reaches, and
the largest decay each tolerates (Recall@20 >= TOLERANCE x Adam's without decay).
"""

import numpy as np

from recgrad.data import synthetic
from recgrad.experiments.common import RECOMMENDER_USERS, claim, figure, save_figure, subsample_users, write_result
from recgrad.models import MF
from recgrad.optim import SGD, Adam, AdamW
from recgrad.train import Trainer

NAME = "optimizers"
DESCRIPTION = "SGD, SGD+momentum (torch and EMA forms), Adam, Adam+L2, AdamW on MF-BPR; weight-decay sweep"
USES_RECOMMENDER_DATA = True

QUICK_USERS = 400
DIM, BATCH, QUICK_BATCH = 32, 1024, 256
ADAM_LR, MOMENTUM = 1e-2, 0.9
# SGD's lr per example: the batch-mean loss scales a row's gradient by 1/B, so SGD's lr is B times this.
SGD_LR_PER_EXAMPLE = 0.1
CURVE_DECAY = 1e-2
TOLERANCE = 0.9
# Recall@20 differences below this fraction of Adam's are treated as ties.
RELATIVE_TIE = 0.05
DECAYS = [1e-5, 1e-4, 1e-2, 1.0, 10.0]



def optimizers(batch):
    """{key: (label, make(params) -> optimizer)} of the compared optimizers for batch size `batch`."""
    sgd_lr = SGD_LR_PER_EXAMPLE * batch
    momentum_lr = sgd_lr * (1.0 - MOMENTUM)
    return {
        "sgd": (f"SGD (lr {sgd_lr:g})", lambda p: SGD(p, lr=sgd_lr)),
        "sgd_momentum": (f"SGD+momentum 0.9, dampening 0 (lr {momentum_lr:g})",
                         lambda p: SGD(p, lr=momentum_lr, momentum=MOMENTUM)),
        "sgd_momentum_ema": (f"SGD+momentum 0.9, EMA form: dampening 0.9 (lr {sgd_lr:g})",
                             lambda p: SGD(p, lr=sgd_lr, momentum=MOMENTUM, dampening=MOMENTUM)),
        "adam": (f"Adam (lr {ADAM_LR:g})", lambda p: Adam(p, lr=ADAM_LR)),
        "adam_l2": (f"Adam + L2 {CURVE_DECAY:g}", lambda p: Adam(p, lr=ADAM_LR, weight_decay=CURVE_DECAY)),
        "adamw": (f"AdamW, decay {CURVE_DECAY:g}", lambda p: AdamW(p, lr=ADAM_LR, weight_decay=CURVE_DECAY)),
    }


SWEEP = {"adam_l2": Adam, "adamw": AdamW}


def _settings(quick, given):
    """The budget: `given` says whether --data named a data set (else the built-in synthetic one)."""
    if given:
        return {"data": "given", "users": QUICK_USERS if quick else RECOMMENDER_USERS, "epochs": 6,
                "batch": QUICK_BATCH if quick else BATCH, "eval_every": 2, "decays": [1e-1] if quick else DECAYS}
    if quick:
        return {"data": "synthetic", "synthetic": {"n_users": 400, "n_items": 600, "interactions_per_user": 20},
                "epochs": 6, "batch": QUICK_BATCH, "eval_every": 1, "decays": [1e-1]}
    return {"data": "synthetic", "synthetic": {}, "epochs": 15, "batch": BATCH, "eval_every": 1, "decays": DECAYS}


def _dataset(settings, data, seed):
    if data is not None:
        return subsample_users(data, settings["users"], seed)
    return synthetic(seed=seed, **settings["synthetic"])


def _train(data, make_optimizer, epochs, batch, seed, eval_every=1):
    model = MF(data.n_users, data.n_items, dim=DIM, sparse=False, rng=seed)
    trainer = Trainer(model, loss="bpr", optimizer=make_optimizer(model.parameters()), batch_size=batch,
                      epochs=epochs, eval_every=eval_every, l2=0.0, seed=seed, progress=False)
    result = trainer.fit(data)
    history = result["history"]
    evaluated = [r for r in history if "recall@20" in r]
    return {
        "loss": [r["loss"] for r in history],
        "eval_epochs": [r["epoch"] for r in evaluated],
        "recall@20": [r["recall@20"] for r in evaluated],
        "ndcg@20": [r["ndcg@20"] for r in evaluated],
        "seconds": np.cumsum([r["train_seconds"] for r in history]).tolist(),
        "final_recall@20": evaluated[-1]["recall@20"],
        "user_row_norm": float(np.mean(np.linalg.norm(model.user_factors(), axis=1))),
        "item_row_norm": float(np.mean(np.linalg.norm(model.item_factors(), axis=1))),
    }, result["popularity"]["recall@20"]


def _plot_curves(numbers, out_dir):
    fig, axes = figure(1, 3, panel_width=3.4, panel_height=2.7)
    for key, label in numbers["labels"].items():
        run = numbers["runs"][key]
        epochs = np.arange(1, len(run["loss"]) + 1)
        seconds_at_eval = [run["seconds"][e - 1] for e in run["eval_epochs"]]
        axes[0, 0].plot(epochs, run["loss"], marker=".", label=label)
        axes[0, 1].plot(run["eval_epochs"], run["recall@20"], marker=".", label=label)
        axes[0, 2].plot(seconds_at_eval, run["recall@20"], marker=".", label=label)
    for axis in axes[0, 1:]:
        axis.axhline(numbers["popularity_recall@20"], color="gray", linestyle="--", linewidth=0.8)
    axes[0, 0].set(xlabel="epoch", ylabel="BPR loss", title=f"MF-BPR on {numbers['dataset']}")
    axes[0, 1].set(xlabel="epoch", ylabel="Recall@20", title="Recall@20 (dashed: popularity)")
    axes[0, 2].set(xlabel="training seconds", ylabel="Recall@20", title="Recall@20 vs wall time")
    axes[0, 0].legend(fontsize=6)
    return save_figure(fig, out_dir, "optimizers_curves.png")


def _plot_sweep(numbers, out_dir):
    fig, axes = figure(1, 2, panel_width=3.6, panel_height=2.7)
    decays = numbers["decays"]
    for key, label in (("adam_l2", "Adam + L2"), ("adamw", "AdamW (decoupled)")):
        axes[0, 0].plot(decays, [numbers["sweep"][key][str(d)]["final_recall@20"] for d in decays], marker="o",
                        label=label)
        axes[0, 1].plot(decays, [numbers["sweep"][key][str(d)]["item_row_norm"] for d in decays], marker="o",
                        label=label)
    adam = numbers["runs"]["adam"]
    axes[0, 0].axhline(adam["final_recall@20"], color="black", linestyle=":", linewidth=0.8, label="Adam, no decay")
    axes[0, 0].axhline(numbers["popularity_recall@20"], color="gray", linestyle="--", linewidth=0.8,
                       label="popularity")
    axes[0, 1].axhline(adam["item_row_norm"], color="black", linestyle=":", linewidth=0.8, label="Adam, no decay")
    axes[0, 0].set(xscale="log", xlabel="weight decay lambda", ylabel=f"Recall@20 after {numbers['epochs']} epochs",
                   title="weight-decay sweep")
    axes[0, 1].set(xscale="log", yscale="log", xlabel="weight decay lambda", ylabel="mean item-row norm",
                   title="size of the item embeddings")
    axes[0, 0].legend(fontsize=7)
    return save_figure(fig, out_dir, "optimizers_weight_decay.png")


def _tolerated(sweep, decays, reference):
    """The largest decay up to which every Recall@20 stays >= TOLERANCE x reference (0.0 if none)."""
    largest = 0.0
    for decay in decays:
        if sweep[str(decay)]["final_recall@20"] < TOLERANCE * reference:
            break
        largest = decay
    return largest


def _decay_claim(numbers):
    decays, sweep, adam = numbers["decays"], numbers["sweep"], numbers["runs"]["adam"]["final_recall@20"]
    best = {key: max(decays, key=lambda d: sweep[key][str(d)]["final_recall@20"]) for key in SWEEP}
    best_value = {key: sweep[key][str(best[key])]["final_recall@20"] for key in SWEEP}
    tolerated = {key: _tolerated(sweep[key], decays, adam) for key in SWEEP}
    high = decays[-1]
    at_high = {key: sweep[key][str(high)]["final_recall@20"] for key in SWEEP}
    better_best = best_value["adamw"] > best_value["adam_l2"] + RELATIVE_TIE * adam
    worse_best = best_value["adamw"] < best_value["adam_l2"] - RELATIVE_TIE * adam
    wider = tolerated["adamw"] > tolerated["adam_l2"]
    narrower = tolerated["adamw"] < tolerated["adam_l2"]
    if (better_best or not worse_best) and wider:
        verdict = "holds" if (better_best or not narrower) else "holds with conditions"
    elif better_best or wider:
        verdict = "holds with conditions"
    else:
        verdict = "does not hold"
    evidence = (
        f"Recall@20 after {numbers['epochs']} epochs on {numbers['dataset']}: Adam without decay "
        f"{adam:.4f}; best AdamW {best_value['adamw']:.4f} (lambda {best['adamw']:g}) vs best Adam+L2 "
        f"{best_value['adam_l2']:.4f} (lambda {best['adam_l2']:g}); Recall@20 stays >= {TOLERANCE:g}x Adam's up "
        f"to lambda {tolerated['adamw']:g} with AdamW and {tolerated['adam_l2']:g} with Adam+L2; at lambda "
        f"{high:g}: AdamW {at_high['adamw']:.4f}, Adam+L2 {at_high['adam_l2']:.4f}."
    )
    summary = {"best_decay": best, "best_recall@20": best_value, "tolerated_decay": tolerated,
               "recall@20_at_highest_decay": at_high}
    return claim("AdamW handles weight decay better than Adam with L2", verdict, evidence), summary


def _momentum_claim(numbers):
    sgd_lr = SGD_LR_PER_EXAMPLE * numbers["batch"]
    torch_form = numbers["runs"]["sgd_momentum"]["final_recall@20"]
    ema_form = numbers["runs"]["sgd_momentum_ema"]["final_recall@20"]
    gap = abs(torch_form - ema_form) / max(torch_form, ema_form)
    verdict = "holds" if gap <= RELATIVE_TIE else "does not hold"
    evidence = (f"final Recall@20: momentum 0.9 with dampening 0 at lr {sgd_lr * (1 - MOMENTUM):g} "
                f"{torch_form:.4f}, EMA form (dampening 0.9) at lr {sgd_lr:g} {ema_form:.4f}, a relative gap of "
                f"{gap:.1%} (tie threshold {RELATIVE_TIE:.0%}).")
    return claim("PyTorch's momentum (dampening 0) at lr eta is the EMA form at lr eta / (1 - momentum)",
                 verdict, evidence)


def run(out_dir, quick=False, seed=0, data=None):
    """Train every optimizer, sweep the weight decay, draw two figures, compute the verdicts (module doc).

    data: a recgrad.data.Dataset to subsample, or None for the built-in synthetic set.
    """
    settings = _settings(quick, data is not None)
    data = _dataset(settings, data, seed)
    epochs, batch = settings["epochs"], settings["batch"]
    compared = optimizers(batch)
    numbers = {"dataset": data.name, "data_settings": {k: v for k, v in settings.items() if k != "decays"},
               "n_users": data.n_users, "n_items": data.n_items, "train_interactions": int(data.train.nnz),
               "epochs": epochs, "dim": DIM, "batch": batch, "decays": settings["decays"], "runs": {},
               "labels": {key: label for key, (label, _) in compared.items()}, "sweep": {}}
    for key, (_, make) in compared.items():
        numbers["runs"][key], numbers["popularity_recall@20"] = _train(data, make, epochs, batch, seed,
                                                                       eval_every=settings["eval_every"])
    for key, optimizer in SWEEP.items():
        numbers["sweep"][key] = {
            str(decay): _train(data, lambda p, o=optimizer, d=decay: o(p, lr=ADAM_LR, weight_decay=d), epochs, batch,
                               seed, eval_every=epochs)[0]
            for decay in settings["decays"]
        }
    figures = [_plot_curves(numbers, out_dir), _plot_sweep(numbers, out_dir)]
    decay_claim, summary = _decay_claim(numbers)
    decay_claim["figure"] = figures[1]
    momentum_claim = _momentum_claim(numbers)
    momentum_claim["figure"] = figures[0]
    numbers["summary"] = summary
    runs = numbers["runs"]
    ranking = sorted(compared, key=lambda k: -runs[k]["final_recall@20"])
    per_epoch = {key: runs[key]["seconds"][-1] / epochs for key in compared}
    verdict = (
        f"On {data.name} ({data.n_users} users, {data.n_items} items, {epochs} epochs), final Recall@20 ranks "
        + ", ".join(f"{key} {runs[key]['final_recall@20']:.4f}" for key in ranking)
        + f" (popularity {numbers['popularity_recall@20']:.4f}); training seconds per epoch range from "
        f"{min(per_epoch.values()):.2f} ({min(per_epoch, key=per_epoch.get)}) to {max(per_epoch.values()):.2f} "
        f"({max(per_epoch, key=per_epoch.get)}). At decay {CURVE_DECAY:g}, Adam+L2 reaches "
        f"{runs['adam_l2']['final_recall@20']:.4f} (mean item-row norm {runs['adam_l2']['item_row_norm']:.3f}) and "
        f"AdamW {runs['adamw']['final_recall@20']:.4f} (norm {runs['adamw']['item_row_norm']:.3f}). "
        f"The claim that AdamW handles weight decay better than Adam with L2 {decay_claim['verdict']}: "
        f"{decay_claim['evidence']} The two momentum forms "
        f"{'agree' if momentum_claim['verdict'] == 'holds' else 'differ'} once the lr is scaled by 1 - momentum: "
        f"{momentum_claim['evidence']}"
    )
    if settings["data"] == "given":
        verdict = (f"Budget: {data.n_users} users drawn at random (seed {seed}) with the {data.n_items} items "
                   f"they trained on, {epochs} epochs, Recall@20 every {settings['eval_every']} epochs. " + verdict)
    result = {"name": NAME, "figures": figures, "numbers": numbers, "claims": [decay_claim, momentum_claim],
              "verdict": verdict}
    return write_result(out_dir, result)
