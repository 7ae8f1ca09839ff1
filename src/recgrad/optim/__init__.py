"""Optimizers and learning-rate schedulers with PyTorch's algorithms, defaults and state layout.

Dense: `SGD`, `Adam`, `AdamW` update every parameter entry. Lazy: `SparseAdam` updates only the rows
of an embedding table present in its `RowSparseGrad` (and `SGD` accepts a RowSparseGrad without
momentum or weight decay). Schedulers: `StepLR`, `ExponentialLR`, `CosineAnnealingLR`, `LinearLR`.

Every optimizer takes `fused=None` (PyTorch's name): True runs a single-pass compiled step from
`recgrad.kernels.optim` with the same numbers and the same state; see `Optimizer` and docs/kernels.md.
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
