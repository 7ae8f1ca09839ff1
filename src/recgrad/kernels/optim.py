"""Fused optimizer steps (numba): one pass over memory per parameter per step.

The NumPy steps in `recgrad.optim` are the reference and the test oracle; these kernels compute the
same arithmetic, in the same order, element by element, so that in both float32 and float64 the fused
result equals the reference bit for bit (tests/test_kernels_optim.py checks 200-step trajectories).
The NumPy step makes several passes and temporaries (g - m, g * g, sqrt(v), denom, m / denom, ...);
a fused step reads theta, g, m, v (and v_max or the momentum buffer) once and writes theta, m, v once.

How bit-identity is kept:
  * every scalar is computed in Python (float64) exactly as the reference computes it and then cast to
    the parameter's dtype, as NumPy 2 does with a Python float next to a float32 array (NEP 50);
  * inside the loop every operation is a single IEEE operation in the parameter's dtype, in the
    reference's order (no fastmath, so no reassociation and no fused multiply-add contraction);
  * flags (maximize, weight decay, AMSGrad, momentum mode) are loop-invariant branches; maximize is
    a multiplication by -1, which is exact.

Usage is through the optimizers, which run these steps by default (`Adam(params)`; engine="numpy"
runs the reference, see `recgrad.optim.Optimizer`); the functions below are the kernels' Python
wrappers (validation, scalar casting, size 0). Each parallel loop splits the elements (or, for the
lazy steps, the rows) among `recgrad.kernels.get_num_threads()` threads; there is no reduction, so
the result does not depend on the number of threads.
"""

import numba
import numpy as np

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------------------------
# Kernels. `_<name>_element` is the update of one entry and `adam_row_step` that of one row of the
# lazy Adam (inlined into the loops); `_<name>_parallel` runs it over the elements (or, for the lazy
# steps, the rows) on all threads, `_<name>_serial` in one loop. Arrays with less than PARALLEL_MIN
# elements take the serial loop: waking the thread pool costs more than updating them (torch's grain
# size is 32768 too). Division by zero follows NumPy (inf/nan, no exception: error_model="numpy"),
# which also lets LLVM vectorise the division and the sqrt.

PARALLEL_MIN = 1 << 15

_element_jit = numba.njit(cache=True, error_model="numpy", inline="always")
_serial_jit = numba.njit(cache=True, error_model="numpy")
_parallel_jit = numba.njit(parallel=True, cache=True, error_model="numpy")


@_element_jit
def _adam_element(theta, g, m, v, v_max, sign, l2, decay, one_minus_beta1, beta2, one_minus_beta2,
                  sqrt_bias_correction2, step_size, eps, use_l2, amsgrad):
    g = sign * g
    if use_l2:
        g = g + l2 * theta
    theta = theta * decay
    m = m + one_minus_beta1 * (g - m)
    v = v * beta2
    v = v + one_minus_beta2 * g * g
    v_hat = v
    if amsgrad:
        # np.maximum (NaN propagates); `|`, not `or`: no short-circuit branch, so the loop vectorises.
        if (v > v_max) | (v != v):
            v_max = v
        v_hat = v_max
    denom = np.sqrt(v_hat) / sqrt_bias_correction2 + eps
    return theta - step_size * (m / denom), m, v, v_max


@_parallel_jit
def _adam_parallel(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, hyper, use_l2, amsgrad):
    sign, l2, decay, one_minus_beta1, beta2, one_minus_beta2, sqrt_bias_correction2, step_size, eps = hyper
    for i in numba.prange(param.size):
        v_max = max_exp_avg_sq[i] if amsgrad else exp_avg_sq[i]
        param[i], exp_avg[i], exp_avg_sq[i], v_max = _adam_element(
            param[i], grad[i], exp_avg[i], exp_avg_sq[i], v_max, sign, l2, decay, one_minus_beta1, beta2,
            one_minus_beta2, sqrt_bias_correction2, step_size, eps, use_l2, amsgrad)
        if amsgrad:
            max_exp_avg_sq[i] = v_max


@_serial_jit
def _adam_serial(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, hyper, use_l2, amsgrad):
    sign, l2, decay, one_minus_beta1, beta2, one_minus_beta2, sqrt_bias_correction2, step_size, eps = hyper
    for i in range(param.size):
        v_max = max_exp_avg_sq[i] if amsgrad else exp_avg_sq[i]
        param[i], exp_avg[i], exp_avg_sq[i], v_max = _adam_element(
            param[i], grad[i], exp_avg[i], exp_avg_sq[i], v_max, sign, l2, decay, one_minus_beta1, beta2,
            one_minus_beta2, sqrt_bias_correction2, step_size, eps, use_l2, amsgrad)
        if amsgrad:
            max_exp_avg_sq[i] = v_max


@_element_jit
def _sgd_element(theta, g, buf, sign, l2, lr, momentum, one_minus_dampening, use_l2, buffer_mode, nesterov):
    g = sign * g
    if use_l2:
        g = g + l2 * theta
    if buffer_mode == 1:  # first step with momentum: b = g
        buf = g
    elif buffer_mode == 2:  # later steps: b = momentum * b + (1 - dampening) * g
        buf = buf * momentum
        buf = buf + one_minus_dampening * g
    if buffer_mode != 0:
        if nesterov:
            g = g + momentum * buf
        else:
            g = buf
    return theta - lr * g, buf


@_parallel_jit
def _sgd_parallel(param, grad, momentum_buffer, hyper, use_l2, buffer_mode, nesterov):
    sign, l2, lr, momentum, one_minus_dampening = hyper
    for i in numba.prange(param.size):
        buf = momentum_buffer[i] if buffer_mode == 2 else grad[i]
        param[i], buf = _sgd_element(param[i], grad[i], buf, sign, l2, lr, momentum, one_minus_dampening,
                                     use_l2, buffer_mode, nesterov)
        if buffer_mode != 0:
            momentum_buffer[i] = buf


@_serial_jit
def _sgd_serial(param, grad, momentum_buffer, hyper, use_l2, buffer_mode, nesterov):
    sign, l2, lr, momentum, one_minus_dampening = hyper
    for i in range(param.size):
        buf = momentum_buffer[i] if buffer_mode == 2 else grad[i]
        param[i], buf = _sgd_element(param[i], grad[i], buf, sign, l2, lr, momentum, one_minus_dampening,
                                     use_l2, buffer_mode, nesterov)
        if buffer_mode != 0:
            momentum_buffer[i] = buf


@_element_jit
def adam_row_step(theta, m, v, g, one_minus_beta1, one_minus_beta2, eps, decay, step_size):
    """SparseAdam's lazy step on one row, in place on theta, m, v (the reference `SparseAdam._update`).

    Per entry j, in the reference's order and in the row's dtype (every scalar already of that dtype)::

        m = m + (1 - beta1) * (g - m);  v = v + (1 - beta2) * (g * g - v)
        theta = theta * decay - step_size * (m / (sqrt(v) + eps))

    The one lazy Adam element step of the kernels: `sparse_adam_step` below and the MF training loop
    (`recgrad.kernels.mf`) both call it, so their rows move identically.
    """
    for j in range(theta.size):
        gj = g[j]
        mj = m[j] + one_minus_beta1 * (gj - m[j])
        vj = v[j] + one_minus_beta2 * (gj * gj - v[j])
        m[j] = mj
        v[j] = vj
        theta[j] = theta[j] * decay - step_size * (mj / (np.sqrt(vj) + eps))


@_parallel_jit
def _sparse_adam_parallel(table, rows, values, exp_avg, exp_avg_sq, hyper):
    decay, one_minus_beta1, one_minus_beta2, step_size, eps = hyper
    for k in numba.prange(rows.size):
        r = rows[k]
        adam_row_step(table[r], exp_avg[r], exp_avg_sq[r], values[k], one_minus_beta1, one_minus_beta2, eps,
                      decay, step_size)


@_serial_jit
def _sparse_adam_serial(table, rows, values, exp_avg, exp_avg_sq, hyper):
    decay, one_minus_beta1, one_minus_beta2, step_size, eps = hyper
    for k in range(rows.size):
        r = rows[k]
        adam_row_step(table[r], exp_avg[r], exp_avg_sq[r], values[k], one_minus_beta1, one_minus_beta2, eps,
                      decay, step_size)


@_parallel_jit
def _sparse_sgd_parallel(table, rows, values, hyper):
    sign, lr = hyper
    for k in numba.prange(rows.size):
        r = rows[k]
        for j in range(table.shape[1]):
            table[r, j] = table[r, j] - lr * (sign * values[k, j])


@_serial_jit
def _sparse_sgd_serial(table, rows, values, hyper):
    sign, lr = hyper
    for k in range(rows.size):
        r = rows[k]
        for j in range(table.shape[1]):
            table[r, j] = table[r, j] - lr * (sign * values[k, j])


def _launch(serial, parallel, work, *args):
    """`serial(*args)` for less than PARALLEL_MIN elements of work, else `parallel(*args)`."""
    (serial if work < PARALLEL_MIN else parallel)(*args)


# ----------------------------------------------------------------------------------------------
# Validation


def uncovered_reason(array):
    """None when the compiled steps can update `array` in place (a writeable C-contiguous float32 or
    float64 ndarray, as torch's fused steps need dense contiguous floating-point tensors), else what
    it is instead, for a notice: "a float16 array", "a non-contiguous array", ..."""
    if not isinstance(array, np.ndarray):
        return f"a {type(array).__name__}"
    if array.dtype not in DTYPES:
        return f"a {array.dtype} array"
    if not array.flags.c_contiguous:
        return "a non-contiguous array"
    if not array.flags.writeable:
        return "a read-only array"
    return None


def check_array(array, name="param"):
    """Raise TypeError unless `array` is a float32/float64 ndarray, ValueError unless it is writeable
    and C-contiguous: the kernels update it in place through a flat view."""
    reason = uncovered_reason(array)
    if reason is None:
        return
    if not isinstance(array, np.ndarray) or array.dtype not in DTYPES:
        raise TypeError(f"{name}: the compiled steps support float32 and float64 arrays, got {reason}")
    raise ValueError(
        f"{name}: the compiled steps need a writeable C-contiguous array, got {reason} (shape {array.shape}, "
        f"strides {array.strides}); use engine='numpy', or make the parameter's data contiguous"
    )


def _flat_gradient(grad, param):
    """The gradient as a flat C-contiguous array of the parameter's dtype (a copy only if needed)."""
    grad = np.asarray(grad)
    if grad.shape != param.shape:
        raise ValueError(f"grad: shape {grad.shape} does not match the parameter's shape {param.shape}")
    return np.ascontiguousarray(grad, dtype=param.dtype).reshape(-1)


def _flat_state(array, param, name):
    if not isinstance(array, np.ndarray) or array.dtype != param.dtype or array.shape != param.shape:
        raise ValueError(f"{name}: the optimizer state must be an array of the parameter's shape and dtype")
    check_array(array, name)
    return array.reshape(-1)


def _rows_and_values(rows, values, param):
    """Validated (rows, values) of a row-sparse gradient for a table viewed as (n_rows, width)."""
    rows = np.asarray(rows)
    if rows.ndim != 1 or rows.dtype != np.int64:
        raise TypeError(f"rows: expected a 1-D int64 array, got {rows.dtype} of shape {rows.shape}")
    values = np.asarray(values)
    if values.shape != rows.shape + param.shape[1:]:
        raise ValueError(
            f"values: shape {values.shape} does not match {rows.size} rows of a table of shape {param.shape}"
        )
    if rows.size and (rows.min() < 0 or rows.max() >= param.shape[0]):
        raise IndexError(f"rows: indices must be in [0, {param.shape[0]}) for a table of shape {param.shape}")
    if rows.size > 1 and not np.all(rows[1:] > rows[:-1]):
        raise ValueError("rows: the fused lazy step needs unique sorted rows (as RowSparseGrad holds)")
    width = int(np.prod(param.shape[1:], dtype=np.int64))
    values = np.ascontiguousarray(values, dtype=param.dtype).reshape(rows.size, width)
    return rows, values, width


def _hyper(dtype, *scalars):
    """The kernel's scalars as one array of the parameter's dtype: each Python float is rounded to the
    dtype once, as NumPy 2 rounds a Python float that meets a float32 array (NEP 50)."""
    return np.array(scalars, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Wrappers (called by recgrad.optim with the scalars their reference steps compute)


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, beta1, beta2, eps, step_size,
              sqrt_bias_correction2, weight_decay=0.0, decay=1.0, maximize=False):
    """One fused Adam / AdamW / AMSGrad step, in place on param, exp_avg, exp_avg_sq (, max_exp_avg_sq).

    Per element (the reference `recgrad.optim.Adam._update`, in its order)::

        g = -grad if maximize else grad;  g = g + weight_decay * theta   (Adam's L2, if weight_decay != 0)
        theta = theta * decay                                             (AdamW: decay = 1 - lr * lambda)
        m = m + (1 - beta1) * (g - m);  v = v * beta2 + (1 - beta2) * g * g
        v_max = max(v_max, v) and v = v_max                               (if max_exp_avg_sq is not None)
        theta = theta - step_size * (m / (sqrt(v) / sqrt_bias_correction2 + eps))

    with step_size = lr / (1 - beta1^t) and sqrt_bias_correction2 = sqrt(1 - beta2^t).
    `decay` = 1 is exact (theta * 1 = theta), so Adam and AdamW share the kernel.
    """
    check_array(param)
    if param.size == 0:
        return
    flat = param.reshape(-1)
    g = _flat_gradient(grad, param)
    m = _flat_state(exp_avg, param, "exp_avg")
    v = _flat_state(exp_avg_sq, param, "exp_avg_sq")
    amsgrad = max_exp_avg_sq is not None
    v_max = _flat_state(max_exp_avg_sq, param, "max_exp_avg_sq") if amsgrad else np.empty(0, param.dtype)
    hyper = _hyper(param.dtype, -1.0 if maximize else 1.0, weight_decay, decay, 1.0 - beta1, beta2,
                   1.0 - beta2, sqrt_bias_correction2, step_size, eps)
    _launch(_adam_serial, _adam_parallel, flat.size, flat, g, m, v, v_max, hyper, weight_decay != 0.0, amsgrad)


def sgd_step(param, grad, momentum_buffer, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
             nesterov=False, maximize=False, first_step=False):
    """One fused SGD step, in place on param (and momentum_buffer, unless it is None).

    Per element (the reference `recgrad.optim.SGD._update`)::

        g = -grad if maximize else grad;  g = g + weight_decay * theta   (if weight_decay != 0)
        b = g on the first step (first_step=True), else b = b * momentum + (1 - dampening) * g
        g = g + momentum * b if nesterov else b                          (when there is a buffer)
        theta = theta - lr * g

    momentum_buffer=None means no momentum; with first_step=True its contents are overwritten.
    """
    check_array(param)
    if param.size == 0:
        return
    flat = param.reshape(-1)
    g = _flat_gradient(grad, param)
    if momentum_buffer is None:
        buf, buffer_mode = np.empty(0, param.dtype), 0
    else:
        buf, buffer_mode = _flat_state(momentum_buffer, param, "momentum_buffer"), 1 if first_step else 2
    hyper = _hyper(param.dtype, -1.0 if maximize else 1.0, weight_decay, lr, momentum, 1.0 - dampening)
    _launch(_sgd_serial, _sgd_parallel, flat.size, flat, g, buf, hyper, weight_decay != 0.0, buffer_mode,
            bool(nesterov))


def sparse_adam_step(param, rows, values, exp_avg, exp_avg_sq, *, beta1, beta2, eps, step_size, decay=1.0,
                     maximize=False):
    """One lazy Adam step on the given rows of a table, in place (the reference `SparseAdam._update`).

    For each row r in `rows` (unique, sorted; parallel over rows) and each entry j of that row::

        g = -values[k, j] if maximize else values[k, j]
        m = m + (1 - beta1) * (g - m);  v = v + (1 - beta2) * (g * g - v)
        theta = theta * decay                                    (decoupled decay; decay = 1 - lr * lambda)
        theta = theta - step_size * (m / (sqrt(v) + eps))        step_size = lr sqrt(1 - beta2^t) / (1 - beta1^t)

    Other rows, and their m and v, are not read or written.
    """
    check_array(param)
    if param.ndim == 0:
        raise ValueError("param: a row-sparse step needs a table with at least one dimension")
    rows, values, width = _rows_and_values(rows, values, param)
    if rows.size == 0 or width == 0:
        return
    table = param.reshape(param.shape[0], width)
    m = _flat_state(exp_avg, param, "exp_avg").reshape(table.shape)
    v = _flat_state(exp_avg_sq, param, "exp_avg_sq").reshape(table.shape)
    if maximize:
        values = np.negative(values)  # exact, as the reference's -g
    hyper = _hyper(param.dtype, decay, 1.0 - beta1, 1.0 - beta2, step_size, eps)
    _launch(_sparse_adam_serial, _sparse_adam_parallel, values.size, table, rows, values, m, v, hyper)


def sparse_sgd_step(param, rows, values, *, lr, maximize=False):
    """theta[rows] = theta[rows] - lr * (±values), in place, parallel over the rows (plain SGD, lazy)."""
    check_array(param)
    if param.ndim == 0:
        raise ValueError("param: a row-sparse step needs a table with at least one dimension")
    rows, values, width = _rows_and_values(rows, values, param)
    if rows.size == 0 or width == 0:
        return
    table = param.reshape(param.shape[0], width)
    _launch(_sparse_sgd_serial, _sparse_sgd_parallel, values.size, table, rows, values,
            _hyper(param.dtype, -1.0 if maximize else 1.0, lr))
