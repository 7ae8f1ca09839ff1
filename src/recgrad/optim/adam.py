"""Adam (Kingma and Ba, 2015) with L2 weight decay and AMSGrad, as `torch.optim.Adam` computes it."""

import math
from collections.abc import Iterable

import numpy as np

from recgrad.engine import Engine
from recgrad.kernels import optim as optim_kernels
from recgrad.nn.module import Parameter, RowSparseGrad
from recgrad.optim.optimizer import Optimizer, check_betas, check_non_negative


def advance_adam_state(theta, state, group):
    """Create the moments on the first step, count the step; returns (m, v, v_max or None, t)."""
    if not state:
        state.update(step=0, exp_avg=np.zeros_like(theta), exp_avg_sq=np.zeros_like(theta))
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = np.zeros_like(theta)
    state["step"] += 1
    return state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"), state["step"]


def adam_move(theta, g, m, v, v_max, lr, beta1, beta2, eps, bias_correction1, bias_correction2):
    """The step Adam and AdamW share (optax's scale_by_adam then scale by -lr), in place:

        m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2;  v_max <- max(v_max, v)
        theta <- theta - eta * m_hat / (sqrt(v_hat) + eps)
    """
    m += (1.0 - beta1) * (g - m)  # = beta1 * m + (1 - beta1) * g, the form torch's lerp uses
    v *= beta2
    v += (1.0 - beta2) * g * g
    if v_max is not None:
        np.maximum(v_max, v, out=v_max)
        v = v_max
    denom = np.sqrt(v) / math.sqrt(bias_correction2) + eps  # sqrt(v_hat) + eps
    theta -= (lr / bias_correction1) * (m / denom)  # eta * m_hat / (sqrt(v_hat) + eps)


def bias_corrections(beta1, beta2, t):
    """(1 - beta1^t, 1 - beta2^t): the factors that unbias m and v after t steps from zero."""
    return 1.0 - beta1**t, 1.0 - beta2**t


def check_adam_hyperparameters(hyper):
    """The checks torch's Adam and AdamW make: lr >= 0, eps >= 0, betas in [0, 1), weight_decay >= 0."""
    check_non_negative("lr", hyper["lr"], "learning rate")
    check_non_negative("eps", hyper["eps"], "epsilon value")
    check_betas(hyper["betas"])
    check_non_negative("weight_decay", hyper["weight_decay"], "weight_decay value")


def reject_row_sparse(grad, name):
    """Dense Adam/AdamW update every row, so a row-sparse gradient is refused (as PyTorch does)."""
    if isinstance(grad, RowSparseGrad):
        raise TypeError(
            f"{name} does not support row-sparse gradients (RowSparseGrad); use SparseAdam for lazy "
            "updates of the rows present, or pass grad.to_dense(shape) for the dense algorithm"
        )


class Adam(Optimizer):
    r"""Adam with PyTorch's defaults and arithmetic.

    For each parameter theta with gradient g at step t = 1, 2, ... (eta = lr, lambda = weight_decay)::

        g <- -g                                   if maximize
        g <- g + lambda * theta                   L2 added to the gradient (not AdamW's decay)
        m <- beta1 * m + (1 - beta1) * g          first moment
        v <- beta2 * v + (1 - beta2) * g^2        second moment (uncorrected)
        v_max <- max(v_max, v)                    AMSGrad only: running max of the *uncorrected* v
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)   (v_max / (1 - beta2^t) with AMSGrad)
        theta <- theta - eta * m_hat / (sqrt(v_hat) + eps)

    eps is added to sqrt(v_hat), after bias correction (the paper's placement); PyTorch evaluates it
    as denom = sqrt(v) / sqrt(1 - beta2^t) + eps and step = (eta / (1 - beta1^t)) * m / denom, and
    so do we. AMSGrad as in PyTorch's code: the max is taken over the uncorrected v, then divided by
    the current step's bias correction (Reddi et al. take the max of v with no bias correction).

    State per parameter: "step" (int), "exp_avg" (m), "exp_avg_sq" (v), "max_exp_avg_sq" (AMSGrad).
    A RowSparseGrad raises TypeError pointing to SparseAdam, as torch's Adam does for sparse grads.

    Args:
        params: iterable of Parameters or of param-group dicts.
        lr (1e-3), betas ((0.9, 0.999)), eps (1e-8), weight_decay (0), amsgrad (False), maximize (False).
        engine (None): how to compute (`recgrad.engine`); by default the single-pass compiled step
            (`recgrad.kernels.optim.adam_step`, same numbers and state) for float32/float64
            C-contiguous parameters, the NumPy reference for others (see `Optimizer`).

    >>> import numpy as np
    >>> from recgrad.nn import Parameter
    >>> w = Parameter(np.array([1.0, 1.0]))
    >>> opt = Adam([w], lr=0.1)
    >>> w.grad = np.array([3.0, -0.5]); opt.step(); np.round(w.data, 6)   # first step ~ -lr*sign(g)
    array([0.9, 1.1])

    References: Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015; Reddi et al.,
    "On the Convergence of Adam and Beyond", ICLR 2018; PyTorch documentation of `torch.optim.Adam`.
    """

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False, maximize: bool = False, engine: Engine = None):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize}
        super().__init__(params, defaults, engine)

    def _check_hyperparameters(self, hyper):
        check_adam_hyperparameters(hyper)

    def _update(self, param, grad, state, group, compiled):
        reject_row_sparse(grad, "Adam")
        lr, eps, weight_decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = (float(beta) for beta in group["betas"])
        theta = param.data
        m, v, v_max, t = advance_adam_state(theta, state, group)
        bias_correction1, bias_correction2 = bias_corrections(beta1, beta2, t)
        if compiled:
            optim_kernels.adam_step(
                theta, grad, m, v, v_max, beta1=beta1, beta2=beta2, eps=eps, step_size=lr / bias_correction1,
                sqrt_bias_correction2=math.sqrt(bias_correction2), weight_decay=weight_decay,
                maximize=group["maximize"],
            )
            return

        g = -grad if group["maximize"] else grad
        if weight_decay != 0.0:
            g = g + weight_decay * theta  # L2 in the gradient: it passes through m and v
        adam_move(theta, g, m, v, v_max, lr, beta1, beta2, eps, bias_correction1, bias_correction2)
