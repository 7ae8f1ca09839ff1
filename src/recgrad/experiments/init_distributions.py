"""Experiment `init`: the initialisers' empirical distributions against their formulas, and signal through depth.

Part 1. One weight of shape (fan_out, fan_in) = (256, 512) (quick: (128, 256)) is filled by each
initialiser of recgrad.init, with PyTorch's formulas (gain 1 for Xavier, the ReLU gain sqrt 2 and
fan_in for Kaiming, a = sqrt 5 for Linear's default):

    xavier_uniform    U[-b, b],  b = gain sqrt(6 / (fan_in + fan_out))
    xavier_normal     N(0, s^2), s = gain sqrt(2 / (fan_in + fan_out))
    kaiming_uniform   U[-b, b],  b = gain sqrt(3 / fan_in)
    kaiming_normal    N(0, s^2), s = gain / sqrt(fan_in)
    linear default    U[-b, b],  b = 1 / sqrt(fan_in)   (kaiming_uniform with a = sqrt 5)

and compared with it: the standard deviation, the largest |w| against the bound (uniform), and
the Kolmogorov-Smirnov distance to the formula's CDF (with its p-value).

Part 2. A signal x ~ N(0, I) (512 inputs; quick 256) goes through 50 layers of width 256 (quick:
30 of 128) for each activation x init. Per layer we record Var(z_l) of the pre-activations
z_l = W h_{l-1} + b over batch and units (the quantity Glorot's and He's derivations keep
constant), and the input-driven part, the per-unit variance over the batch averaged over units
(what still carries information about the input: a constant offset per unit counts in the first,
not in the second). For ReLU without bias the closed form is Var(z_{l+1}) = fan_in Var(w) Var(z_l) / 2, i.e.
a factor 1 per layer for Kaiming and 1/2 for Xavier on square layers; it is drawn beside the
measurement. Tanh is also run with Xavier at PyTorch's recommended gain 5/3.
"""

import math

import numpy as np
from scipy import stats

from recgrad import init, nn
from recgrad.experiments.common import (
    ACTIVATION_LAYERS,
    claim,
    figure,
    init_linear,
    save_figure,
    single_threaded,
    write_result,
)

NAME = "init"
DESCRIPTION = "empirical Xavier/Kaiming weight distributions against their formulas, and forward variance through depth"

_RELU_GAIN = init.calculate_gain("relu")
_TANH_GAIN = init.calculate_gain("tanh")
_TOLERANCE = 0.02  # relative: empirical std and bound within 2% of the formula
_KS_P = 1e-3  # a KS p-value below this rejects "drawn from the formula's distribution"
_FLOOR = 1e-300  # an exactly vanished variance is drawn here on the log10 axis (the JSON keeps the 0)


def _initialisers(fan_in, fan_out):
    """label -> (fill function, kind, formula scale): scale is the bound b (uniform) or the std s (normal)."""
    return {
        "xavier_uniform": (lambda w, rng: init.xavier_uniform_(w, rng=rng), "uniform",
                           math.sqrt(6.0 / (fan_in + fan_out))),
        "xavier_normal": (lambda w, rng: init.xavier_normal_(w, rng=rng), "normal",
                          math.sqrt(2.0 / (fan_in + fan_out))),
        "kaiming_uniform": (lambda w, rng: init.kaiming_uniform_(w, nonlinearity="relu", rng=rng), "uniform",
                            _RELU_GAIN * math.sqrt(3.0 / fan_in)),
        "kaiming_normal": (lambda w, rng: init.kaiming_normal_(w, nonlinearity="relu", rng=rng), "normal",
                           _RELU_GAIN / math.sqrt(fan_in)),
        "linear_default": (lambda w, rng: init.kaiming_uniform_(w, a=math.sqrt(5.0), rng=rng), "uniform",
                           1.0 / math.sqrt(fan_in)),
    }


def _distributions(fan_in, fan_out, seed, out_dir):
    """Part 1: fill, measure, compare with the formula, draw the histograms."""
    rng = np.random.default_rng(seed)
    initialisers = _initialisers(fan_in, fan_out)
    fig, axes = figure(1, len(initialisers), panel_width=2.8, panel_height=2.4)
    numbers = {}
    for ax, (label, (fill, kind, scale)) in zip(axes[0], initialisers.items()):
        w = fill(np.empty((fan_out, fan_in)), rng).ravel()
        if kind == "uniform":
            formula_std = scale / math.sqrt(3.0)
            ks = stats.kstest(w, "uniform", args=(-scale, 2.0 * scale))
        else:
            formula_std = scale
            ks = stats.kstest(w, "norm", args=(0.0, scale))
        entry = {
            "kind": kind,
            "formula_scale": scale,
            "formula_std": formula_std,
            "empirical_std": float(np.std(w)),
            "empirical_mean": float(np.mean(w)),
            "std_rel_error": float(abs(np.std(w) / formula_std - 1.0)),
            "ks_statistic": float(ks.statistic),
            "ks_pvalue": float(ks.pvalue),
        }
        if kind == "uniform":
            entry["empirical_max_abs"] = float(np.max(np.abs(w)))
            entry["bound_rel_error"] = float(abs(np.max(np.abs(w)) / scale - 1.0))
        numbers[label] = entry
        ax.hist(w, bins=60, density=True, color="0.75")
        grid = np.linspace(-1.2 * (scale if kind == "uniform" else 4.0 * scale),
                           1.2 * (scale if kind == "uniform" else 4.0 * scale), 400)
        density = (stats.uniform.pdf(grid, -scale, 2.0 * scale) if kind == "uniform"
                   else stats.norm.pdf(grid, 0.0, scale))
        ax.plot(grid, density, color="C3", linewidth=1.2, label="formula")
        ax.set_title(f"{label}\n{'b' if kind == 'uniform' else 's'} = {scale:.4f}, KS p = {ks.pvalue:.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Weight draws ({fan_out} x {fan_in}) against their formulas")
    return numbers, save_figure(fig, out_dir, "init_distributions.png")


def _signal_inits():
    """label -> function(layer, activation, rng) re-initialising a Linear; Xavier at gain 5/3 only for tanh."""
    inits = {scheme: (lambda layer, activation, rng, scheme=scheme: init_linear(layer, scheme, rng))
             for scheme in ("xavier", "kaiming", "default")}

    def xavier_tanh_gain(layer, activation, rng):
        init.xavier_normal_(layer.weight.data, gain=_TANH_GAIN, rng=rng)
        init.zeros_(layer.bias.data)

    inits["xavier-gain-5/3"] = xavier_tanh_gain
    return inits


def _signal(depth, width, batch, seed):
    """Part 2: Var(z_l) per layer for every activation x init (xavier-gain-5/3 only with tanh)."""
    x = np.random.default_rng(seed).standard_normal((batch, width))
    out = {}
    for activation, layer_type in ACTIVATION_LAYERS.items():
        out[activation] = {}
        for label, reinit in _signal_inits().items():
            if label == "xavier-gain-5/3" and activation != "tanh":
                continue
            rng = np.random.default_rng(seed + 1)  # the same weight draws for every activation of an init
            h, variances, signal, nonlinearity = x, [], [], layer_type()
            for _ in range(depth):
                layer = nn.Linear(width, width, rng=rng)
                reinit(layer, activation, rng)
                z = layer(h)
                variances.append(float(np.var(z)))
                signal.append(float(np.mean(np.var(z, axis=0))))
                h = nonlinearity(z)
            per_layer = (variances[-1] / variances[0]) ** (1.0 / (depth - 1)) if variances[0] > 0 else None
            out[activation][label] = {
                "preactivation_var": variances,
                "input_signal_var": signal,
                "last_over_first": variances[-1] / variances[0] if variances[0] > 0 else None,
                "signal_last_over_first": signal[-1] / signal[0] if signal[0] > 0 else None,
                "per_layer_factor": per_layer,
            }
    return out


def _relu_theory(first, factor, depth):
    return [first * factor**layer for layer in range(depth)]


def _plot_signal(signal, depth, width, out_dir):
    fig, axes = figure(2, len(signal), panel_width=2.8, panel_height=2.3)
    layers = np.arange(1, depth + 1)
    for col, (activation, by_init) in enumerate(signal.items()):
        for row, key in enumerate(("preactivation_var", "input_signal_var")):
            for label, entry in by_init.items():
                axes[row, col].plot(layers, np.log10(np.maximum(entry[key], _FLOOR)), label=label)
        if activation == "relu":
            for label, factor in (("kaiming", 1.0), ("xavier", 0.5)):
                first = by_init[label]["preactivation_var"][0]
                axes[0, col].plot(layers, np.log10(_relu_theory(first, factor, depth)), "k:", linewidth=1)
        axes[0, col].set_title(activation, fontsize=9)
        axes[1, col].set_xlabel("layer", fontsize=8)
        axes[0, col].legend(fontsize=6)
    axes[0, 0].set_ylabel("log10 Var(z_l)", fontsize=8)
    axes[1, 0].set_ylabel("log10 mean_unit Var_batch(z_l)", fontsize=8)
    fig.suptitle(f"Forward signal through {depth} layers of width {width} (dotted: ReLU closed form)")
    return save_figure(fig, out_dir, "init_signal.png")


def _distribution_claims(dist):
    claims = []
    for label, entry in dist.items():
        checks = [entry["std_rel_error"] < _TOLERANCE, entry["ks_pvalue"] > _KS_P]
        detail = f"std {entry['empirical_std']:.5f} vs formula {entry['formula_std']:.5f}"
        if entry["kind"] == "uniform":
            checks.append(entry["bound_rel_error"] < _TOLERANCE)
            detail += f", max |w| {entry['empirical_max_abs']:.5f} vs bound {entry['formula_scale']:.5f}"
        claims.append(claim(
            f"{label} draws from its formula's distribution",
            "holds" if all(checks) else "does not hold",
            f"{detail}; KS distance {entry['ks_statistic']:.4f} (p = {entry['ks_pvalue']:.2f}); "
            f"tolerance {_TOLERANCE:.0%} and p > {_KS_P:g}.",
        ))
    return claims


def _signal_claims(signal, depth):
    relu = signal["relu"]
    kaiming, xavier = relu["kaiming"]["last_over_first"], relu["xavier"]["per_layer_factor"]
    tanh = signal["tanh"]
    claims = [
        claim(
            "Kaiming init preserves the forward variance of a deep ReLU network",
            "holds" if 0.5 <= kaiming <= 2.0 else "does not hold",
            f"Var(z_{depth}) / Var(z_1) = {kaiming:.2f} with Kaiming (closed form 1; within a factor 2 counts), "
            f"{relu['default']['last_over_first']:.1e} with PyTorch's Linear default; the input-driven part "
            f"still falls to {relu['kaiming']['signal_last_over_first']:.2f} with Kaiming (inputs' representations "
            "grow correlated with depth).",
        ),
        claim(
            "Xavier init halves the variance at every ReLU layer",
            "holds" if abs(xavier - 0.5) < 0.05 else "does not hold",
            f"measured factor per layer {xavier:.3f} (closed form 0.5), Var(z_{depth}) / Var(z_1) = "
            f"{relu['xavier']['last_over_first']:.1e}.",
        ),
    ]
    plain, gained = tanh["xavier"]["last_over_first"], tanh["xavier-gain-5/3"]["last_over_first"]
    plain_ok, gained_ok = 0.1 <= plain <= 10.0, 0.1 <= gained <= 10.0
    claims.append(claim(
        "Xavier init preserves the forward variance of a deep tanh network",
        "holds" if plain_ok else "holds with conditions" if gained_ok else "does not hold",
        f"Var(z_{depth}) / Var(z_1) = {plain:.2e} with Xavier at gain 1 and {gained:.2f} at PyTorch's "
        f"tanh gain 5/3 (preserved means within a factor 10).",
    ))
    sigmoid = signal["sigmoid"]["xavier"]
    total, driven = sigmoid["last_over_first"], sigmoid["signal_last_over_first"]
    claims.append(claim(
        "Xavier init preserves the forward signal of a deep sigmoid network",
        "holds" if 0.1 <= driven <= 10.0 else "does not hold",
        f"with Xavier, Var(z_{depth}) / Var(z_1) = {total:.2e} over batch and units, but the part that varies "
        f"with the input (per-unit variance over the batch) falls to {driven:.2e} of its first-layer value: "
        "sigmoid outputs have mean 1/2 and slope at most 1/4, so z keeps a variance fed by that mean.",
    ))
    return claims


def run(out_dir, quick=False, seed=0):
    """Measure the distributions and the signal through depth, draw both, judge the claims."""
    fan_out, fan_in = (128, 256) if quick else (256, 512)
    depth, width, batch = (30, 128, 256) if quick else (50, 256, 512)
    dist, dist_figure = _distributions(fan_in, fan_out, seed, out_dir)
    with single_threaded():
        signal = _signal(depth, width, batch, seed)
    figures = [dist_figure, _plot_signal(signal, depth, width, out_dir)]
    claims = _distribution_claims(dist) + _signal_claims(signal, depth)
    worst_std = max(entry["std_rel_error"] for entry in dist.values())
    worst_bound = max(entry["bound_rel_error"] for entry in dist.values() if entry["kind"] == "uniform")
    min_p = min(entry["ks_pvalue"] for entry in dist.values())
    ratios = "; ".join(
        f"{activation}: " + ", ".join(f"{label} {entry['last_over_first']:.1e}" for label, entry in by_init.items())
        for activation, by_init in signal.items()
    )
    verdict = (
        f"Over {fan_out * fan_in:,} draws each, the five initialisers match their formulas: the largest relative "
        f"error of the standard deviation is {worst_std:.2%}, of the uniform bound {worst_bound:.3%}, and the "
        f"smallest KS p-value is {min_p:.2f}. Through {depth} layers of width {width}, Var(z_{depth}) / Var(z_1) is "
        f"{ratios}. Claims: " + "; ".join(f"{c['claim']}: {c['verdict']}" for c in claims) + "."
    )
    numbers = {
        "weight_shape": [fan_out, fan_in],
        "distributions": dist,
        "signal": {"depth": depth, "width": width, "batch": batch, "results": signal},
    }
    return write_result(out_dir, {
        "name": NAME, "figures": figures, "numbers": numbers, "claims": claims, "verdict": verdict,
    })
