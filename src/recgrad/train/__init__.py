"""Training: the run settings, the objects they build, the loop and its callbacks.

- `settings`: every run setting declared once (the CLI, recipes, config.toml and the Trainer derive from it).
- `build`: the only place that turns settings into objects (data, model, sampler, objective, optimizers).
- `trainer`: the `Trainer` and its loop.
- `callbacks`: evaluation, model selection, files, progress, checkpoints.
- `checkpoint`: atomic files and the checkpoint an exact resume reads.
- `compiled_mf`: the compiled MF loop the Trainer runs where it computes the same algorithm.
"""

from recgrad.train.callbacks import Callback
from recgrad.train.trainer import Trainer

__all__ = ["Trainer", "Callback"]
