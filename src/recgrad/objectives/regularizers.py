"""LightGCN's L2 on the embedding rows a batch looked up (He et al., SIGIR 2020, eq. 15 as coded).

    R = l2 / 2 * (sum of |e|^2 over every looked-up row occurrence) / B,     dR/de = l2 e / B

per occurrence (a row looked up c times gets c l2 e / B). The gradient is added to the table's
gradient directly: it is not optimizer weight decay, which would shrink every row at every step.
With one negative: l2 / 2 (|e_u|^2 + |e_i+|^2 + |e_i-|^2) summed over the batch, / B.
"""

import numpy as np

from recgrad.models.embedding import Embedding
from recgrad.nn.module import Module, RowSparseGrad

__all__ = ["BatchL2", "embeddings_of"]


def embeddings_of(model):
    """Every `Embedding` among the model and its sub-modules, depth first."""
    found = [model] if isinstance(model, Embedding) else []
    for _, child in model.children():
        found.extend(embeddings_of(child))
    return found


class BatchL2:
    """`BatchL2(l2)(model, batch_size)` adds dR/de to the looked-up rows' gradients and returns R.

    Call it after the objective's backward (the embeddings' caches hold the rows looked up).
    """

    def __init__(self, l2: float) -> None:
        self.l2 = float(l2)

    def __call__(self, model: Module, batch_size: int) -> float:
        if self.l2 == 0.0:
            return 0.0
        scale, total = self.l2 / batch_size, 0.0
        for embedding in embeddings_of(model):
            weight = embedding.weight
            looked_up = embedding.cache.reshape(-1)
            rows_data = weight.data[looked_up]
            total += float(np.sum(rows_data * rows_data, dtype=np.float64))
            rows, counts = np.unique(looked_up, return_counts=True)
            values = (scale * counts[:, None]).astype(weight.data.dtype) * weight.data[rows]
            grad = weight.grad
            if isinstance(grad, np.ndarray):
                grad[rows] += values
            elif isinstance(grad, RowSparseGrad) and np.array_equal(grad.rows, rows):
                grad.values += values
            else:
                weight.accumulate_grad(RowSparseGrad(rows, values))
        return self.l2 * 0.5 * total / batch_size
