"""Experiment `losses`: BPR, BCE and InfoNCE (1, 4, 64, in-batch negatives; temperature; dot vs cosine).

Everything is trained on the same data (the data set of `--data`, as a seeded subsample of
common.RECOMMENDER_USERS users with the items they trained on; without --data `recgrad.data.synthetic`,
seeded) with the same model
(MF, dim 32, N(0, 0.1^2) tables), optimizer (dense Adam, lr 1e-2), batch and seed; only the loss
changes. Recall@20 and NDCG@20 on the test split are recorded after every epoch, and each run is
summarised by its best Recall@20 over the epochs (what early stopping would keep).

Compared losses (`recgrad.train.Trainer`'s objectives):
- BPR with one uniform negative; BCE on logits with 4 negatives (NCF's recipe);
- InfoNCE with dot similarity and temperature 1 (the plain softmax) with 1, 4 and 64 sampled
  negatives per user and with in-batch negatives;
- the temperature sweep: InfoNCE with 16 negatives per user, tau in TEMPERATURES, dot and cosine.
10 epochs (a budget: a (B, 64, D) negative block costs about 7 s per epoch on the shared 2-core
machine). --quick: a smaller set (400 users), 16 instead of 64 negatives, two temperatures, 5 epochs.

The equivalence check (no training): with one negative, dot similarity and tau = 1, InfoNCE's
logits are [s_p, s_n] and -log softmax(...)[0] = log(1 + exp(s_n - s_p)) = softplus(s_n - s_p),
BPR's loss; so the two losses of `recgrad.losses` and their gradients with respect to the anchor,
positive and negative vectors (BPR's through s = <a, v>) must agree to rounding, checked in float64
to 1e-12. The trained runs add the end-to-end version: the Trainer's BPR run and its InfoNCE run
with one negative draw the same negatives, so their curves must coincide.

Claims: "InfoNCE with one negative equals BPR"; "InfoNCE's temperature matters" (the spread of the
best Recall@20 across the sweep, per similarity, against a 10 % threshold); "more negatives help
InfoNCE" (best Recall@20 for 1, 4, 64 negatives, in that order).
"""

import numpy as np

from recgrad.data import synthetic
from recgrad.experiments.common import RECOMMENDER_USERS, claim, figure, save_figure, subsample_users, write_result
from recgrad.losses import BPRLoss, InfoNCELoss
from recgrad.models import MF
from recgrad.train import Trainer

NAME = "losses"
DESCRIPTION = "BPR vs BCE vs InfoNCE (1/4/64/in-batch negatives, temperature sweep, dot vs cosine) on MF"
USES_RECOMMENDER_DATA = True

DIM, LR = 32, 1e-2
TEMPERATURES = (0.05, 0.1, 0.2, 0.5, 1.0)
QUICK_TEMPERATURES = (0.1, 1.0)
# Relative spread of the best Recall@20 across temperatures above which the temperature "matters".
MATTERS = 0.10
EQUIVALENCE_TOLERANCE = 1e-12


def variants(negatives):
    """{key: (label, Trainer options)} of the main comparison; `negatives` are InfoNCE's sampled K values."""
    found = {"bpr": ("BPR, 1 negative", {"loss": "bpr"}), "bce": ("BCE, 4 negatives", {"loss": "bce"})}
    for k in negatives:
        found[f"infonce_{k}"] = (f"InfoNCE, {k} negative{'s' if k > 1 else ''}",
                                 {"loss": "infonce", "negatives": k, "temperature": 1.0})
    found["infonce_in_batch"] = ("InfoNCE, in-batch", {"loss": "infonce", "negatives_mode": "in_batch",
                                                       "temperature": 1.0})
    return found


def infonce_bpr_equivalence(seed, batch=256, dim=16):
    """Max |difference| between InfoNCE (1 negative, dot, tau 1) and BPR: loss and the three gradients."""
    rng = np.random.default_rng(seed)
    anchor, positive, negative = (rng.standard_normal((batch, dim)) for _ in range(3))
    infonce = InfoNCELoss(temperature=1.0, similarity="dot")
    loss_nce = infonce(anchor, positive, negative[:, None, :])
    d_anchor_nce, d_positive_nce, d_negative_nce = infonce.backward()
    bpr = BPRLoss()
    loss_bpr = bpr(np.sum(anchor * positive, axis=1), np.sum(anchor * negative, axis=1))
    d_pos, d_neg = bpr.backward()
    # s_p = <a, p>, s_n = <a, n>: ds_p/da = p, ds_p/dp = a, ds_n/da = n, ds_n/dn = a.
    d_anchor_bpr = d_pos[:, None] * positive + d_neg[:, None] * negative
    differences = {
        "loss": abs(float(loss_nce) - float(loss_bpr)),
        "d_anchor": float(np.max(np.abs(d_anchor_nce - d_anchor_bpr))),
        "d_positive": float(np.max(np.abs(d_positive_nce - d_pos[:, None] * anchor))),
        "d_negative": float(np.max(np.abs(d_negative_nce[:, 0, :] - d_neg[:, None] * anchor))),
    }
    return {"batch": batch, "dim": dim, "dtype": "float64", "loss": float(loss_bpr),
            "max_abs_difference": differences}


def _settings(quick):
    if quick:
        return {"synthetic": {"n_users": 400, "n_items": 600, "interactions_per_user": 20}, "users": 400, "epochs": 5,
                "batch": 256, "temperatures": QUICK_TEMPERATURES, "negatives": (1, 4, 16), "sweep_negatives": 16}
    return {"synthetic": {}, "users": RECOMMENDER_USERS, "epochs": 10, "batch": 1024, "temperatures": TEMPERATURES,
            "negatives": (1, 4, 64),
            "sweep_negatives": 16}


def _train(data, options, settings, seed):
    # A cosine InfoNCE's MF ranks by the cosine it trains (MF's normalize), as `recgrad train` builds it.
    model = MF(data.n_users, data.n_items, dim=DIM, sparse=True, normalize=options.get("similarity") == "cosine",
               rng=seed)
    trainer = Trainer(model, optimizer="adam", lr=LR, batch_size=settings["batch"], epochs=settings["epochs"],
                      l2=0.0, seed=seed, progress=False, **options)
    result = trainer.fit(data)
    history = result["history"]
    recall = [r["recall@20"] for r in history]
    return {
        "options": options,
        "loss": [r["loss"] for r in history],
        "recall@20": recall,
        "ndcg@20": [r["ndcg@20"] for r in history],
        "seconds": np.cumsum([r["train_seconds"] for r in history]).tolist(),
        "best_recall@20": max(recall),
        "best_epoch": int(np.argmax(recall)) + 1,
        "best_ndcg@20": max(r["ndcg@20"] for r in history),
    }, result["popularity"]


def _plot_curves(numbers, out_dir):
    fig, axes = figure(1, 3, panel_width=3.4, panel_height=2.7)
    for key, label in numbers["labels"].items():
        run = numbers["runs"][key]
        epochs = np.arange(1, len(run["recall@20"]) + 1)
        style = {"marker": ".", "label": label, "linewidth": 1.2}
        if key == "infonce_1":
            style.update(linestyle="--", marker="x")
        axes[0, 0].plot(epochs, run["recall@20"], **style)
        axes[0, 1].plot(epochs, run["ndcg@20"], **style)
        axes[0, 2].plot(run["seconds"], run["recall@20"], **style)
    for axis, metric in zip(axes[0], ("recall@20", "ndcg@20", "recall@20")):
        axis.axhline(numbers["popularity"][metric], color="gray", linestyle="--", linewidth=0.8)
    axes[0, 0].set(xlabel="epoch", ylabel="Recall@20", title="losses on MF (dashed: popularity)")
    axes[0, 1].set(xlabel="epoch", ylabel="NDCG@20", title="NDCG@20")
    axes[0, 2].set(xlabel="training seconds", ylabel="Recall@20", title="Recall@20 vs wall time")
    axes[0, 0].legend(fontsize=6)
    return save_figure(fig, out_dir, "losses_curves.png")


def _plot_temperature(numbers, out_dir):
    fig, axes = figure(1, 2, panel_width=3.6, panel_height=2.7)
    temperatures = numbers["temperatures"]
    for similarity in ("dot", "cosine"):
        sweep = numbers["sweep"][similarity]
        for axis, metric in zip(axes[0], ("best_recall@20", "best_ndcg@20")):
            axis.plot(temperatures, [sweep[str(t)][metric] for t in temperatures], marker="o", label=similarity)
    for axis, metric in zip(axes[0], ("recall@20", "ndcg@20")):
        axis.axhline(numbers["popularity"][metric], color="gray", linestyle="--", linewidth=0.8, label="popularity")
        label = metric.replace("recall", "Recall").replace("ndcg", "NDCG")
        axis.set(xscale="log", xlabel="temperature tau", ylabel=f"best {label}")
    axes[0, 0].set_title(f"InfoNCE, {numbers['sweep_negatives']} negatives: temperature")
    axes[0, 1].set_title("NDCG@20")
    axes[0, 0].legend(fontsize=7)
    return save_figure(fig, out_dir, "losses_temperature.png")


def _equivalence_claim(equivalence, runs):
    worst = max(equivalence["max_abs_difference"].values())
    curve_gap = float(np.max(np.abs(np.subtract(runs["infonce_1"]["recall@20"], runs["bpr"]["recall@20"]))))
    verdict = "holds" if worst <= EQUIVALENCE_TOLERANCE else "does not hold"
    evidence = (f"largest |difference| of loss and gradients in float64 (B={equivalence['batch']}, "
                f"D={equivalence['dim']}): {worst:.1e} (tolerance {EQUIVALENCE_TOLERANCE:g}); trained with the same "
                f"negatives, the two runs' Recall@20 curves differ by at most {curve_gap:.1e}.")
    return claim("InfoNCE with one negative (dot, tau = 1) equals BPR", verdict, evidence), curve_gap


def _temperature_claim(numbers):
    temperatures, spreads, parts = numbers["temperatures"], {}, []
    for similarity in ("dot", "cosine"):
        values = {t: numbers["sweep"][similarity][str(t)]["best_recall@20"] for t in temperatures}
        best, worst = max(values, key=values.get), min(values, key=values.get)
        spreads[similarity] = (values[best] - values[worst]) / max(values[best], 1e-12)
        parts.append(f"{similarity}: best Recall@20 {values[best]:.4f} at tau {best:g}, {values[worst]:.4f} at tau "
                     f"{worst:g} (spread {spreads[similarity]:.0%})")
    matters = [s for s in spreads if spreads[s] > MATTERS]
    verdict = "holds" if len(matters) == 2 else ("holds with conditions" if matters else "does not hold")
    evidence = "; ".join(parts) + f" (threshold {MATTERS:.0%})."
    return claim("InfoNCE's temperature matters", verdict, evidence), spreads, matters


def _negatives_claim(runs, negatives):
    values = [runs[f"infonce_{k}"]["best_recall@20"] for k in negatives]
    increasing = all(a < b for a, b in zip(values, values[1:]))
    verdict = "holds" if increasing else ("holds with conditions" if values[-1] > values[0] else "does not hold")
    evidence = (f"best Recall@20 with {', '.join(map(str, negatives))} sampled negatives (dot, tau 1): "
                + ", ".join(f"{v:.4f}" for v in values)
                + f"; in-batch negatives {runs['infonce_in_batch']['best_recall@20']:.4f}.")
    return claim("more negatives make InfoNCE better", verdict, evidence)


def run(out_dir, quick=False, seed=0, data=None):
    """Train every loss variant and the temperature sweep, check InfoNCE(1) == BPR, draw, judge (module doc).

    data: a recgrad.data.Dataset to subsample, or None for the built-in synthetic set.
    """
    settings = _settings(quick)
    main = variants(settings["negatives"])
    if data is None:
        data = synthetic(seed=seed, **settings["synthetic"])
    else:
        data = subsample_users(data, settings["users"], seed)
    numbers = {"dataset": data.name, "n_users": data.n_users, "n_items": data.n_items,
               "synthetic": settings["synthetic"], "epochs": settings["epochs"], "batch": settings["batch"],
               "dim": DIM, "lr": LR, "temperatures": list(settings["temperatures"]),
               "negatives": list(settings["negatives"]), "sweep_negatives": settings["sweep_negatives"], "runs": {},
               "sweep": {}, "labels": {key: label for key, (label, _) in main.items()}}
    numbers["equivalence"] = infonce_bpr_equivalence(seed)
    for key, (_, options) in main.items():
        numbers["runs"][key], numbers["popularity"] = _train(data, options, settings, seed)
    for similarity in ("dot", "cosine"):
        numbers["sweep"][similarity] = {
            str(tau): _train(data, {"loss": "infonce", "negatives": numbers["sweep_negatives"], "temperature": tau,
                                    "similarity": similarity}, settings, seed)[0]
            for tau in settings["temperatures"]
        }
    figures = [_plot_curves(numbers, out_dir), _plot_temperature(numbers, out_dir)]
    equivalence_claim, curve_gap = _equivalence_claim(numbers["equivalence"], numbers["runs"])
    equivalence_claim["figure"] = figures[0]
    numbers["infonce_1_vs_bpr_recall_gap"] = curve_gap
    temperature_claim, spreads, matters = _temperature_claim(numbers)
    temperature_claim["figure"] = figures[1]
    numbers["temperature_spread"] = spreads
    negatives_claim = _negatives_claim(numbers["runs"], settings["negatives"])
    negatives_claim["figure"] = figures[0]
    runs = numbers["runs"]
    ranking = sorted(main, key=lambda k: -runs[k]["best_recall@20"])
    best_sweep = {s: max(settings["temperatures"], key=lambda t: numbers["sweep"][s][str(t)]["best_recall@20"])
                  for s in ("dot", "cosine")}
    verdict = (
        f"On {data.name} data ({data.n_users} users, {data.n_items} items, {settings['epochs']} epochs), best "
        "Recall@20 ranks " + ", ".join(f"{key} {runs[key]['best_recall@20']:.4f}" for key in ranking)
        + f" (popularity {numbers['popularity']['recall@20']:.4f}). InfoNCE with one negative equals BPR: "
        f"{equivalence_claim['evidence']} The temperature "
        + (f"matters for {' and '.join(matters)} similarity" if matters else "does not matter much")
        + f" ({temperature_claim['evidence']}); the best temperature is {best_sweep['dot']:g} with dot and "
        f"{best_sweep['cosine']:g} with cosine (cosine scores are bounded in [-1, 1], so tau alone sets how peaked "
        f"the softmax can be; dot products can grow their norms instead). "
        f"More negatives: {negatives_claim['evidence']}"
    )
    result = {"name": NAME, "figures": figures, "numbers": numbers,
              "claims": [equivalence_claim, temperature_claim, negatives_claim], "verdict": verdict}
    return write_result(out_dir, result)
