"""Input coercion shared by every op: the one place that decides dtypes.

recgrad computes in the input's floating dtype: float32 stays float32 and float64 stays float64.
Integer and boolean input is promoted to float64 (PyTorch promotes to its default float, float32,
unless told otherwise; NumPy's own default float is float64 and we follow NumPy there).
"""

import numpy as np


def as_float_array(x, name="x"):
    """Return `x` as a floating ndarray without copying float32/float64 input.

    float16 is promoted to float32 (its range is too small for the stable forms used here);
    ints, bools and Python scalars become float64. Complex or object input raises TypeError
    naming the argument.
    """
    array = np.asarray(x)
    if array.dtype == np.float32 or array.dtype == np.float64:
        return array
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype.kind in "biu":
        return array.astype(np.float64)
    raise TypeError(f"{name}: expected a real numeric array, got dtype {array.dtype}")


def check_same_shape(a, b, name_a, name_b):
    """Raise ValueError naming both arguments when two arrays differ in shape."""
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; they must match")
