"""Stochastic gradient descent with PyTorch's momentum, dampening, Nesterov and weight decay."""

from collections.abc import Iterable

import numpy as np

from recgrad.engine import Engine
from recgrad.kernels import optim as optim_kernels
from recgrad.nn.module import Parameter, RowSparseGrad
from recgrad.optim.optimizer import Optimizer, check_non_negative


class SGD(Optimizer):
    r"""SGD as `torch.optim.SGD` computes it.

    For each parameter theta with gradient g (learning rate eta = lr, momentum mu, dampening tau,
    weight decay lambda)::

        g <- -g                      if maximize   (the loss gradient only; decay still shrinks theta)
        g <- g + lambda * theta      if weight_decay != 0   (L2 added to the gradient)
        b <- g                       on the first step with momentum
        b <- mu * b + (1 - tau) * g  on later steps
        g <- g + mu * b  if nesterov, else  g <- b
        theta <- theta - eta * g

    PyTorch's momentum buffer is not the textbook exponential moving average: with tau = 0 the
    gradient enters with weight 1 (b is a sum, so the effective step is eta / (1 - mu) at steady
    state). The EMA form b = beta * b + (1 - beta) * g is `dampening=momentum` (except the first step,
    where PyTorch sets b = g, not (1 - beta) * g).

    Row-sparse gradients (`RowSparseGrad`, an embedding table's gradient) are supported without
    momentum and weight decay: only the rows present move, theta[rows] -= eta * values, which equals
    the dense update with zeros elsewhere. Momentum or weight decay touch every row, so they raise
    ValueError there (use `SparseAdam` for lazy updates, or `grad.to_dense(shape)` for a dense step).

    Args:
        params: iterable of Parameters or of param-group dicts.
        lr: learning rate eta (default 1e-3), momentum (default 0), dampening (default 0),
        weight_decay: L2 coefficient (default 0), nesterov (default False), maximize (default False).
        engine (None): how to compute (`recgrad.engine`); by default the single-pass compiled step
            (`recgrad.kernels.optim.sgd_step`, or `sparse_sgd_step` for a RowSparseGrad, parallel over
            its rows; same numbers and state) for float32/float64 C-contiguous parameters, the NumPy
            reference for others (see `Optimizer`).

    >>> import numpy as np
    >>> from recgrad.nn import Parameter
    >>> w = Parameter(np.array([1.0, -2.0]))
    >>> opt = SGD([w], lr=0.1, momentum=0.9)
    >>> w.grad = np.array([1.0, 1.0]); opt.step(); w.data
    array([ 0.9, -2.1])

    Reference: PyTorch documentation of `torch.optim.SGD`; Sutskever et al. (2013) for Nesterov.
    """

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False,
                 engine: Engine = None):
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                    "nesterov": nesterov, "maximize": maximize}
        super().__init__(params, defaults, engine)

    def _check_hyperparameters(self, hyper):
        check_non_negative("lr", hyper["lr"], "learning rate")
        check_non_negative("momentum", hyper["momentum"], "momentum value")
        check_non_negative("weight_decay", hyper["weight_decay"], "weight_decay value")
        if hyper["nesterov"] and (hyper["momentum"] <= 0 or hyper["dampening"] != 0):
            raise ValueError("nesterov: Nesterov momentum requires a momentum > 0 and zero dampening")

    def _update(self, param, grad, state, group, compiled):
        lr = float(group["lr"])
        momentum = float(group["momentum"])
        dampening = float(group["dampening"])
        weight_decay = float(group["weight_decay"])
        theta = param.data

        if isinstance(grad, RowSparseGrad):
            if momentum != 0.0 or weight_decay != 0.0:
                raise ValueError(
                    "SGD with a row-sparse gradient (RowSparseGrad) supports only momentum=0 and "
                    f"weight_decay=0 (got momentum={momentum}, weight_decay={weight_decay}): both touch every "
                    "row. Use SparseAdam for lazy updates or pass grad.to_dense(shape) for a dense step."
                )
            if compiled:
                optim_kernels.sparse_sgd_step(theta, grad.rows, grad.values, lr=lr, maximize=group["maximize"])
                return
            values = np.asarray(grad.values, dtype=theta.dtype)
            if group["maximize"]:
                values = -values
            theta[grad.rows] -= lr * values
            return

        if compiled:
            first_step = momentum != 0.0 and "momentum_buffer" not in state
            if first_step:
                state["momentum_buffer"] = np.zeros_like(theta)  # the kernel writes b = g into it
            optim_kernels.sgd_step(
                theta, grad, state["momentum_buffer"] if momentum != 0.0 else None, lr=lr, momentum=momentum,
                dampening=dampening, weight_decay=weight_decay, nesterov=group["nesterov"],
                maximize=group["maximize"], first_step=first_step,
            )
            return

        g = -grad if group["maximize"] else grad
        if weight_decay != 0.0:
            g = g + weight_decay * theta
        if momentum != 0.0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= momentum
                buf += (1.0 - dampening) * g
            buf = state["momentum_buffer"]
            g = g + momentum * buf if group["nesterov"] else buf
        theta -= lr * g
