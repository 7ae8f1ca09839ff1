"""Embedding: a lookup table whose gradient touches only the rows that were looked up.

    forward:   out[..., :] = W[ids[...], :]                    ids (*S) int -> out (*S, dim)
    backward:  dL/dW[r] = sum over positions p with ids[p] = r of dL/dout[p]

The forward is a gather, so its vector-Jacobian product is the matching scatter-add: every row
that was not looked up has gradient zero, and a row looked up twice receives the sum of both
upstream gradients. With `sparse=True` that gradient is kept row-sparse (`RowSparseGrad`: the
unique rows and their summed gradients, what `torch.nn.Embedding(sparse=True)` produces); with
`sparse=False` it is the dense (num_embeddings, dim) array (PyTorch's default). The ids have no
gradient. Reference: https://pytorch.org/docs/stable/generated/torch.nn.Embedding.html

Initialisation is N(0, init_std^2) with init_std = 0.1 by default, LightGCN's choice
(`nn.init.normal_(std=0.1)`), not PyTorch's N(0, 1) and not Xavier. Xavier on a (num, dim) table
uses fan_in + fan_out = dim + num, so its scale sqrt(2 / (num + dim)) shrinks as the catalogue
grows: a million-item table would start with entries of size ~1e-3 and scores of ~1e-6, whatever
the embedding dimension. A fixed std keeps the initial scores of the same size for every
catalogue. Any other rule can be passed as `initializer`.
"""

import numpy as np

from recgrad._checks import positive_float, positive_int
from recgrad.init import as_generator, normal_
from recgrad.nn.module import Module, Parameter, RowSparseGrad


def as_ids(ids, num, name="ids"):
    """`ids` as an int64 array with every entry in [0, num), or an error naming `name`.

    Non-integer input raises TypeError; out-of-range ids raise IndexError listing (up to five of)
    them. Negative ids are out of range, as in torch.nn.Embedding (no Python-style wrap-around).
    """
    array = np.asarray(ids)
    if array.size == 0 and array.dtype.kind == "f":  # np.asarray([]) is float64
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer ids, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if array.size:
        bad = (array < 0) | (array >= num)
        if bad.any():
            offending = np.unique(array[bad])
            shown = ", ".join(str(v) for v in offending[:5]) + (", ..." if offending.size > 5 else "")
            raise IndexError(f"{name}: id(s) {shown} out of range for {num} rows (valid ids are 0..{num - 1})")
    return array


def check_dtype(dtype):
    """np.float32 or np.float64 as an np.dtype; anything else raises ValueError."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as error:
        raise ValueError(f"dtype: expected float32 or float64, got {dtype!r}") from error
    if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype: expected float32 or float64, got {resolved}")
    return resolved






class Embedding(Module):
    """A (num_embeddings, embedding_dim) table looked up by integer ids.

    Args:
        num_embeddings: number of rows (ids 0 .. num_embeddings - 1).
        embedding_dim: width of a row.
        sparse: True -> `weight.grad` is a `RowSparseGrad` holding only the looked-up rows
            (duplicates summed); False -> a dense array of the table's shape.
        init_std: standard deviation of the N(0, init_std^2) initialisation (LightGCN: 0.1).
        rng: numpy Generator, int seed or None.
        dtype: np.float32 (default) or np.float64.
        initializer: optional callable `initializer(w, rng=Generator)` filling the float array
            `w` in place, e.g. `functools.partial(recgrad.init.xavier_normal_)`; it replaces the
            normal draw, so combining it with an init_std other than 0.1 raises ValueError.

    Shapes: forward(ids (*S)) -> (*S, embedding_dim); backward(grad (*S, embedding_dim)) -> None.
    """

    def __init__(
        self, num_embeddings, embedding_dim, sparse=True, init_std=0.1, rng=None, dtype=np.float32, initializer=None
    ):
        self.num_embeddings = positive_int(num_embeddings, "num_embeddings")
        self.embedding_dim = positive_int(embedding_dim, "embedding_dim")
        if not isinstance(sparse, (bool, np.bool_)):
            raise TypeError(f"sparse must be a bool, got {sparse!r}")
        self.sparse = bool(sparse)
        init_std = positive_float(init_std, "init_std")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, got {type(initializer).__name__}")
        if initializer is not None and init_std != 0.1:
            raise ValueError(
                "pass either initializer or init_std, not both: the initializer replaces the N(0, init_std^2) draw"
            )
        generator = as_generator(rng)
        table = np.empty((self.num_embeddings, self.embedding_dim), dtype=check_dtype(dtype))
        if initializer is None:
            normal_(table, 0.0, init_std, rng=generator)
        else:
            initializer(table, rng=generator)
        self.weight = Parameter(table)

    def forward(self, ids):
        """Gather rows: out[p] = weight[ids[p]]; ids of any shape, checked to lie in range."""
        ids = as_ids(ids, self.num_embeddings)
        self.cache = ids
        return self.weight.data[ids]

    def backward(self, grad_output):
        """Scatter-add grad_output into weight.grad (row-sparse or dense); the ids get no gradient.

        dL/dW[r] = sum_{p : ids[p] = r} grad_output[p]. Dense mode uses np.add.at, which, unlike
        `W[ids] += g`, adds every occurrence of a repeated id.
        """
        if self.cache is None:
            raise RuntimeError("Embedding.backward called without a preceding forward")
        ids = self.cache
        grad_output = np.asarray(grad_output, dtype=self.weight.data.dtype)
        expected = ids.shape + (self.embedding_dim,)
        if grad_output.shape != expected:
            raise ValueError(f"grad_output has shape {grad_output.shape}, expected {expected} (ids shape + (dim,))")
        flat_ids = ids.reshape(-1)
        flat_grad = grad_output.reshape(-1, self.embedding_dim)
        if self.sparse:
            self.weight.accumulate_grad(RowSparseGrad(flat_ids, flat_grad))
        else:
            dense = np.zeros_like(self.weight.data)
            np.add.at(dense, flat_ids, flat_grad)
            self.weight.accumulate_grad(dense)
        return None

    def __repr__(self):
        return (
            f"Embedding({self.num_embeddings}, {self.embedding_dim}, sparse={self.sparse}, "
            f"dtype={self.weight.data.dtype})"
        )
