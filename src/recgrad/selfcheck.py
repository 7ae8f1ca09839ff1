"""`recgrad check`: the finite-difference gradient check of every op, module and loss.

Each case is a name, a function of float64 inputs, the hand-written gradient and the inputs.
`run_checks()` runs them all through `recgrad.gradcheck` and returns one row per case;
the CLI prints the rows as a table and exits non-zero when any case fails.
"""

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from recgrad import activations as act
from recgrad import losses, models, nn
from recgrad.gradcheck import gradcheck
from recgrad.nn.module import RowSparseGrad


@dataclass
class CheckResult:
    name: str
    ok: bool
    max_abs_err: float
    max_rel_err: float


def _elementwise_case(f, f_grad):
    return lambda x: f(x), lambda inputs, g: (g * f_grad(inputs[0]),)


def _module_case(module):
    """fn(x, *params) -> module(x); grad_fn -> (dx, *dparams) from module.backward."""
    parameters = module.parameters()

    def load(inputs):
        for parameter, value in zip(parameters, inputs[1:]):
            parameter.data = value

    def fn(*inputs):
        load(inputs)
        return module(inputs[0])

    def grad_fn(inputs, grad_output):
        load(inputs)
        module.zero_grad()
        module(inputs[0])
        grad_input = module.backward(grad_output)
        return (grad_input, *[parameter.grad for parameter in parameters])

    def inputs_for(x):
        return (x, *[parameter.data.astype(np.float64) for parameter in parameters])

    return fn, grad_fn, inputs_for


def dense_grad(parameter):
    """A parameter's gradient as a dense array: zeros when none arrived, row-sparse ones expanded."""
    if parameter.grad is None:
        return np.zeros_like(parameter.data)
    if isinstance(parameter.grad, RowSparseGrad):
        return parameter.grad.to_dense(parameter.data.shape)
    return parameter.grad


def model_case(model, users, items):
    """(fn, grad_fn, inputs) checking a recommender's backward: fn(*params) -> model.score(users, items).

    grad_fn returns every parameter's gradient from forward + backward, row-sparse ones made dense
    (a parameter no row reached gets zeros). The inputs are the parameters jittered by 0.1 N(0, 1):
    NCF's zero biases would put ReLU inputs exactly on the kink, where differences are one-sided.
    """
    parameters = model.parameters()

    def load(values):
        for parameter, value in zip(parameters, values):
            parameter.data = value

    def fn(*values):
        load(values)
        return model.score(users, items)

    def grad_fn(values, grad_output):
        load(values)
        model.zero_grad()
        model.forward(users, items)
        model.backward(grad_output)
        return tuple(dense_grad(parameter) for parameter in parameters)

    jitter = np.random.default_rng(7)
    inputs = tuple(p.data + 0.1 * jitter.standard_normal(p.data.shape) for p in parameters)
    return fn, grad_fn, inputs


def _loss_case(loss, n_inputs, constants=()):
    """fn(*inputs) = loss(*inputs, *constants); grad_fn -> the gradients of the n_inputs differentiable inputs."""

    def fn(*inputs):
        return loss(*inputs, *constants)

    def grad_fn(inputs, grad_output):
        loss(*inputs, *constants)
        grads = loss.backward(grad_output)
        grads = grads if isinstance(grads, tuple) else (grads,)
        return grads[:n_inputs]

    return fn, grad_fn


def _cases(rng):
    x = rng.standard_normal((4, 5)) * 3.0
    x_away_from_kink = np.where(np.abs(x) < 0.1, 0.5, x)
    cases = []
    elementwise = [
        ("sigmoid", act.sigmoid, act.sigmoid_grad, x),
        ("tanh", act.tanh, act.tanh_grad, x),
        ("relu", act.relu, act.relu_grad, x_away_from_kink),
        ("gelu", act.gelu, act.gelu_grad, x),
        ("gelu(tanh)", lambda v: act.gelu(v, "tanh"), lambda v: act.gelu_grad(v, "tanh"), x),
        ("swish(beta=1.5)", lambda v: act.swish(v, 1.5), lambda v: act.swish_grad(v, 1.5), x),
        ("silu", act.silu, act.silu_grad, x),
    ]
    for name, f, f_grad, inputs in elementwise:
        fn, grad_fn = _elementwise_case(f, f_grad)
        cases.append((name, fn, grad_fn, (inputs,)))

    cases.append(("softmax", act.softmax, lambda i, g: (act.softmax_backward(g, act.softmax(i[0])),), (x,)))
    cases.append((
        "softmax_jacobian",
        act.softmax,
        lambda i, g: (np.einsum("...ij,...i->...j", act.softmax_jacobian(i[0]), g),),
        (x,),
    ))
    cases.append((
        "log_softmax",
        act.log_softmax,
        lambda i, g: (act.log_softmax_backward(g, act.log_softmax(i[0])),),
        (x,),
    ))

    modules = [
        ("nn.Sigmoid", nn.Sigmoid(), x),
        ("nn.Tanh", nn.Tanh(), x),
        ("nn.ReLU", nn.ReLU(), x_away_from_kink),
        ("nn.GELU", nn.GELU(), x),
        ("nn.SiLU", nn.SiLU(), x),
        ("nn.Swish(beta=2)", nn.Swish(beta=2.0), x),
        ("nn.Softmax", nn.Softmax(axis=0), x),
        ("nn.LogSoftmax", nn.LogSoftmax(axis=-1), x),
        ("nn.Linear", nn.Linear(5, 3, rng=rng), x),
        ("nn.Sequential", nn.Sequential(nn.Linear(5, 6, rng=rng), nn.GELU(), nn.Linear(6, 2, rng=rng)), x),
    ]
    for name, module, inputs in modules:
        fn, grad_fn, inputs_for = _module_case(module)
        cases.append((name, fn, grad_fn, inputs_for(inputs)))

    batch, k, dim = 4, 3, 5
    pos, neg = rng.standard_normal(batch), rng.standard_normal((batch, k))
    logits = rng.standard_normal((batch, k)) * 4.0
    labels = (rng.random((batch, k)) < 0.5).astype(np.float64)
    anchor, positive = rng.standard_normal((batch, dim)), rng.standard_normal((batch, dim))
    per_anchor, shared = rng.standard_normal((batch, k, dim)), rng.standard_normal((k, dim))

    cases.append(("BPRLoss", *_loss_case(losses.BPRLoss(), 2), (pos, neg)))
    cases.append(("BPRLoss(reduction=none)", *_loss_case(losses.BPRLoss(reduction="none"), 2), (pos, neg[:, 0])))
    bce = losses.BCEWithLogitsLoss(pos_weight=np.full(k, 2.0))
    cases.append(("BCEWithLogitsLoss(pos_weight)", *_loss_case(bce, 1, constants=(labels,)), (logits,)))
    for similarity in ("dot", "cosine"):
        loss = losses.InfoNCELoss(temperature=0.5, similarity=similarity)
        cases.append((f"InfoNCELoss({similarity}, per-anchor)", *_loss_case(loss, 3), (anchor, positive, per_anchor)))
        cases.append((f"InfoNCELoss({similarity}, shared)", *_loss_case(loss, 3), (anchor, positive, shared)))
        cases.append((f"InfoNCELoss({similarity}, in-batch)", *_loss_case(loss, 2), (anchor, positive)))
    # margin 0 with random vectors: some negative cosines above it, some below (both branches checked)
    ccl = losses.CosineContrastiveLoss(margin=0.0, negative_weight=3.0)
    cases.append(("CosineContrastiveLoss(per-anchor)", *_loss_case(ccl, 3), (anchor, positive, per_anchor)))
    cases.append(("CosineContrastiveLoss(shared)", *_loss_case(ccl, 3), (anchor, positive, shared)))
    classes = rng.integers(0, k, size=batch)
    classes[0] = -100
    class_weight = np.array([0.5, 1.0, 2.0])
    probabilities = rng.dirichlet(np.ones(k), size=batch)
    classification = [
        ("CrossEntropyLoss(indices, weight, smoothing)",
         losses.CrossEntropyLoss(weight=class_weight, label_smoothing=0.2), classes),
        ("CrossEntropyLoss(probabilities, weight)", losses.CrossEntropyLoss(weight=class_weight), probabilities),
        ("NLLLoss(weight, ignore_index)", losses.NLLLoss(weight=class_weight), classes),
        ("MSELoss", losses.MSELoss(), logits[::-1]),
    ]
    for name, loss, target in classification:
        cases.append((name, *_loss_case(loss, 1, constants=(target,)), (logits,)))
    n_users, n_items = 5, 6
    users = rng.integers(0, n_users, size=4)
    items = rng.integers(0, n_items, size=(4, 3))
    dense64 = {"sparse": False, "dtype": np.float64, "rng": 0}
    graph = rng.random((n_users, n_items)) < 0.4  # LightGCN's training interactions
    recommenders = [
        ("models.MF", models.MF(n_users, n_items, dim=3, **dense64)),
        ("models.TwoTower(gelu, normalize)",
         models.TwoTower(n_users, n_items, dim=3, hidden=(4,), activation="gelu", normalize=True, **dense64)),
        ("models.GMF", models.GMF(n_users, n_items, dim=3, **dense64)),
        ("models.MLP", models.MLP(n_users, n_items, mlp_layers=(4, 3), **dense64)),
        ("models.NeuMF", models.NeuMF(n_users, n_items, mf_dim=2, mlp_layers=(4, 3), **dense64)),
        ("models.LightGCN(2 layers)", models.LightGCN(n_users, n_items, dim=3, layers=2, dtype=np.float64, rng=0,
                                                      interactions=scipy.sparse.csr_matrix(graph))),
    ]
    for name, model in recommenders:
        cases.append((name, *model_case(model, users, items)))
    return cases


def run_checks(seed=0):
    """Run every case; a list of CheckResult, one per op, module or loss."""
    rng = np.random.default_rng(seed)
    results = []
    for name, fn, grad_fn, inputs in _cases(rng):
        ok, max_abs, max_rel = gradcheck(fn, inputs, grad_fn, seed=seed)
        results.append(CheckResult(name, ok, max_abs, max_rel))
    return results


def format_results(results):
    """The table `recgrad check` prints: op, max abs error, max rel error, pass/fail."""
    width = max(len(r.name) for r in results)
    lines = [f"{'op':<{width}}  {'max abs err':>12}  {'max rel err':>12}  result"]
    for r in results:
        lines.append(f"{r.name:<{width}}  {r.max_abs_err:12.3e}  {r.max_rel_err:12.3e}  {'pass' if r.ok else 'FAIL'}")
    failed = sum(not r.ok for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)
