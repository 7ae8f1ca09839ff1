"""Experiment `activations`: every activation and its derivative, checked against finite differences.

For each activation f on a grid of x in [-5, 5] (float64), three derivatives are compared:
the closed form `recgrad.activations.*_grad` (what the figure draws), the layer's `backward` with
an upstream gradient of ones (what training uses), and the central difference
(f(x + h) - f(x - h)) / 2h with h = 1e-5, whose error is O(h^2 f''') + O(eps_machine / h), about
1e-10 here. Softmax is shown on a 3-class slice: logits (t, 0.5, -0.5) with t on the grid, its three
outputs s_i and the column ds_i/dt of its Jacobian (from `softmax_jacobian`, from the layer's
vector-Jacobian product with a one-hot upstream gradient, and from finite differences).
"""

import numpy as np

from recgrad import activations as act
from recgrad import nn
from recgrad.experiments.common import claim, figure, save_figure, write_result

NAME = "activations"
DESCRIPTION = "each activation and its derivative, with the finite-difference derivative overlaid"

_STEP = 1e-5
_SWISH_BETAS = (0.5, 1.0, 2.0)
_SOFTMAX_REST = np.array([0.5, -0.5])


def _elementwise_cases():
    """(label, f, closed-form f', layer) for every elementwise activation drawn."""
    cases = [
        ("sigmoid", act.sigmoid, act.sigmoid_grad, nn.Sigmoid()),
        ("tanh", act.tanh, act.tanh_grad, nn.Tanh()),
        ("relu", act.relu, act.relu_grad, nn.ReLU()),
        ("gelu", act.gelu, act.gelu_grad, nn.GELU()),
        ("gelu-tanh", lambda x: act.gelu(x, "tanh"), lambda x: act.gelu_grad(x, "tanh"), nn.GELU("tanh")),
    ]
    for beta in _SWISH_BETAS:
        cases.append((
            f"swish-beta{beta:g}",
            lambda x, beta=beta: act.swish(x, beta),
            lambda x, beta=beta: act.swish_grad(x, beta),
            nn.Swish(beta),
        ))
    return cases


def _layer_derivative(layer, x):
    """f'(x) from the layer's backward: the vector-Jacobian product with an upstream gradient of ones."""
    layer(x)
    return layer.backward(np.ones_like(x))


def _softmax_slice(t):
    """Logits (t, 0.5, -0.5) for each t: shape (len(t), 3)."""
    return np.column_stack([t, np.broadcast_to(_SOFTMAX_REST, (t.size, 2))])


def run(out_dir, quick=False, seed=0):
    """Draw the figure, measure max |closed form - finite difference| per activation; see the module doc."""
    del seed  # deterministic: a fixed grid, no random draws
    points = 100 if quick else 400  # an even count keeps the ReLU kink x = 0 off the grid
    x = np.linspace(-5.0, 5.0, points)
    marks = slice(None, None, max(1, points // 20))

    fig, axes = figure(3, 3, panel_width=3.2, panel_height=2.6)
    panels = iter(axes.ravel())
    errors, sigmoid_max, swish_gap = {}, None, {}
    for label, f, f_grad, layer in _elementwise_cases():
        closed = f_grad(x)
        numeric = (f(x + _STEP) - f(x - _STEP)) / (2.0 * _STEP)
        from_layer = _layer_derivative(layer, x)
        errors[label] = {
            "closed_form_vs_fd": float(np.max(np.abs(closed - numeric))),
            "layer_backward_vs_fd": float(np.max(np.abs(from_layer - numeric))),
        }
        if label == "sigmoid":
            sigmoid_max = float(np.max(closed))
        if label.startswith("swish"):
            swish_gap[label] = float(np.max(np.abs(f(x) - act.relu(x))))
        ax = next(panels)
        ax.plot(x, f(x), label="f(x)")
        ax.plot(x, closed, label="f'(x)")
        ax.plot(x[marks], numeric[marks], "k.", markersize=4, label="finite difference")
        ax.set_title(label)
        ax.axhline(0.0, color="0.8", linewidth=0.5)

    logits = _softmax_slice(x)
    s = act.softmax(logits)
    column = act.softmax_jacobian(logits)[:, :, 0]  # ds_i / dt, shape (points, 3)
    upper, lower = act.softmax(_softmax_slice(x + _STEP)), act.softmax(_softmax_slice(x - _STEP))
    numeric = (upper - lower) / (2.0 * _STEP)
    layer = nn.Softmax()
    layer(logits)
    from_layer = np.column_stack([layer.backward(np.eye(3)[np.full(points, i)])[:, 0] for i in range(3)])
    errors["softmax"] = {
        "closed_form_vs_fd": float(np.max(np.abs(column - numeric))),
        "layer_backward_vs_fd": float(np.max(np.abs(from_layer - numeric))),
    }
    ax = next(panels)
    for i in range(3):
        line = ax.plot(x, s[:, i], label=f"s{i}")[0]
        ax.plot(x, column[:, i], "--", color=line.get_color(), label=f"ds{i}/dt")
        ax.plot(x[marks], numeric[marks, i], "k.", markersize=4)
    ax.set_title("softmax(t, 0.5, -0.5)")
    ax.legend(fontsize=6, ncol=2)
    axes[0, 0].legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("x (softmax: t)")
    fig.suptitle("Activations f (solid), derivatives f' and finite differences (dots)")
    figures = [save_figure(fig, out_dir, "activations.png")]

    gelu_gap = float(np.max(np.abs(act.gelu(x, "tanh") - act.gelu(x))))
    gelu_grad_gap = float(np.max(np.abs(act.gelu_grad(x, "tanh") - act.gelu_grad(x))))
    worst_label = max(errors, key=lambda k: max(errors[k].values()))
    worst = max(errors[worst_label].values())
    betas = [f"swish-beta{beta:g}" for beta in _SWISH_BETAS]
    shrinking = all(swish_gap[a] > swish_gap[b] for a, b in zip(betas, betas[1:]))
    numbers = {
        "grid": {"start": -5.0, "stop": 5.0, "points": points, "fd_step": _STEP},
        "max_abs_error": errors,
        "max_abs_error_overall": worst,
        "worst_activation": worst_label,
        "sigmoid_grad_max": sigmoid_max,
        "gelu_tanh_vs_exact_max_abs": gelu_gap,
        "gelu_tanh_vs_exact_grad_max_abs": gelu_grad_gap,
        "swish_vs_relu_max_abs": swish_gap,
    }
    claims = [
        claim(
            "Every activation's derivative (closed form and layer backward) equals its finite-difference derivative",
            "holds" if worst < 1e-6 else "does not hold",
            f"the largest |analytic - finite difference| over {points} points in [-5, 5] is {worst:.1e} "
            f"({worst_label}), against a tolerance of 1e-6.",
        ),
        claim(
            "The sigmoid's derivative is at most 1/4, so each sigmoid layer scales a gradient by at most 1/4",
            "holds" if sigmoid_max <= 0.25 + 1e-15 else "does not hold",
            f"max sigmoid'(x) on the grid is {sigmoid_max:.6f} (1/4 is reached only at x = 0).",
        ),
        claim(
            "GELU's tanh approximation is close to exact GELU (within 1e-3)",
            "holds" if gelu_gap < 1e-3 else "does not hold",
            f"max |gelu_tanh - gelu| = {gelu_gap:.1e} and max |gelu_tanh' - gelu'| = {gelu_grad_gap:.1e} on [-5, 5].",
        ),
        claim(
            "Swish approaches ReLU as beta grows",
            "holds" if shrinking else "does not hold",
            "max |swish_beta - relu| is "
            + ", ".join(f"{swish_gap[k]:.3f} at beta {b:g}" for k, b in zip(betas, _SWISH_BETAS))
            + " (0.278 / beta in theory).",
        ),
    ]
    verdict = (
        f"All {len(errors)} derivatives agree with central finite differences to {worst:.1e} at most "
        f"(worst: {worst_label}), so the closed forms and the layers' backward passes are "
        f"{'correct' if worst < 1e-6 else 'NOT correct'} to the accuracy finite differences can resolve. "
        f"The sigmoid's slope peaks at {sigmoid_max:.4f}, the factor behind vanishing gradients in deep "
        f"sigmoid networks; GELU's tanh form stays within {gelu_gap:.1e} of the exact GELU, and Swish's "
        f"largest distance from ReLU falls from {swish_gap[betas[0]]:.3f} (beta {_SWISH_BETAS[0]:g}) to "
        f"{swish_gap[betas[-1]]:.3f} (beta {_SWISH_BETAS[-1]:g})."
    )
    return write_result(out_dir, {
        "name": NAME, "figures": figures, "numbers": numbers, "claims": claims, "verdict": verdict,
    })
