"""Recommender losses as Modules: BPR, binary cross-entropy on logits, and InfoNCE.

Each loss is a `recgrad.nn.Module`. `forward(...)` returns the reduced loss (a 0-d NumPy scalar of
the input dtype for reduction "mean" or "sum") or the per-element loss (reduction "none").
`backward(grad_output=None)` returns the gradients of the differentiable inputs, in the order of
forward's arguments. For "mean" and "sum", `grad_output` is an optional scalar (default 1); for
"none" it is required and has the loss's shape, as in `loss.backward(gradient=...)` in PyTorch.

Every loss is computed from scores/logits with the stable primitives of `recgrad.activations`
(softplus, sigmoid, log_softmax), so it is finite for every finite input. Formulas, derivations and
the stable forms are in docs/formulas.md.
"""

import numbers

import numpy as np

from recgrad._arrays import as_float_array, check_same_shape
from recgrad.activations import log_softmax, sigmoid, softmax, softplus
from recgrad.nn.module import Module

_REDUCTIONS = ("mean", "sum", "none")

# The norm clamp of cosine similarity: x / max(|x|, eps), as torch.nn.functional.normalize (eps=1e-12).
_NORMALIZE_EPS = 1e-12


class _Loss(Module):
    """Shared reduction logic: validate `reduction`, reduce the per-element loss, and turn
    `grad_output` into the weight d(reduced loss)/d(loss element) that every backward multiplies in."""

    def __init__(self, reduction):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction

    def _reduce(self, elementwise):
        if self.reduction == "mean":
            return np.mean(elementwise)
        if self.reduction == "sum":
            return np.sum(elementwise)
        return elementwise

    def _element_weight(self, grad_output):
        """d(output)/d(element) times grad_output: a 0-d array for "mean"/"sum", an array for "none".

        mean: g / N (each of the N elements enters with weight 1/N); sum: g; none: grad_output itself.
        """
        if self.cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        shape, dtype = self.cache["loss_shape"], self.cache["dtype"]
        if self.reduction == "none":
            if grad_output is None:
                raise ValueError(f"grad_output: required for reduction='none' (an array of shape {shape})")
            grad_output = as_float_array(grad_output, "grad_output")
            if grad_output.shape != shape:
                raise ValueError(f"grad_output: expected shape {shape} (the loss's shape), got {grad_output.shape}")
            return grad_output.astype(dtype, copy=False)
        if grad_output is None:
            grad_output = 1.0
        grad_output = as_float_array(grad_output, "grad_output")
        if grad_output.ndim != 0:
            raise ValueError(
                f"grad_output: expected a scalar for reduction={self.reduction!r}, got shape {grad_output.shape}"
            )
        weight = grad_output.astype(dtype)
        if self.reduction == "mean":
            weight = weight / int(np.prod(shape))
        return weight


class BPRLoss(_Loss):
    """Bayesian Personalised Ranking loss: l = -log sigmoid(pos - neg) = softplus(neg - pos).

    Shapes: `pos_scores` (B,), `neg_scores` (B,) or (B, K); with (B, K) each positive is paired with
    its K negatives (pos broadcast as pos[:, None]). "none" returns the (B,) or (B, K) per-pair loss;
    "mean" averages over all B*K pairs; "sum" adds them.

    Stable form: softplus(d) = max(d, 0) + log1p(exp(-|d|)) with d = neg - pos, exact for every
    finite d (at d = 1e4 the loss is 1e4), unlike -log(1e-10 + sigmoid(-d)), which saturates at
    23.03 and has zero gradient for the worst-ranked pairs.

    Gradient: d softplus(d)/dd = sigmoid(d), so dl/dneg = sigmoid(neg - pos) and
    dl/dpos = -sigmoid(neg - pos), summed over K for the broadcast positive.

    Reference: Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009;
    torch.nn.functional.softplus(neg - pos).mean().
    """

    def __init__(self, reduction="mean"):
        super().__init__(reduction)

    def forward(self, pos_scores, neg_scores):
        pos = as_float_array(pos_scores, "pos_scores")
        neg = as_float_array(neg_scores, "neg_scores")
        if pos.ndim != 1:
            raise ValueError(f"pos_scores: expected shape (B,), got {pos.shape}")
        if neg.ndim not in (1, 2) or neg.shape[0] != pos.shape[0]:
            raise ValueError(
                f"neg_scores: expected shape ({pos.shape[0]},) or ({pos.shape[0]}, K) to match "
                f"pos_scores of shape {pos.shape}, got {neg.shape}"
            )
        dtype = np.result_type(pos, neg)
        diff = neg.astype(dtype, copy=False) - (pos if neg.ndim == 1 else pos[:, None]).astype(dtype, copy=False)
        elementwise = softplus(diff)
        self.cache = {
            "sig": sigmoid(diff),
            "loss_shape": diff.shape,
            "dtype": dtype,
            "input_dtypes": (pos.dtype, neg.dtype),
        }
        return self._reduce(elementwise)

    def backward(self, grad_output=None):
        """Returns (d_pos_scores (B,), d_neg_scores (B,) or (B, K))."""
        weight = self._element_weight(grad_output)
        d_neg = weight * self.cache["sig"]
        d_pos = -d_neg if d_neg.ndim == 1 else -np.sum(d_neg, axis=1)
        pos_dtype, neg_dtype = self.cache["input_dtypes"]
        return d_pos.astype(pos_dtype, copy=False), d_neg.astype(neg_dtype, copy=False)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy on logits, exactly torch.nn.BCEWithLogitsLoss (without `weight`).

    With logit x, label y in [0, 1] and positive-class weight p (1 when `pos_weight` is None):

        l = -[p y log sigmoid(x) + (1 - y) log sigmoid(-x)]
          = (1 - y) x + (1 + (p - 1) y) softplus(-x)          (log sigmoid(x) = -softplus(-x),
                                                                 softplus(x) = x + softplus(-x))

    The second form is what is computed: it is finite for every finite x (no log of a sigmoid that
    underflowed to 0). Gradient: with w = 1 + (p - 1) y and d softplus(-x)/dx = -sigmoid(-x),

        dl/dx = (1 - y) - w (1 - sigmoid(x)) = w sigmoid(x) - p y,

    which is sigmoid(x) - y when p = 1. Labels are not differentiated.

    Shapes: `logits` and `labels` any equal shape; `pos_weight` a scalar or an array broadcastable
    to the logits' shape, typically (C,) against logits (..., C) (one weight per class, broadcast
    over the last dimension as PyTorch does). "none" returns the per-element loss; "mean" averages
    over all elements.

    Reference: torch.nn.BCEWithLogitsLoss.
    """

    def __init__(self, pos_weight=None, reduction="mean"):
        super().__init__(reduction)
        self.pos_weight = None if pos_weight is None else as_float_array(pos_weight, "pos_weight")

    def forward(self, logits, labels):
        x = as_float_array(logits, "logits")
        y = as_float_array(labels, "labels").astype(x.dtype, copy=False)
        check_same_shape(x, y, "logits", "labels")
        if np.any((y < 0) | (y > 1)):
            raise ValueError("labels: every label must lie in [0, 1]")
        if self.pos_weight is None:
            p = 1.0
        else:
            try:
                broadcast = np.broadcast_shapes(self.pos_weight.shape, x.shape)
            except ValueError:
                broadcast = None
            if broadcast != x.shape:
                raise ValueError(
                    f"pos_weight: shape {self.pos_weight.shape} does not broadcast to the logits' shape {x.shape}"
                )
            p = self.pos_weight.astype(x.dtype, copy=False)
        w = 1.0 + (p - 1.0) * y
        elementwise = (1.0 - y) * x + w * softplus(-x)
        self.cache = {
            "sig": sigmoid(x),
            "w": w,
            "py": p * y,
            "loss_shape": x.shape,
            "dtype": x.dtype,
        }
        return self._reduce(elementwise)

    def backward(self, grad_output=None):
        """Returns d_logits (same shape as logits): weight * (w sigmoid(x) - p y)."""
        weight = self._element_weight(grad_output)
        c = self.cache
        return (weight * (c["w"] * c["sig"] - c["py"])).astype(c["dtype"], copy=False)


class InfoNCELoss(_Loss):
    """InfoNCE / sampled softmax: cross-entropy of the positive among [positive, negatives].

    For anchor a_b with similarity s(u, v) and temperature tau, the logits of row b are

        per-anchor negatives (B, K, D):  z_b = [s(a_b, p_b), s(a_b, n_b1), ..., s(a_b, n_bK)] / tau
        shared negatives (K, D):         z_b = [s(a_b, p_b), s(a_b, n_1),  ..., s(a_b, n_K)]  / tau
        in-batch (negatives=None):       z_b = [s(a_b, p_1), ..., s(a_b, p_B)] / tau, target b

    and l_b = -log_softmax(z_b)[target] = logsumexp(z_b) - z_b[target] (0 is the target except
    in-batch). With one negative, dot similarity and tau = 1, l_b = softplus(s_n - s_p): BPR.

    Similarity: "dot" s(u, v) = <u, v>; "cosine" s(u, v) = <u_hat, v_hat> with
    u_hat = u / max(|u|, 1e-12), as torch.nn.functional.normalize.

    Gradient: dl_b/dz_b = softmax(z_b) - onehot(target); chain through z = S / tau and the bilinear
    similarity (dS/da = the other vector). For cosine, d(u_hat)/du = (I - u_hat u_hat^T) / |u|, so
    du = (g - u_hat <u_hat, g>) / |u| (and g / 1e-12 where |u| <= 1e-12, the clamp being constant).

    Shapes: anchor (B, D), positive (B, D), negatives (B, K, D), (K, D) or None. "none" returns the
    (B,) per-anchor loss. backward returns (d_anchor, d_positive, d_negatives), or
    (d_anchor, d_positive) in-batch.

    Reference: van den Oord et al., "Representation Learning with Contrastive Predictive Coding",
    2018; torch.nn.functional.cross_entropy on the logits above.
    """

    def __init__(self, temperature=0.1, similarity="dot", reduction="mean"):
        super().__init__(reduction)
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
            raise TypeError(f"temperature: expected a real number, got {type(temperature).__name__}")
        if not 0.0 < float(temperature) < float("inf"):
            raise ValueError(f"temperature: must be positive and finite, got {temperature}")
        if similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity: expected 'dot' or 'cosine', got {similarity!r}")
        self.temperature = float(temperature)
        self.similarity = similarity

    def forward(self, anchor, positive, negatives=None):
        a = as_float_array(anchor, "anchor")
        p = as_float_array(positive, "positive")
        if a.ndim != 2:
            raise ValueError(f"anchor: expected shape (B, D), got {a.shape}")
        check_same_shape(a, p, "anchor", "positive")
        batch, dim = a.shape
        inputs = [a, p]
        if negatives is None:
            layout = "in-batch"
        else:
            n = as_float_array(negatives, "negatives")
            if n.ndim == 3 and n.shape[0] == batch and n.shape[2] == dim:
                layout = "per-anchor"
            elif n.ndim == 2 and n.shape[1] == dim:
                layout = "shared"
            else:
                raise ValueError(
                    f"negatives: expected shape ({batch}, K, {dim}) or (K, {dim}) to match anchor {a.shape}, "
                    f"got {n.shape}"
                )
            inputs.append(n)
        dtype = np.result_type(*inputs)
        vectors = [x.astype(dtype, copy=False) for x in inputs]
        if self.similarity == "cosine":
            normalized = [l2_normalize(x) for x in vectors]
            vectors = [unit for unit, _ in normalized]
            denominators = [denominator for _, denominator in normalized]
        else:
            denominators = None

        if layout == "in-batch":
            similarities = vectors[0] @ vectors[1].T  # (B, B): S[i, j] = s(a_i, p_j)
            target = np.arange(batch)
        else:
            pos_sim = np.einsum("bd,bd->b", vectors[0], vectors[1])
            if layout == "per-anchor":
                neg_sim = np.einsum("bd,bkd->bk", vectors[0], vectors[2])
            else:
                neg_sim = vectors[0] @ vectors[2].T
            similarities = np.concatenate([pos_sim[:, None], neg_sim], axis=1)  # (B, 1 + K)
            target = np.zeros(batch, dtype=np.int64)
        logits = similarities / self.temperature
        elementwise = -log_softmax(logits, axis=1)[np.arange(batch), target]
        self.cache = {
            "layout": layout,
            "vectors": vectors,
            "denominators": denominators,
            "probs": softmax(logits, axis=1),
            "target": target,
            "loss_shape": (batch,),
            "dtype": dtype,
            "input_dtypes": [x.dtype for x in inputs],
        }
        return self._reduce(elementwise)

    def backward(self, grad_output=None):
        """Returns (d_anchor, d_positive, d_negatives), or (d_anchor, d_positive) in-batch."""
        weight = self._element_weight(grad_output)
        c = self.cache
        batch = c["loss_shape"][0]
        d_logits = c["probs"].copy()
        d_logits[np.arange(batch), c["target"]] -= 1.0
        # dl/dS = (softmax - onehot) * weight / tau, one row per anchor
        d_sim = d_logits * (weight[:, None] if weight.ndim else weight) / self.temperature
        vectors = c["vectors"]
        a, p = vectors[0], vectors[1]
        if c["layout"] == "in-batch":
            grads = [d_sim @ p, d_sim.T @ a]
        else:
            d_pos, d_neg = d_sim[:, :1], d_sim[:, 1:]
            n = vectors[2]
            if c["layout"] == "per-anchor":
                d_a = d_pos * p + np.einsum("bk,bkd->bd", d_neg, n)
                d_n = d_neg[:, :, None] * a[:, None, :]
            else:
                d_a = d_pos * p + d_neg @ n
                d_n = d_neg.T @ a
            grads = [d_a, d_pos * a, d_n]
        if c["denominators"] is not None:
            grads = [
                l2_normalize_backward(grad, unit, denominator)
                for grad, unit, denominator in zip(grads, vectors, c["denominators"])
            ]
        return tuple(grad.astype(dtype, copy=False) for grad, dtype in zip(grads, c["input_dtypes"]))


def l2_normalize(x):
    """Rows scaled to unit length along the last axis: (x / max(|x|, eps), max(|x|, eps)).

    Same as torch.nn.functional.normalize(x, dim=-1) with its default eps = 1e-12.
    """
    denominator = np.maximum(np.sqrt(np.sum(x * x, axis=-1, keepdims=True)), _NORMALIZE_EPS)
    return x / denominator, denominator


def l2_normalize_backward(grad_unit, unit, denominator):
    """Vector-Jacobian product of x -> x / max(|x|, eps).

    Where |x| > eps: x_hat = x / |x| and d x_hat / dx = (I - x_hat x_hat^T) / |x|, so
    dx = (g - x_hat <x_hat, g>) / |x|. Where |x| <= eps the denominator is the constant eps and
    dx = g / eps (torch's clamp_min passes no gradient to the norm there).
    """
    radial = np.where(denominator > _NORMALIZE_EPS, np.sum(unit * grad_unit, axis=-1, keepdims=True), 0.0)
    return (grad_unit - unit * radial) / denominator
