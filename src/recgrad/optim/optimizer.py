"""The Optimizer base class: PyTorch's front (param_groups, state, step, zero_grad, state_dict).

An optimizer holds a list of *parameter groups*. Each group is a dict with the key "params" (a list
of `recgrad.nn.Parameter`) and one entry per hyper-parameter ("lr", "momentum", ...); a value missing
from a group dict is filled from the optimizer's defaults, exactly as `torch.optim.Optimizer` does.
Every parameter gets an integer index, its position in the concatenation of all groups' "params".

`state[index]` is a dict of plain NumPy arrays plus, for the Adam family, an int "step" count. The
hyper-parameters never live in the state, so `state_dict()` is

    {"state": {index: {name: array or int}},
     "param_groups": [{"lr": ..., ..., "params": [index, ...]}, ...]}

the same layout as PyTorch's, and `load_state_dict()` of it into a freshly built optimizer over the
same parameters continues training bit for bit.

A subclass validates its hyper-parameters in `_check_hyperparameters(group)` (called for the defaults
and for every group) and updates one parameter in `_update(param, grad, state, group, compiled)`, on
the compiled kernel when `compiled` is True, else the NumPy reference; parameters whose `.grad` is
None are skipped, as in PyTorch.

`engine` (every optimizer's last argument; see `recgrad.engine`): by default (None, "auto") a
parameter whose data is a writeable C-contiguous float32/float64 array is updated by the compiled
single-pass kernel of `recgrad.kernels.optim`, which computes the reference's numbers (bit for bit in
tests/test_kernels_optim.py) with one read and one write of each array; any other parameter takes the
readable NumPy step, the reference. engine="numpy" (or `recgrad.engine.set_default_engine("numpy")`,
or RECGRAD_ENGINE=numpy) runs the reference everywhere; engine="compiled" prints a one-line notice
for a parameter the kernels do not cover, then runs the reference. The choice is made at each step,
per parameter, so a parameter whose data is replaced later is still handled.

How this departs from PyTorch: torch's optimizers take `foreach` and `fused` flags and default to
the slower per-tensor loop; here the single-pass step is the default, so there is no speed flag to
pass, and `engine` only chooses between two computations of the same numbers. The engine is a choice
of how to compute, not a hyper-parameter: it is not in the param groups, a state dict saved with one
engine loads into an optimizer with the other, and a "fused" entry in an older checkpoint's groups
is ignored.
"""

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from recgrad.engine import Engine, check_engine, use_compiled
from recgrad.kernels.optim import uncovered_reason
from recgrad.nn.module import Parameter, RowSparseGrad


class Optimizer:
    """Base class. `params` is an iterable of Parameters or of param-group dicts.

    >>> import numpy as np
    >>> from recgrad.nn import Parameter
    >>> from recgrad.optim import SGD
    >>> w, b = Parameter(np.ones(3)), Parameter(np.zeros(1))
    >>> opt = SGD([{"params": [w]}, {"params": [b], "lr": 0.5}], lr=0.1)
    >>> [group["lr"] for group in opt.param_groups]
    [0.1, 0.5]
    """

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], defaults: dict, engine: Engine = None):
        self.engine = check_engine(engine)
        self._check_hyperparameters(defaults)
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}
        self._params = []
        if isinstance(params, (Parameter, np.ndarray)):
            raise TypeError(
                "params: expected an iterable of Parameters or of param-group dicts, "
                f"got a single {type(params).__name__}"
            )
        groups = list(params)
        if not groups:
            raise ValueError("params: the optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def _check_hyperparameters(self, hyper):
        """Raise ValueError naming an invalid hyper-parameter. Overridden by each algorithm."""

    def add_param_group(self, param_group: dict) -> None:
        """Append a group dict; hyper-parameters it does not set are taken from the defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group: expected a dict, got {type(param_group).__name__}")
        params = param_group.get("params")
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("param_group['params']: a set has no order; pass a list of Parameters")
        params = list(params) if params is not None else []
        if not params:
            raise ValueError("param_group['params']: the group has no parameters")
        for param in params:
            if not isinstance(param, Parameter):
                raise TypeError(f"param_group['params']: expected Parameters, got {type(param).__name__}")
        known = {id(p) for p in self._params}
        if len({id(p) for p in params}) != len(params) or any(id(p) in known for p in params):
            raise ValueError("params: some parameters appear more than once (in a group or in two groups)")
        group = {**self.defaults, **param_group, "params": params}
        self._check_hyperparameters(group)
        self.param_groups.append(group)
        self._params.extend(params)

    def zero_grad(self) -> None:
        """Set every parameter's `.grad` to None (PyTorch's default `set_to_none=True`)."""
        for param in self._params:
            param.grad = None

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; return `closure()` if one is given.

        `closure` (optional) recomputes the loss and the gradients before the update, as in PyTorch.
        """
        loss = closure() if closure is not None else None
        index = 0
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, param.grad, self.state.setdefault(index, {}), group,
                                 self._compiled(param.data, param.grad))
                index += 1
        return loss

    def _compiled(self, theta, grad):
        """Whether this step of the parameter `theta` runs the compiled kernel (see the module doc)."""
        reason = uncovered_reason(theta)
        if reason is None:
            if isinstance(grad, RowSparseGrad):
                shape, expected = np.shape(grad.values), (grad.rows.size,) + theta.shape[1:]
            else:
                shape, expected = np.shape(grad), theta.shape
            if shape != expected:  # the reference broadcasts it, the kernels refuse it
                reason = f"a gradient of shape {shape} for a parameter of shape {theta.shape}"
        return use_compiled(self.engine, reason is None, f"{type(self).__name__} on {reason}")

    def _update(self, param, grad, state, group, compiled):
        """Update one parameter: the compiled kernel if `compiled`, else the NumPy reference."""
        raise NotImplementedError(f"{type(self).__name__} must define _update")

    def state_dict(self) -> dict:
        """PyTorch's layout: {"state": {index: {name: array}}, "param_groups": [... "params": [index]]}.

        Arrays are copies, so later steps do not change a saved state dict.
        """
        state = {
            index: {name: _copy(value) for name, value in entry.items()}
            for index, entry in self.state.items()
            if entry
        }
        groups, start = [], 0
        for group in self.param_groups:
            saved = {key: value for key, value in group.items() if key != "params"}
            saved["params"] = list(range(start, start + len(group["params"])))
            start += len(group["params"])
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyper-parameters and state saved by `state_dict()` from an optimizer over the same
        parameters (same groups, same sizes, same order). Arrays are copied and cast to the
        parameter's dtype; a mismatch raises ValueError. The engine is this optimizer's own."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"load_state_dict: {len(saved_groups)} parameter groups saved, "
                f"this optimizer has {len(self.param_groups)}"
            )
        for number, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"load_state_dict: group {number} saved {len(saved['params'])} parameters, "
                    f"this optimizer's group has {len(group['params'])}"
                )
        saved_order = [index for saved in saved_groups for index in saved["params"]]
        position_of = {int(saved_index): position for position, saved_index in enumerate(saved_order)}
        new_state = {}
        for saved_index, entry in state_dict["state"].items():
            position = position_of[int(saved_index)]
            param = self._params[position]
            new_state[position] = {name: _restore(name, value, param) for name, value in entry.items()}
        new_groups = []
        for saved, group in zip(saved_groups, self.param_groups):
            # "fused": a flag that checkpoints written before `engine` existed hold; not a hyper-parameter
            hyper = {key: value for key, value in saved.items() if key not in ("params", "fused")}
            self._check_hyperparameters(hyper)
            new_groups.append({**hyper, "params": group["params"]})
        self.param_groups = new_groups
        self.state = new_state


def _copy(value):
    return value.copy() if isinstance(value, np.ndarray) else value


def _restore(name, value, param):
    if name == "step":
        return int(value)
    array = np.array(value, dtype=param.data.dtype, copy=True)
    if array.shape != param.data.shape:
        raise ValueError(
            f"load_state_dict: state {name!r} has shape {array.shape}, the parameter has {param.data.shape}"
        )
    return array


def check_non_negative(name, value, what):
    """Raise ValueError naming `name` unless value >= 0 (as PyTorch's `Invalid ... value`)."""
    if not value >= 0.0:
        raise ValueError(f"{name}: invalid {what} {value!r}; it must be >= 0")


def check_betas(betas):
    """Raise ValueError unless betas is a pair with each entry in [0, 1)."""
    if len(betas) != 2:
        raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
    for position, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"betas: invalid beta parameter at index {position}: {beta!r}; it must be in [0, 1)")
