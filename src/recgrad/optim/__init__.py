"""Optimizers and learning-rate schedulers with PyTorch's algorithms, defaults and state layout.

Dense: `SGD`, `Adam`, `AdamW` update every parameter entry. Lazy: `SparseAdam` updates only the rows
of an embedding table present in its `RowSparseGrad` (and `SGD` accepts a RowSparseGrad without
momentum or weight decay). Schedulers: `StepLR`, `ExponentialLR`, `CosineAnnealingLR`, `LinearLR`.

By default every optimizer updates a float32/float64 C-contiguous parameter with a single-pass
compiled step from `recgrad.kernels.optim` (the same numbers and state as the NumPy reference step);
`engine="numpy"` (or `recgrad.engine.set_default_engine("numpy")`) runs the reference. Unlike
PyTorch there is no `fused`/`foreach` flag to pass: see `Optimizer` and docs/kernels.md.
"""

from recgrad.optim.adam import Adam
from recgrad.optim.adamw import AdamW
from recgrad.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, LinearLR, LRScheduler, StepLR
from recgrad.optim.optimizer import Optimizer
from recgrad.optim.sgd import SGD
from recgrad.optim.sparse_adam import SparseAdam

__all__ = [
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "LinearLR",
    "Optimizer",
    "SGD",
    "SparseAdam",
    "StepLR",
]
