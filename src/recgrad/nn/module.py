"""Parameters and the Module base class: the forward/backward pattern every layer follows.

A Module computes `forward(*inputs)`, keeps in `self.cache` exactly what its derivative needs,
and `backward(grad_output)` returns the gradient of the inputs while *accumulating* (adding)
the gradient of each Parameter into `Parameter.grad`, as PyTorch's autograd does. Call
`zero_grad()` between steps.

There is no autograd tape: a Sequential calls its children's backward in reverse order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from recgrad._arrays import as_float_array


class Parameter:
    """A trainable array: `.data` (the value) and `.grad` (None until a gradient is accumulated)."""

    def __init__(self, data: ArrayLike):
        self.data = as_float_array(data, "data")
        self.grad = None

    def accumulate_grad(self, grad: ArrayLike | RowSparseGrad) -> None:
        """Add `grad` into `.grad` (creating it on first use), as PyTorch accumulates."""
        if isinstance(grad, RowSparseGrad):
            self.grad = grad if self.grad is None else self.grad + grad
            return
        grad = np.asarray(grad, dtype=self.data.dtype)
        if grad.shape != self.data.shape:
            raise ValueError(f"gradient of shape {grad.shape} for a parameter of shape {self.data.shape}")
        if self.grad is None:
            self.grad = grad.copy()
        else:
            self.grad += grad

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class. Subclasses define `forward(*inputs)` and `backward(grad_output)`.

    Parameters and child modules are found among the instance attributes, in the order they were
    assigned, and named as PyTorch names them ("weight", "0.weight", "tower.2.bias").
    """

    cache = None

    def forward(self, *inputs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward")

    def backward(self, grad_output: np.ndarray) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define backward")

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        return self.forward(*inputs, **kwargs)

    def children(self) -> list[tuple[str, Module]]:
        """(name, Module) pairs of the direct sub-modules, in assignment order."""
        return [(name, value) for name, value in vars(self).items() if isinstance(value, Module)]

    def named_parameters(self, prefix: str = "") -> list[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs of this module and all sub-modules, in order."""
        named = []
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                named.append((prefix + name, value))
            elif isinstance(value, Module):
                named.extend(value.named_parameters(prefix + name + "."))
        return named

    def parameters(self) -> list[Parameter]:
        """The list of Parameters, in the order `named_parameters` gives."""
        return [parameter for _, parameter in self.named_parameters()]

    def zero_grad(self) -> None:
        """Reset every parameter's gradient to None (PyTorch's default `set_to_none=True`)."""
        for parameter in self.parameters():
            parameter.grad = None

    def state_dict(self) -> dict[str, np.ndarray]:
        """A dict of dotted name -> copy of the parameter array (saveable with `np.savez`)."""
        return {name: parameter.data.copy() for name, parameter in self.named_parameters()}

    def load_state_dict(self, state_dict: dict[str, ArrayLike]) -> None:
        """Copy arrays into the parameters; missing, unexpected or mis-shaped entries raise KeyError/ValueError."""
        named = dict(self.named_parameters())
        missing = sorted(set(named) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(named))
        if missing or unexpected:
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, parameter in named.items():
            value = np.asarray(state_dict[name])
            if value.shape != parameter.data.shape:
                raise ValueError(
                    f"load_state_dict: {name} has shape {value.shape}, expected {parameter.data.shape}"
                )
            parameter.data = value.astype(parameter.data.dtype, copy=True)


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse. Children are named "0", "1", ..."""

    def __init__(self, *modules: Module):
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: argument {index} is {type(module).__name__}, not a Module")
            setattr(self, str(index), module)

    def __len__(self):
        return len(self.children())

    def __getitem__(self, index):
        return self.children()[index][1]

    def forward(self, x: ArrayLike) -> np.ndarray:
        for _, module in self.children():
            x = module(x)
        return x

    def backward(self, grad_output: ArrayLike) -> np.ndarray:
        for _, module in reversed(self.children()):
            grad_output = module.backward(grad_output)
        return grad_output


class RowSparseGrad:
    """The gradient of an embedding table that touched only some rows (PyTorch's sparse grad).

    `rows` are unique row indices (int64, sorted) and `values[k]` is the gradient of row
    `rows[k]`; every other row's gradient is zero. Accumulating another RowSparseGrad merges
    rows. `to_dense(shape)` gives the full array. Optimizers that support it (SGD, SparseAdam)
    update only these rows.
    """

    def __init__(self, rows: ArrayLike, values: np.ndarray):
        rows = np.asarray(rows, dtype=np.int64)
        unique_rows, inverse = np.unique(rows, return_inverse=True)
        merged = np.zeros((unique_rows.size,) + values.shape[1:], dtype=values.dtype)
        np.add.at(merged, inverse, values)
        self.rows = unique_rows
        self.values = merged

    def to_dense(self, shape: tuple[int, ...]) -> np.ndarray:
        dense = np.zeros(shape, dtype=self.values.dtype)
        dense[self.rows] = self.values
        return dense

    def __add__(self, other: RowSparseGrad) -> RowSparseGrad:
        return RowSparseGrad(
            np.concatenate([self.rows, other.rows]), np.concatenate([self.values, other.values])
        )
