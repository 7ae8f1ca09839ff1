"""Pieces the experiments share: classification data (synthetic, and scikit-learn's handwritten
digits when installed), deep MLPs, a forward/backward probe, user subsamples, figures, JSON.

Everything is seeded through a numpy Generator and built from recgrad's own layers, so an experiment
measures recgrad's core and nothing else. Figures use matplotlib's object API (`Figure`, no pyplot),
which renders with the Agg canvas and touches no global backend state.
"""

import contextlib
import json
import math
import sys
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits

from recgrad import init, kernels, nn
from recgrad.data import Dataset
from recgrad.losses import CrossEntropyLoss

FIGURE_DPI = 100

# The activations every network experiment compares, as layer factories. Swish is beta = 1 (SiLU).
ACTIVATION_LAYERS = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "swish": nn.SiLU,
}

# Weight initialisations compared in depth. "xavier" is Glorot & Bengio's N(0, 2 / (fan_in + fan_out))
# with gain 1 (the paper's rule; PyTorch would multiply by calculate_gain(nonlinearity)), "kaiming" is
# He et al.'s N(0, 2 / fan_in) (the relu gain, fan_in mode), both with zero biases; "default" is
# torch.nn.Linear's own reset: W ~ U[-1/sqrt(fan_in), 1/sqrt(fan_in)] (Var = 1 / (3 fan_in)), same bias.
INIT_SCHEMES = ("xavier", "kaiming", "default")


def init_linear(layer, scheme, rng):
    """Re-initialise a recgrad.nn.Linear in place with one of INIT_SCHEMES, drawing from `rng`."""
    if scheme == "default":
        layer.reset_parameters(rng)
        return layer
    if scheme == "xavier":
        init.xavier_normal_(layer.weight.data, gain=1.0, rng=rng)
    elif scheme == "kaiming":
        init.kaiming_normal_(layer.weight.data, mode="fan_in", nonlinearity="relu", rng=rng)
    else:
        raise ValueError(f"scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
    if layer.bias is not None:
        init.zeros_(layer.bias.data)
    return layer


def mlp(in_features, width, out_features, depth, activation, scheme, rng):
    """A Sequential of `depth` Linear layers (in -> width -> ... -> width -> out), `activation` after all but the last.

    `activation` is a key of ACTIVATION_LAYERS, `scheme` one of INIT_SCHEMES; float64 parameters.
    """
    if depth < 2:
        raise ValueError(f"depth must be at least 2 (one hidden layer), got {depth}")
    if activation not in ACTIVATION_LAYERS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATION_LAYERS)}, got {activation!r}")
    sizes = [in_features] + [width] * (depth - 1) + [out_features]
    layers = []
    for index in range(depth):
        layers.append(init_linear(nn.Linear(sizes[index], sizes[index + 1], rng=rng), scheme, rng))
        if index < depth - 1:
            layers.append(ACTIVATION_LAYERS[activation]())
    return nn.Sequential(*layers)


def linear_layers(model):
    """The Linear layers of a Sequential, in order."""
    return [layer for _, layer in model.children() if isinstance(layer, nn.Linear)]


def classification_task(n, features, classes, rng, teacher_width=32):
    """A synthetic task: x ~ N(0, I), label = argmax of a fixed random one-hidden-layer tanh teacher.

    The teacher is z = tanh(x A / sqrt(features)) B with A, B standard normal, so the labels depend
    non-linearly on x and every class is populated. Returns (x float64 (n, features), y int64 (n,)).
    """
    a = rng.standard_normal((features, teacher_width))
    b = rng.standard_normal((teacher_width, classes))
    x = rng.standard_normal((n, features))
    y = np.argmax(np.tanh(x @ a / math.sqrt(features)) @ b, axis=1).astype(np.int64)
    return x, y


@dataclass(frozen=True)
class ClassificationData:
    """A classification data set split for an experiment: float64 features (n, features), int64 labels."""

    name: str
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def features(self):
        return self.x.shape[1]

    @property
    def classes(self):
        return int(np.concatenate([self.y, self.y_test]).max()) + 1


def synthetic_classification(n_train, n_test, features, classes, rng):
    """`classification_task` split into its first n_train points (training) and the next n_test (test)."""
    x, y = classification_task(n_train + n_test, features, classes, rng)
    return ClassificationData("synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:])


# Said wherever an experiment skips its real-data part.
DIGITS_MISSING = ("scikit-learn is not installed, so the real-data part (handwritten digits) is skipped; "
                  "pip install 'recgrad[experiments]' to run it")


def real_classification(experiment, n_test, rng):
    """digits_classification(n_test, rng), or None after printing why the real-data part is skipped."""
    data = digits_classification(n_test, rng)
    if data is None:
        print(f"{experiment}: {DIGITS_MISSING}", file=sys.stderr, flush=True)
    return data


def classification_data_sets(synthetic, experiment, digits_test, seed):
    """[synthetic, the handwritten digits]: the digits (`real_classification`) only where scikit-learn is."""
    digits = real_classification(experiment, digits_test, np.random.default_rng(seed))
    return [synthetic] if digits is None else [synthetic, digits]


def digits_classification(n_test, rng):
    """scikit-learn's handwritten digits (1797 8x8 images, 64 features, 10 classes), or None without scikit-learn.

    The data set ships inside the scikit-learn package (no download). The points are shuffled by
    `rng`, the last n_test held out, and every pixel standardised with the training points' mean
    and standard deviation (a pixel that is constant there is only centred).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    digits = load_digits()
    order = rng.permutation(len(digits.target))
    x, y = digits.data[order].astype(np.float64), digits.target[order].astype(np.int64)
    train, test = slice(0, len(y) - n_test), slice(len(y) - n_test, len(y))
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    x = (x - mean) / np.where(std > 0.0, std, 1.0)
    return ClassificationData("digits", x[train], y[train], x[test], y[test])


# The users an experiment trains on when --data gives a larger recommender data set: a budget (all of
# Gowalla's 30k users cost 10-13 s per dense-Adam MF epoch on the 2-core machine the findings ran on).
RECOMMENDER_USERS = 3000


def subsample_users(data, n_users, seed):
    """`n_users` users of a recommender Dataset drawn uniformly (seeded), restricted to the items they trained on.

    A budget for the experiments on a large data set; the data set itself when it has at most n_users
    users. Test items outside the kept items are dropped.
    """
    if data.n_users <= n_users:
        return data
    users = np.sort(np.random.default_rng(seed).choice(data.n_users, size=n_users, replace=False))
    train, test = data.train[users], data.test[users]
    items = np.unique(train.indices)
    return Dataset(train=train[:, items].tocsr(), test=test[:, items].tocsr(), user_ids=data.user_ids[users],
                   item_ids=data.item_ids[items], name=f"{data.name}-{n_users}-users")


def forward_backward(model, x, y):
    """Zero the gradients, run forward and backward once through a Sequential, recording each layer.

    Returns a dict: "loss", "accuracy", "activation_var" (per hidden layer, the variance over batch
    and units of its output after the activation), and per Linear layer l, in order,
    "output_grad_norm" (||dL/dz_l||, z_l the Linear's output: the back-propagated gradient) and
    "weight_grad_norm" (||dL/dW_l||, Frobenius). Parameter gradients are left accumulated.
    """
    model.zero_grad()
    children = [layer for _, layer in model.children()]
    activation_var, h = [], x
    for layer in children:
        h = layer(h)
        if not isinstance(layer, nn.Linear):
            activation_var.append(float(np.var(h)))
    criterion = CrossEntropyLoss()
    loss = float(criterion(h, y))
    grad = criterion.backward()
    output_grad_norm = []
    for layer in reversed(children):
        if isinstance(layer, nn.Linear):
            output_grad_norm.append(float(np.linalg.norm(grad)))
        grad = layer.backward(grad)
    return {
        "loss": loss,
        "accuracy": float(np.mean(np.argmax(h, axis=1) == y)),
        "activation_var": activation_var,
        "output_grad_norm": output_grad_norm[::-1],
        "weight_grad_norm": [float(np.linalg.norm(layer.weight.grad)) for layer in linear_layers(model)],
    }


@contextlib.contextmanager
def single_threaded():
    """A context in which BLAS and recgrad's compiled kernels use one thread each.

    The experiments push small arrays (64 x 64) through long Python loops. A parallel region costs
    more to start and synchronise than such an array costs to compute, and on a shared machine a
    2-thread region waits milliseconds for its second thread: measured here, one 30-layer step took
    50 times longer. One thread also makes every run bit-reproducible. The previous thread counts
    are restored on exit.
    """
    with kernels.num_threads(1), threadpool_limits(limits=1, user_api="blas"):
        yield


def figure(nrows, ncols, panel_width=3.0, panel_height=2.5):
    """A matplotlib Figure with an (nrows, ncols) array of axes (always 2-D), sized per panel."""
    fig = Figure(figsize=(panel_width * ncols, panel_height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig, out_dir, filename):
    """Write `fig` as a PNG at FIGURE_DPI into out_dir; returns the file name."""
    fig.savefig(out_dir / filename, dpi=FIGURE_DPI)
    return filename


def write_result(out_dir, result):
    """Write the experiment's result dict to `<name>.json` in out_dir and return the result."""
    with open(out_dir / f"{result['name']}.json", "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1, allow_nan=False)
    return result


def claim(statement, verdict, evidence, data=None):
    """One claim entry; verdict is "holds", "holds with conditions" or "does not hold".

    `data` names the data set the verdict was measured on, for a claim an experiment judges on
    several (the same statement then appears once per data set).
    """
    if verdict not in ("holds", "holds with conditions", "does not hold"):
        raise ValueError(f"verdict must be 'holds', 'holds with conditions' or 'does not hold', got {verdict!r}")
    entry = {"claim": statement, "verdict": verdict, "evidence": evidence}
    if data is not None:
        entry["data"] = data
    return entry


def finite_or_none(value):
    """A float for JSON, or None where the value is NaN or infinite (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None
