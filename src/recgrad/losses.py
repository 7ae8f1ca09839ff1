"""Losses as Modules: the recommender losses (BPR, binary cross-entropy on logits, InfoNCE, the
cosine contrastive loss) and
the classification losses a PyTorch user expects (CrossEntropyLoss, NLLLoss, MSELoss).

Each loss is a `recgrad.nn.Module`. `forward(...)` returns the reduced loss (a 0-d NumPy scalar of
the input dtype for reduction "mean" or "sum") or the per-element loss (reduction "none").
`backward(grad_output=None)` returns the gradients of the differentiable inputs, in the order of
forward's arguments (only the first, the prediction, for the classification losses: targets
are not differentiated). For "mean" and "sum", `grad_output` is an optional scalar (default 1); for
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
            # A loss whose mean is not over its elements (CrossEntropyLoss's weighted mean) caches
            # its divisor; a divisor of 0 gives inf here and a NaN loss, as in torch.
            divisor = self.cache.get("mean_divisor", int(np.prod(shape)))
            with np.errstate(divide="ignore", invalid="ignore"):
                weight = weight / divisor
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
        a, p = _anchor_and_positive(anchor, positive)
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


class CosineContrastiveLoss(_Loss):
    """The cosine contrastive loss (CCL) of SimpleX: pull the positive's cosine to 1, push every
    negative's cosine below a margin.

    For anchor a_b, positive p_b and K negatives n_bk, with cosines c_b0 = cos(a_b, p_b) and
    c_bk = cos(a_b, n_bk) (cos(u, v) = <u_hat, v_hat>, u_hat = u / max(|u|, 1e-12)),

        l_b = (1 - c_b0) + w / K * sum_k max(0, c_bk - m)

    margin m, negative weight w (SimpleX writes w * mean_k; w = K is its plain sum over negatives).

    Gradient w.r.t. the cosines: dl_b/dc_b0 = -1, dl_b/dc_bk = w / K * [c_bk > m] (0 at c_bk = m,
    torch's relu'(0) = 0). Then, as in InfoNCELoss, the cosines are bilinear in the unit vectors
    (dc/du_hat = v_hat) and d(u_hat)/du = (I - u_hat u_hat^T) / |u| (`l2_normalize_backward`).
    A zero vector (|u| <= 1e-12) has cosine 0 with everything and gets the gradient g / 1e-12,
    finite and huge, as torch.nn.functional.normalize's clamp gives: do not feed zero rows.

    Shapes: anchor (B, D), positive (B, D), negatives (B, K, D) per anchor or (K, D) shared by the
    batch. "none" returns the (B,) per-anchor loss. backward returns (d_anchor, d_positive,
    d_negatives).

    Reference: Mao et al., "SimpleX: A Simple and Strong Baseline for Collaborative Filtering",
    CIKM 2021, eq. 1; in torch: (1 - cos_pos) + w * relu(cos_neg - m).mean(-1) on
    F.normalize'd vectors.
    """

    def __init__(self, margin=0.9, negative_weight=1.0, reduction="mean"):
        super().__init__(reduction)
        for name, value in (("margin", margin), ("negative_weight", negative_weight)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
        if not -1.0 <= float(margin) < 1.0:
            raise ValueError(f"margin: must lie in [-1, 1) (a cosine bound), got {margin}")
        if not 0.0 <= float(negative_weight) < float("inf"):
            raise ValueError(f"negative_weight: must be finite and >= 0, got {negative_weight}")
        self.margin, self.negative_weight = float(margin), float(negative_weight)

    def forward(self, anchor, positive, negatives):
        a, p = _anchor_and_positive(anchor, positive)
        n = as_float_array(negatives, "negatives")
        batch, dim = a.shape
        if n.ndim == 3 and n.shape[0] == batch and n.shape[2] == dim and n.shape[1] > 0:
            shared = False
        elif n.ndim == 2 and n.shape[1] == dim and n.shape[0] > 0:
            shared = True
        else:
            raise ValueError(f"negatives: expected shape ({batch}, K, {dim}) or (K, {dim}) with K >= 1 to match "
                             f"anchor {a.shape}, got {n.shape}")
        inputs = (a, p, n)
        dtype = np.result_type(*inputs)
        normalized = [l2_normalize(x.astype(dtype, copy=False)) for x in inputs]
        units = [unit for unit, _ in normalized]
        pos_cos = np.einsum("bd,bd->b", units[0], units[1])
        neg_cos = units[0] @ units[2].T if shared else np.einsum("bd,bkd->bk", units[0], units[2])
        k = neg_cos.shape[1]
        scale = self.negative_weight / k
        elementwise = (1.0 - pos_cos) + scale * np.sum(np.maximum(neg_cos - self.margin, 0.0), axis=1)
        self.cache = {
            "shared": shared,
            "normalized": normalized,
            "active": neg_cos > self.margin,
            "scale": scale,
            "loss_shape": (batch,),
            "dtype": dtype,
            "input_dtypes": [x.dtype for x in inputs],
        }
        return self._reduce(elementwise.astype(dtype, copy=False))

    def backward(self, grad_output=None):
        """Returns (d_anchor (B, D), d_positive (B, D), d_negatives of the negatives' shape)."""
        weight = self._element_weight(grad_output)
        c = self.cache
        row_weight = weight[:, None] if weight.ndim else weight
        (a, a_norm), (p, p_norm), (n, n_norm) = c["normalized"]
        dtype = c["dtype"]
        # dL/dc: -1 for the positive, w / K where a negative's cosine exceeds the margin; times the reduction's weight
        d_pos = -(np.ones((a.shape[0], 1), dtype) * row_weight)
        d_neg = (c["active"] * (c["scale"] * row_weight)).astype(dtype, copy=False)
        if c["shared"]:
            d_a, d_n = d_pos * p + d_neg @ n, d_neg.T @ a
        else:
            d_a, d_n = d_pos * p + np.einsum("bk,bkd->bd", d_neg, n), d_neg[:, :, None] * a[:, None, :]
        grads = (l2_normalize_backward(d_a, a, a_norm), l2_normalize_backward(d_pos * a, p, p_norm),
                 l2_normalize_backward(d_n, n, n_norm))
        return tuple(grad.astype(dtype, copy=False) for grad, dtype in zip(grads, c["input_dtypes"]))


def _anchor_and_positive(anchor, positive):
    """The contrastive losses' (B, D) anchor and positive rows as float arrays, shapes checked."""
    a = as_float_array(anchor, "anchor")
    p = as_float_array(positive, "positive")
    if a.ndim != 2:
        raise ValueError(f"anchor: expected shape (B, D), got {a.shape}")
    check_same_shape(a, p, "anchor", "positive")
    return a, p


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


# ---------------------------------------------------------------- classification losses


class _ClassLoss(_Loss):
    """What CrossEntropyLoss and NLLLoss share: per-class weights, ignore_index, the class-index terms
    -w_y log p_y, the weighted mean, and the (N, C, d1, ...) layout of their input and gradient."""

    def __init__(self, weight, ignore_index, reduction):
        super().__init__(reduction)
        self.weight = _class_weight(weight)
        self.ignore_index = _integer(ignore_index, "ignore_index")

    def _index_terms(self, log_p, target, input_shape, w):
        """(per-sample -w_y log p_y with 0 where ignored, coefficients a = w_y onehot(y), ignored mask,
        sum of w_y over the samples kept, labels) for rows `log_p` (samples, C)."""
        labels, ignored = _class_indices(target, input_shape, self.ignore_index)
        rows = np.arange(labels.size)
        target_weight = np.where(ignored, 0.0, w[labels]).astype(log_p.dtype, copy=False)
        coefficients = np.zeros_like(log_p)
        coefficients[rows, labels] = target_weight
        with np.errstate(invalid="ignore"):  # 0 * -inf is NaN, as in torch
            elementwise = np.where(ignored, 0.0, -target_weight * log_p[rows, labels])
        return elementwise, coefficients, ignored, np.sum(target_weight), labels

    def _reduce_weighted(self, elementwise, loss_shape, divisor):
        """Per-sample losses reduced with "mean" = sum / divisor (a weighted mean), "sum", or "none"."""
        if self.reduction == "none":
            return elementwise.reshape(loss_shape)
        total = np.sum(elementwise)
        if self.reduction == "sum":
            return total
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 = NaN when every target is ignored
            return (total / np.asarray(divisor, dtype=elementwise.dtype)).astype(elementwise.dtype)

    def _finish(self, x, elementwise, coefficients, ignored, divisor, **extra):
        """Cache what backward needs and return the reduced loss."""
        loss_shape = (x.shape[0], *x.shape[2:])
        self.cache = {
            "coefficients": coefficients.astype(x.dtype, copy=False),
            "ignored": ignored,
            "mean_divisor": divisor,
            "input_shape": x.shape,
            "loss_shape": loss_shape,
            "dtype": x.dtype,
            **extra,
        }
        return self._reduce_weighted(elementwise.astype(x.dtype, copy=False), loss_shape, divisor)

    def _input_grad(self, grad_rows):
        """Rows of d_input back in the input's layout; ignored samples get exactly 0 (also where their
        weight is 0 * inf, a mean over no target)."""
        grad_rows[self.cache["ignored"]] = 0.0
        return _from_class_rows(grad_rows.astype(self.cache["dtype"], copy=False), self.cache["input_shape"])


class CrossEntropyLoss(_ClassLoss):
    """Cross-entropy of targets under softmax(logits), exactly torch.nn.CrossEntropyLoss.

    With log p = log_softmax(x) over the classes, class weights w (all 1 when `weight` is None),
    C classes and smoothing eps, each sample's loss is a weighted sum of -log p:

        class index y:        l = (1 - eps) w_y (-log p_y) + (eps / C) sum_c w_c (-log p_c)
                              (0 where y == ignore_index; without smoothing only the first term)
        probabilities t:      l = sum_c w_c q_c (-log p_c),  q = (1 - eps) t + eps / C

    "mean" divides the sum of l by sum_n w_{y_n} over the non-ignored samples for class indices
    (the weighted mean; every target ignored gives 0/0 = NaN, as torch), and by the number of
    samples for probabilities (the weights do not enter the divisor there, as in torch).

    Gradient: writing l = sum_c a_c (-log p_c) with the coefficients a above,
    dl/dx_j = p_j sum_c a_c - a_j (softmax minus the target, weighted); ignored samples get 0.

    Stability: log p comes from the max-shifted log-sum-exp, so the loss is exact for any finite
    logits (logits of +-1e4 give losses of order 1e4, never inf); a -inf logit has p = 0 and a
    finite gradient, and as the target it gives an infinite loss. As in torch, a -inf logit with a
    zero coefficient (a probability target of 0) gives NaN (0 * -inf), and so does a +inf logit.

    Shapes: logits (N, C) or (N, C, d1, ...) (classes in dimension 1); target integer class
    indices (N,) or (N, d1, ...), or floating class probabilities of the logits' shape; `weight`
    (C,). "none" returns (N,) or (N, d1, ...). backward returns d_logits (the target is not
    differentiated).

    Reference: torch.nn.CrossEntropyLoss and its implementation (aten LossNLL.cpp,
    cross_entropy_loss_label_smoothing and cross_entropy_loss_prob_target).
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(weight, ignore_index, reduction)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
            raise TypeError(f"label_smoothing: expected a real number, got {type(label_smoothing).__name__}")
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"label_smoothing: must lie in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, input, target):
        x = as_float_array(input, "input")
        rows = _class_rows(x, "input")
        classes = rows.shape[1]
        w = _weight_for(self.weight, classes, x.dtype)
        log_p = log_softmax(rows, axis=1)
        eps = self.label_smoothing
        if np.asarray(target).dtype.kind in "iu":
            elementwise, coefficients, ignored, divisor, _ = self._index_terms(log_p, target, x.shape, w)
            if eps > 0.0:
                with np.errstate(invalid="ignore"):
                    smooth = np.where(ignored, 0.0, -np.sum(log_p * w, axis=1))
                elementwise = (1.0 - eps) * elementwise + (eps / classes) * smooth
                coefficients = (1.0 - eps) * coefficients + (eps / classes) * w * ~ignored[:, None]
        else:
            probabilities = _class_probabilities(target, x)
            coefficients = w * (probabilities if eps == 0.0 else (1.0 - eps) * probabilities + eps / classes)
            with np.errstate(invalid="ignore"):
                elementwise = -np.sum(log_p * coefficients, axis=1)
            ignored = np.zeros(rows.shape[0], dtype=bool)
            divisor = rows.shape[0]
        return self._finish(x, elementwise, coefficients, ignored, divisor, probs=np.exp(log_p))

    def backward(self, grad_output=None):
        """Returns d_logits (the logits' shape): (p sum_c a_c - a) times d(output)/d(sample loss)."""
        weight = self._element_weight(grad_output)
        c = self.cache
        a = c["coefficients"]
        with np.errstate(invalid="ignore", over="ignore"):
            return self._input_grad((c["probs"] * np.sum(a, axis=1, keepdims=True) - a)
                                    * _per_sample(weight)[..., None])


class NLLLoss(_ClassLoss):
    """Negative log-likelihood of class indices given log-probabilities, exactly torch.nn.NLLLoss.

        l_n = -w_{y_n} input[n, y_n]   (0 where y_n == ignore_index)

    "mean" divides the sum by sum_n w_{y_n} over the non-ignored samples (NaN when all are
    ignored, as torch). Gradient: dl_n/d input[n, y_n] = -w_{y_n}, 0 elsewhere. The input is
    not checked to be log-probabilities: NLLLoss(log_softmax(x)) is CrossEntropyLoss(x).

    Shapes: input (N, C) or (N, C, d1, ...), target integer (N,) or (N, d1, ...), weight (C,).
    Reference: torch.nn.NLLLoss.
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(weight, ignore_index, reduction)

    def forward(self, input, target):
        x = as_float_array(input, "input")
        rows = _class_rows(x, "input")
        w = _weight_for(self.weight, rows.shape[1], x.dtype)
        if np.asarray(target).dtype.kind not in "iu":
            raise ValueError(f"target: expected integer class indices, got dtype {np.asarray(target).dtype}")
        elementwise, coefficients, ignored, divisor, labels = self._index_terms(rows, target, x.shape, w)
        return self._finish(x, elementwise, coefficients, ignored, divisor, labels=labels)

    def backward(self, grad_output=None):
        """Returns d_input (the input's shape): -w_y times d(output)/d(sample loss) at each target."""
        weight = self._element_weight(grad_output)
        c = self.cache
        samples = np.arange(c["labels"].size)
        grad = np.zeros_like(c["coefficients"])
        with np.errstate(invalid="ignore"):  # only the target entry carries 0 * inf, as in torch
            grad[samples, c["labels"]] = -c["coefficients"][samples, c["labels"]] * _per_sample(weight)
        return self._input_grad(grad)


class MSELoss(_Loss):
    """Mean squared error, torch.nn.MSELoss: l = (input - target)^2 per element.

    Gradient: dl/d input = 2 (input - target) (and -2 (input - target) for the target, which
    backward does not return: the target is data here). Shapes: input and target equal shapes
    (torch broadcasts with a warning; recgrad refuses, as a mismatch is almost always a bug).
    Reference: torch.nn.MSELoss.
    """

    def __init__(self, reduction="mean"):
        super().__init__(reduction)

    def forward(self, input, target):
        x = as_float_array(input, "input")
        y = as_float_array(target, "target").astype(x.dtype, copy=False)
        check_same_shape(x, y, "input", "target")
        diff = x - y
        self.cache = {"diff": diff, "loss_shape": x.shape, "dtype": x.dtype}
        return self._reduce(diff * diff)

    def backward(self, grad_output=None):
        """Returns d_input (the input's shape): 2 (input - target) weight."""
        weight = self._element_weight(grad_output)
        return (2.0 * self.cache["diff"] * weight).astype(self.cache["dtype"], copy=False)


def _class_rows(x, name):
    """(N, C, d1, ...) -> (N * d1 * ..., C): one row of class scores per sample and position."""
    if x.ndim < 2:
        raise ValueError(f"{name}: expected shape (N, C) or (N, C, d1, ...), got {x.shape}")
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _from_class_rows(rows, shape):
    """The inverse of _class_rows: (N * d1 * ..., C) back to `shape` = (N, C, d1, ...)."""
    return np.moveaxis(rows.reshape((shape[0], *shape[2:], shape[1])), -1, 1)


def _per_sample(weight):
    """d(output)/d(sample loss) per row of _class_rows: a 0-d weight, or the flattened "none" array."""
    return weight if weight.ndim == 0 else weight.reshape(-1)


def _class_weight(weight):
    """The `weight` argument: None or a 1-D float array of per-class weights."""
    if weight is None:
        return None
    weight = as_float_array(weight, "weight")
    if weight.ndim != 1:
        raise ValueError(f"weight: expected a 1-D array of per-class weights (C,), got shape {weight.shape}")
    return weight


def _weight_for(weight, classes, dtype):
    """Per-class weights (C,) in `dtype`: ones when None; a length other than C is an error."""
    if weight is None:
        return np.ones(classes, dtype=dtype)
    if weight.shape != (classes,):
        raise ValueError(f"weight: expected shape ({classes},) for input with {classes} classes, got {weight.shape}")
    return weight.astype(dtype, copy=False)


def _integer(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    return int(value)


def _class_indices(target, input_shape, ignore_index):
    """Flattened class indices (with ignored ones replaced by 0, a valid index) and the ignored mask."""
    target = np.asarray(target)
    expected = (input_shape[0], *input_shape[2:])
    if target.shape != expected:
        raise ValueError(
            f"target: expected class indices of shape {expected} for input {input_shape}, got {target.shape}"
        )
    labels = target.reshape(-1).astype(np.int64)
    ignored = labels == ignore_index
    classes = input_shape[1]
    outside = ~ignored & ((labels < 0) | (labels >= classes))
    if np.any(outside):
        raise ValueError(
            f"target: class index {labels[outside][0]} is outside [0, {classes}) and is not "
            f"ignore_index ({ignore_index})"
        )
    return np.where(ignored, 0, labels), ignored


def _class_probabilities(target, x):
    """Floating class probabilities of the input's shape, as rows (N * d1 * ..., C) in its dtype."""
    target = np.asarray(target)
    if target.dtype.kind != "f":
        raise ValueError(
            f"target: expected integer class indices or floating class probabilities, got dtype {target.dtype}"
        )
    if target.shape != x.shape:
        raise ValueError(
            f"target: floating targets are class probabilities and need the input's shape {x.shape}, "
            f"got {target.shape} (class indices must be an integer array)"
        )
    return _class_rows(as_float_array(target, "target").astype(x.dtype, copy=False), "target")
