"""Checks of scalar arguments shared across recgrad: a bad value is a ValueError naming the argument.

Bools are refused wherever a number is expected (True is an int in Python, never a meaningful
size or rate). Each check returns the value as a plain Python int or float, so hyper-parameters
never carry a NumPy dtype into float32 arithmetic.
"""

import math

import numpy as np

_INTS = (int, np.integer)
_NUMBERS = (int, float, np.integer, np.floating)


def positive_int(value, name):
    """An int >= 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, _INTS) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def non_negative_int(value, name):
    """An int >= 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, _INTS) or value < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    return int(value)


def positive_float(value, name):
    """A finite number > 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, _NUMBERS) \
            or not math.isfinite(float(value)) or float(value) <= 0.0:
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return float(value)


def non_negative_float(value, name):
    """A finite number >= 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, _NUMBERS) \
            or not math.isfinite(float(value)) or float(value) < 0.0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def boolean(value, name):
    """A bool (Python or NumPy); TypeError for anything else (a 0/1 int or a string is not a flag)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {value!r}")
    return bool(value)
