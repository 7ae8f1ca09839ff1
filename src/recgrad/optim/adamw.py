"""AdamW (Loshchilov and Hutter, 2019): Adam with decoupled weight decay, as `torch.optim.AdamW`."""

import math
from collections.abc import Iterable

from recgrad.engine import Engine
from recgrad.kernels import optim as optim_kernels
from recgrad.nn.module import Parameter
from recgrad.optim.adam import (
    adam_move,
    advance_adam_state,
    bias_corrections,
    check_adam_hyperparameters,
    reject_row_sparse,
)
from recgrad.optim.optimizer import Optimizer


class AdamW(Optimizer):
    r"""AdamW with PyTorch's defaults (weight_decay=1e-2) and arithmetic.

    For each parameter theta with gradient g at step t (eta = lr, lambda = weight_decay)::

        g <- -g                                   if maximize
        theta <- theta * (1 - eta * lambda)       decoupled decay, scaled by the learning rate
        m <- beta1 * m + (1 - beta1) * g
        v <- beta2 * v + (1 - beta2) * g^2
        v_max <- max(v_max, v)                    AMSGrad only (uncorrected v, as in `Adam`)
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)
        theta <- theta - eta * m_hat / (sqrt(v_hat) + eps)

    The decay is not part of the gradient, so it does not pass through m and v. The paper writes the
    decay with its own schedule multiplier and no lr (theta <- theta - eta_t * lambda * theta); PyTorch
    multiplies lambda by lr, and so do we: lambda = 1e-2 at lr = 1e-3 shrinks theta by 1e-5 per step.
    With weight_decay=0 this is exactly `Adam`.

    State per parameter: "step", "exp_avg" (m), "exp_avg_sq" (v), "max_exp_avg_sq" (AMSGrad).

    Args:
        params: iterable of Parameters or of param-group dicts.
        lr (1e-3), betas ((0.9, 0.999)), eps (1e-8), weight_decay (1e-2), amsgrad (False), maximize (False).
        engine (None): how to compute (`recgrad.engine`); by default the single-pass compiled step
            (`recgrad.kernels.optim.adam_step` with decay = 1 - lr * lambda, same numbers and state)
            for float32/float64 C-contiguous parameters, the NumPy reference for others.

    >>> import numpy as np
    >>> from recgrad.nn import Parameter
    >>> w = Parameter(np.array([2.0]))
    >>> opt = AdamW([w], lr=0.1, weight_decay=0.5)
    >>> w.grad = np.array([1.0]); opt.step(); np.round(w.data, 6)   # 2 * (1 - 0.05) - 0.1
    array([1.8])

    References: Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019; PyTorch
    documentation of `torch.optim.AdamW`.
    """

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 amsgrad: bool = False, maximize: bool = False, engine: Engine = None):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize}
        super().__init__(params, defaults, engine)

    def _check_hyperparameters(self, hyper):
        check_adam_hyperparameters(hyper)

    def _update(self, param, grad, state, group, compiled):
        reject_row_sparse(grad, "AdamW")
        lr, eps, weight_decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = (float(beta) for beta in group["betas"])
        theta = param.data
        m, v, v_max, t = advance_adam_state(theta, state, group)
        bias_correction1, bias_correction2 = bias_corrections(beta1, beta2, t)
        if compiled:
            optim_kernels.adam_step(
                theta, grad, m, v, v_max, beta1=beta1, beta2=beta2, eps=eps, step_size=lr / bias_correction1,
                sqrt_bias_correction2=math.sqrt(bias_correction2), decay=1.0 - lr * weight_decay,
                maximize=group["maximize"],
            )
            return

        g = -grad if group["maximize"] else grad
        if weight_decay != 0.0:
            theta *= 1.0 - lr * weight_decay  # decoupled: the decay never enters m and v
        adam_move(theta, g, m, v, v_max, lr, beta1, beta2, eps, bias_correction1, bias_correction2)
