"""Growing a run: continue a checkpoint on data that adds users and items.

A run's checkpoint holds tables of n_users and n_items rows and the optimizer state beside them.
Data that adds users and items, re-indexed to the run's id maps (`recgrad.data.align_ids`: known
raw ids keep their row, new ones are appended), needs tables of n' >= n rows. The grown run's
model is built for the new sizes from the run's settings, so every row starts as in a fresh run
on the new data (N(0, init_std^2) from the run's seed, the model's own initialiser); then, for
each parameter W and each of its optimizer state arrays s,

    W'[:n] = W,   W'[n:] = its fresh initialisation      the ID_TABLES parameters (one row per id)
    W' = W                                               every other parameter (towers, MLP, biases)
    s'[:n] = s,   s'[n:] = 0                             Adam's and SparseAdam's moments, momentum
    step' = step                                         the per-parameter step counts

The zeros are what the optimizer holds before a row's first step (a momentum buffer at zero takes
b = g on that step, as a fresh one). The step counts are per parameter (PyTorch's layout), so a new
row's first Adam step is bias-corrected with its table's count, as in PyTorch after growing an
nn.Embedding and padding its state; the lazy-Adam rows likewise.

The random streams (the negatives' sampler, the epoch shuffle, any generator the model holds)
continue from the checkpoint. What begins anew is the run itself: epoch 0, an empty history, model
selection, and the learning-rate schedule, which starts again from `lr` (a cosine anneals again
over the grown run's epochs; the optimizers' hyper-parameters are the run's settings, not the
checkpoint's annealed values).
"""

import numpy as np

from recgrad.train import settings as run_settings

__all__ = ["grow_parameters", "grow_optimizer_state", "start_grown"]

# What a grown run takes from the checkpoint (the trainer's random streams among them).
STATE_KEYS = ("settings", "model", "optimizers", "model_rngs", "negatives", "shuffle_rng")


def grow_parameters(model, saved):
    """Copy `saved` (the state_dict of the same model with fewer id rows) into `model`.

    Returns {id(parameter): rows copied} of the tables (ID_TABLES) whose first rows came from `saved`.
    ValueError when the model has no id tables or `saved` is not a smaller copy of it.
    """
    tables = getattr(type(model), "ID_TABLES", None)
    if not tables:
        raise ValueError(f"{type(model).__name__} has no user or item embedding tables to grow")
    named = dict(model.named_parameters())
    if set(named) != set(saved):
        raise ValueError(f"the checkpoint's model has parameters {sorted(saved)}, this {type(model).__name__} has "
                         f"{sorted(named)}")
    grown = {}
    for name, param in named.items():
        old = np.asarray(saved[name])
        if name in tables:
            if old.shape[1:] != param.data.shape[1:] or old.shape[0] > param.data.shape[0]:
                raise ValueError(f"{name}: the checkpoint's table has shape {old.shape}, which cannot grow into "
                                 f"{param.data.shape}")
            param.data[:old.shape[0]] = old
            grown[id(param)] = old.shape[0]
        else:
            if old.shape != param.data.shape:
                raise ValueError(f"{name}: the checkpoint has shape {old.shape}, this model {param.data.shape}")
            param.data[...] = old
    return grown


def grow_optimizer_state(optimizer, saved, grown):
    """Load the state of `saved` (an optimizer's state_dict over the smaller model) into `optimizer`,
    the state arrays of the grown tables padded with zero rows; the hyper-parameters stay
    `optimizer`'s own."""
    params = [param for group in optimizer.param_groups for param in group["params"]]
    saved_count = sum(len(group["params"]) for group in saved["param_groups"])
    if saved_count != len(params):
        raise ValueError(f"the checkpoint's optimizer holds {saved_count} parameters, this one {len(params)}")
    state = {}
    for index, entry in saved["state"].items():
        param = params[int(index)]
        rows = grown.get(id(param))
        state[int(index)] = {name: _padded(value, param.data.shape, rows) for name, value in entry.items()}
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def _padded(value, shape, rows):
    """A table's state array with zero rows appended up to `shape`; anything else as it is."""
    if rows is None or not isinstance(value, np.ndarray) or value.shape[:1] != (rows,) or value.shape == shape:
        return value
    padded = np.zeros(shape, dtype=value.dtype)
    padded[:rows] = value
    return padded


def start_grown(trainer, checkpoint):
    """Give `trainer` (prepared for the grown data, its model freshly built for the new sizes) the
    parameters and optimizer state of `checkpoint`, a run's state over fewer users and items; see
    the module doc. ValueError (one line) when the checkpoint cannot grow into this trainer."""
    missing = [key for key in STATE_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"the checkpoint has no {', '.join(missing)}")
    try:
        changed = run_settings.resume_conflicts(checkpoint["settings"], trainer.config())
        if changed:
            raise ValueError("the checkpoint was written with different settings: " + ", ".join(changed))
        grown = grow_parameters(trainer.model, checkpoint["model"])
        if len(checkpoint["optimizers"]) != len(trainer.optimizers):
            raise ValueError(f"the checkpoint holds {len(checkpoint['optimizers'])} optimizers, "
                             f"expected {len(trainer.optimizers)}")
        for optimizer, saved in zip(trainer.optimizers, checkpoint["optimizers"]):
            grow_optimizer_state(optimizer, saved, grown)
    except (KeyError, TypeError, IndexError) as error:
        raise ValueError(f"the checkpoint is missing or has a malformed entry ({error})") from None
