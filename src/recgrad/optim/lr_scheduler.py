"""Learning-rate schedulers with PyTorch's names and semantics (`torch.optim.lr_scheduler`).

A scheduler rewrites each param group's "lr". On construction it records "initial_lr" in every group
(keeping one already there, as torch does), takes those values as `base_lrs`, and performs step 0.
Call `scheduler.step()` once per epoch (or iteration) *after* `optimizer.step()`.

Like PyTorch's `step()`, each scheduler here is *chainable*: it computes the next lr from the group's
current lr (a recursive form), so a change made to group["lr"] elsewhere carries through. Without such
changes the values equal the closed forms given in each docstring (to rounding), and they match torch's
values because they are computed by the same recursions.

To resume: build the optimizer and the scheduler, then load the optimizer's state dict (it carries
"lr" and "initial_lr"), then the scheduler's. Building a scheduler sets the group's lr for step 0, so
loading the optimizer state afterwards is what restores the saved lr.
"""

import math

from recgrad.optim.optimizer import Optimizer


class LRScheduler:
    """Base class: `step()`, `get_last_lr()`, `state_dict()`, `load_state_dict()`.

    A subclass defines `_next_lrs()`: the lrs for epoch `self.last_epoch` given the groups' current lrs.
    """

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected a recgrad Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def _current_lrs(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def _next_lrs(self):
        raise NotImplementedError(f"{type(self).__name__} must define _next_lrs")

    def step(self) -> None:
        """Advance one epoch and write the new lr into every param group."""
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self._next_lrs()):
            group["lr"] = lr
        self._last_lr = self._current_lrs()

    def get_last_lr(self) -> list[float]:
        """The lrs set by the last `step()` (one per param group)."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """Every attribute except the optimizer (as torch): hyper-parameters, base_lrs, last_epoch."""
        return {key: (list(value) if isinstance(value, list) else value)
                for key, value in vars(self).items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what `state_dict()` returned; an unknown or missing key raises KeyError."""
        expected = set(vars(self)) - {"optimizer"}
        if set(state_dict) != expected:
            raise KeyError(
                f"load_state_dict: expected keys {sorted(expected)}, got {sorted(state_dict)}"
            )
        for key, value in state_dict.items():
            setattr(self, key, list(value) if isinstance(value, list) else value)


class StepLR(LRScheduler):
    """Multiply the lr by gamma every `step_size` epochs: lr_e = base_lr * gamma^floor(e / step_size).

    Recursive form (torch's): at epochs e > 0 with e % step_size == 0, lr <- lr * gamma; else unchanged.
    `step_size` must be a positive int; gamma defaults to 0.1.

    >>> import numpy as np
    >>> from recgrad.nn import Parameter
    >>> from recgrad.optim import SGD
    >>> opt = SGD([Parameter(np.zeros(1))], lr=0.1)
    >>> scheduler = StepLR(opt, step_size=2, gamma=0.5)
    >>> lrs = []
    >>> for epoch in range(5):
    ...     opt.step()          # the epoch's training steps come first
    ...     scheduler.step()
    ...     lrs.append(scheduler.get_last_lr()[0])
    >>> lrs
    [0.1, 0.05, 0.05, 0.025, 0.025]
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size: expected a positive int, got {step_size!r}")
        self.step_size = step_size
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def _next_lrs(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]


class ExponentialLR(LRScheduler):
    """Multiply the lr by gamma every epoch: lr_e = base_lr * gamma^e (recursively lr <- lr * gamma)."""

    def __init__(self, optimizer: Optimizer, gamma: float):
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def _next_lrs(self):
        if self.last_epoch == 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from base_lr to eta_min over T_max epochs (SGDR without restarts).

    Closed form: lr_e = eta_min + (base_lr - eta_min) * (1 + cos(pi * e / T_max)) / 2.

    Torch (and we) step it recursively:
        lr_e = eta_min + (lr_{e-1} - eta_min) * (1 + cos(pi e / T_max)) / (1 + cos(pi (e-1) / T_max)),
    except where the denominator vanishes ((e - 1 - T_max) divisible by 2 T_max, i.e. just after the
    minimum), where it adds (base_lr - eta_min) * (1 - cos(pi / T_max)) / 2 instead. Past T_max the lr
    rises again along the cosine (period 2 T_max), as torch's does.

    Reference: Loshchilov and Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        if not T_max > 0:
            raise ValueError(f"T_max: expected a positive number of epochs, got {T_max!r}")
        self.T_max = T_max
        self.eta_min = float(eta_min)
        super().__init__(optimizer)

    def _next_lrs(self):
        e, T_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        if e == 0:
            return self._current_lrs()
        if (e - 1 - T_max) % (2 * T_max) == 0:
            return [lr + (base_lr - eta_min) * (1 - math.cos(math.pi / T_max)) / 2
                    for lr, base_lr in zip(self._current_lrs(), self.base_lrs)]
        ratio = (1 + math.cos(math.pi * e / T_max)) / (1 + math.cos(math.pi * (e - 1) / T_max))
        return [ratio * (lr - eta_min) + eta_min for lr in self._current_lrs()]


class LinearLR(LRScheduler):
    r"""Linear warm-up (or decay) of a multiplicative factor from start_factor to end_factor.

    Closed form: lr_e = base_lr * (start_factor + (end_factor - start_factor) * min(e, total_iters) / total_iters).

    Torch (and we) step it recursively: lr_0 = base_lr * start_factor; for 1 <= e <= total_iters,
        lr_e = lr_{e-1} * (1 + (end - start) / (total_iters * start + (e - 1) * (end - start)));
    after total_iters the lr is left unchanged. start_factor in (0, 1], end_factor in [0, 1] (torch's checks).
    """

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5):
        if not 0.0 < start_factor <= 1.0:
            raise ValueError(f"start_factor: expected a value in (0, 1], got {start_factor!r}")
        if not 0.0 <= end_factor <= 1.0:
            raise ValueError(f"end_factor: expected a value in [0, 1], got {end_factor!r}")
        if isinstance(total_iters, bool) or not isinstance(total_iters, int) or total_iters < 0:
            raise ValueError(f"total_iters: expected a non-negative int, got {total_iters!r}")
        self.start_factor = float(start_factor)
        self.end_factor = float(end_factor)
        self.total_iters = total_iters
        super().__init__(optimizer)

    def _next_lrs(self):
        e, start, end = self.last_epoch, self.start_factor, self.end_factor
        if e == 0:
            return [lr * start for lr in self._current_lrs()]
        if e > self.total_iters:
            return self._current_lrs()
        factor = 1.0 + (end - start) / (self.total_iters * start + (e - 1) * (end - start))
        return [lr * factor for lr in self._current_lrs()]
