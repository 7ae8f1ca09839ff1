"""Lazy Adam for embedding tables: only the rows in the gradient move (`torch.optim.SparseAdam`)."""

import math
from collections.abc import Iterable

import numpy as np

from recgrad.engine import Engine
from recgrad.kernels import optim as optim_kernels
from recgrad.nn.module import Parameter, RowSparseGrad
from recgrad.optim.adam import bias_corrections
from recgrad.optim.optimizer import Optimizer, check_betas, check_non_negative


class SparseAdam(Optimizer):
    r"""SparseAdam: Adam restricted to the rows present in a row-sparse gradient.

    With a `RowSparseGrad` (rows R, values g_R) at this parameter's step t (eta = lr, lambda =
    weight_decay)::

        g_R <- -g_R                                    if maximize
        m_R <- beta1 * m_R + (1 - beta1) * g_R         only the rows in R; other rows keep m and v
        v_R <- beta2 * v_R + (1 - beta2) * g_R^2
        theta_R <- theta_R * (1 - eta * lambda)        decoupled decay of the touched rows (recgrad)
        theta_R <- theta_R - eta * sqrt(1 - beta2^t) / (1 - beta1^t) * m_R / (sqrt(v_R) + eps)

    How it differs from dense Adam on the same gradients:
      * untouched rows do not move, and their m and v do not decay (dense Adam keeps moving a row on
        momentum and shrinks its v even when its gradient is zero); this is the "lazy" update;
      * t counts the steps of the *parameter* (every `step()` in which it had a gradient), not of the
        row, so a rarely seen row is bias-corrected as if it had been updated t times, as torch does;
      * eps is added to sqrt(v) before bias correction; dense Adam adds it to sqrt(v_hat). The update
        equals eta * m_hat / (sqrt(v_hat) + eps / sqrt(1 - beta2^t)).

    `weight_decay` is a recgrad addition (torch's SparseAdam has none): an AdamW-style decoupled decay
    of the touched rows only, theta_R <- theta_R * (1 - eta * lambda), before the Adam step. The default
    0 keeps exact parity with torch. A dense gradient raises TypeError (use Adam); as in torch, an
    empty RowSparseGrad still counts a step but moves nothing.

    Validation as torch's SparseAdam: lr > 0 and eps > 0 (strict), betas in [0, 1); weight_decay >= 0.
    State per parameter: "step" (int), "exp_avg" (m), "exp_avg_sq" (v), both of the full table shape.

    engine (default None, see `recgrad.engine`): by default a float32/float64 C-contiguous table is
    updated by `recgrad.kernels.optim.sparse_adam_step`, one compiled pass over the given rows only,
    in parallel over rows (the rows of a RowSparseGrad are unique, so no two threads touch one row);
    same numbers and state. Other tables, or engine="numpy", take the NumPy reference below.

    >>> import numpy as np
    >>> from recgrad.nn import Parameter, RowSparseGrad
    >>> table = Parameter(np.zeros((4, 2)))
    >>> opt = SparseAdam([table], lr=0.1)
    >>> table.grad = RowSparseGrad(np.array([2]), np.array([[1.0, -1.0]])); opt.step()
    >>> np.round(table.data, 6)
    array([[ 0. ,  0. ],
           [ 0. ,  0. ],
           [-0.1,  0.1],
           [ 0. ,  0. ]])

    Reference: PyTorch documentation of `torch.optim.SparseAdam` (and `torch.optim._functional.sparse_adam`).
    """

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 maximize: bool = False, engine: Engine = None):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "maximize": maximize}
        super().__init__(params, defaults, engine)

    def _check_hyperparameters(self, hyper):
        if not hyper["lr"] > 0.0:
            raise ValueError(f"lr: invalid learning rate {hyper['lr']!r}; SparseAdam needs lr > 0")
        if not hyper["eps"] > 0.0:
            raise ValueError(f"eps: invalid epsilon value {hyper['eps']!r}; SparseAdam needs eps > 0")
        check_betas(hyper["betas"])
        check_non_negative("weight_decay", hyper["weight_decay"], "weight_decay value")

    def _update(self, param, grad, state, group, compiled):
        if not isinstance(grad, RowSparseGrad):
            raise TypeError(
                "SparseAdam needs a row-sparse gradient (RowSparseGrad, e.g. from an embedding table); "
                "use Adam or AdamW for dense gradients"
            )
        lr, eps, weight_decay = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = (float(beta) for beta in group["betas"])
        theta = param.data
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(theta), exp_avg_sq=np.zeros_like(theta))
        state["step"] += 1
        t = state["step"]
        rows = grad.rows
        if rows.size == 0:
            return
        bias_correction1, bias_correction2 = bias_corrections(beta1, beta2, t)
        step_size = lr * math.sqrt(bias_correction2) / bias_correction1
        if compiled:
            optim_kernels.sparse_adam_step(
                theta, rows, grad.values, state["exp_avg"], state["exp_avg_sq"], beta1=beta1, beta2=beta2,
                eps=eps, step_size=step_size, decay=1.0 - lr * weight_decay, maximize=group["maximize"],
            )
            return

        g = np.asarray(grad.values, dtype=theta.dtype)
        if group["maximize"]:
            g = -g
        m_rows = state["exp_avg"][rows]
        v_rows = state["exp_avg_sq"][rows]
        m_rows += (1.0 - beta1) * (g - m_rows)  # = beta1 * m + (1 - beta1) * g on these rows
        v_rows += (1.0 - beta2) * (g * g - v_rows)  # = beta2 * v + (1 - beta2) * g^2
        state["exp_avg"][rows] = m_rows
        state["exp_avg_sq"][rows] = v_rows

        if weight_decay != 0.0:
            theta[rows] *= 1.0 - lr * weight_decay
        theta[rows] -= step_size * (m_rows / (np.sqrt(v_rows) + eps))
