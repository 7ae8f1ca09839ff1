"""Central finite-difference check of a hand-written gradient.

For a function f(*inputs) -> array and a random upstream gradient G of f's output shape, the
scalar L = sum(f(*inputs) * G) has exact gradient grad_fn(inputs, G). Each input element is
perturbed by +-eps and

    dL/dx_k  ~  (L(x + eps e_k) - L(x - eps e_k)) / (2 eps),

whose error is O(eps^2). Everything runs in float64 so that truncation, not rounding, dominates.
"""

import numpy as np


def gradcheck(fn, inputs, grad_fn, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0):
    """Compare `grad_fn` with central finite differences of `fn`; report, never raise.

    Args:
        fn: callable, fn(*inputs) -> array (any shape, a scalar included).
        inputs: tuple of arrays; each is copied to float64.
        grad_fn: callable, grad_fn(inputs, grad_output) -> tuple of arrays, one per input, the
            gradient of sum(fn(*inputs) * grad_output).
        eps: finite-difference step.
        atol, rtol: an element passes when |analytic - numeric| <= atol + rtol * |numeric|.
        seed: seeds the random grad_output (standard normal).

    Returns:
        (ok, max_abs_err, max_rel_err), where the relative error of an element is
        |analytic - numeric| / max(|numeric|, atol).
    """
    inputs = tuple(np.array(x, dtype=np.float64) for x in inputs)
    output = np.asarray(fn(*inputs), dtype=np.float64)
    grad_output = np.random.default_rng(seed).standard_normal(output.shape)
    analytic = grad_fn(inputs, grad_output)
    if not isinstance(analytic, (tuple, list)):
        analytic = (analytic,)
    if len(analytic) != len(inputs):
        raise ValueError(f"grad_fn returned {len(analytic)} gradients for {len(inputs)} inputs")

    def objective():
        return float(np.sum(np.asarray(fn(*inputs), dtype=np.float64) * grad_output))

    ok, max_abs, max_rel = True, 0.0, 0.0
    for x, grad in zip(inputs, analytic):
        grad = np.asarray(grad, dtype=np.float64)
        if grad.shape != x.shape:
            return False, float("inf"), float("inf")
        numeric = np.zeros_like(x)
        flat_x, flat_numeric = x.reshape(-1), numeric.reshape(-1)  # views: perturb x in place
        for k in range(flat_x.size):
            saved = flat_x[k]
            flat_x[k] = saved + eps
            upper = objective()
            flat_x[k] = saved - eps
            lower = objective()
            flat_x[k] = saved
            flat_numeric[k] = (upper - lower) / (2.0 * eps)
        error = np.abs(grad - numeric)
        if error.size:
            max_abs = max(max_abs, float(np.max(error)))
            max_rel = max(max_rel, float(np.max(error / np.maximum(np.abs(numeric), atol))))
            ok = ok and bool(np.all(error <= atol + rtol * np.abs(numeric)))
    return ok, max_abs, max_rel
