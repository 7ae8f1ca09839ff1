"""LightGCN: the normalised graph and the propagation against dense matrices built by hand, the
gradients against central finite differences (float64), the numba propagation against scipy,
training, resume, the model file (with its graph) and the settings."""

import numpy as np
import pytest
import scipy.sparse as sp

from recgrad import gradcheck
from recgrad.cli import build_model, main, resolve_config
from recgrad.data import synthetic
from recgrad.models import LightGCN, load_model
from recgrad.models.base import ModelFileError
from recgrad.models.lightgcn import normalized_adjacency, propagate
from recgrad.objectives import BatchL2, BPRObjective
from recgrad.selfcheck import dense_grad, model_case
from recgrad.train import Trainer
from recgrad.train.settings import SettingError, resolve

# 4 users x 5 items; user 3 and item 4 have no interactions (degree 0).
INTERACTIONS = sp.csr_matrix(np.array([
    [1, 1, 0, 0, 0],
    [0, 1, 1, 1, 0],
    [1, 0, 0, 1, 0],
    [0, 0, 0, 0, 0],
], dtype=np.float32))


def dense_normalized_adjacency(r):
    """D^-1/2 A D^-1/2 with A = [[0, R], [R^T, 0]], written out entry by entry."""
    n_users, n_items = r.shape
    a = np.zeros((n_users + n_items, n_users + n_items))
    a[:n_users, n_users:] = r
    a[n_users:, :n_users] = r.T
    degree = a.sum(axis=1)
    a_hat = np.zeros_like(a)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if a[i, j]:
                a_hat[i, j] = a[i, j] / np.sqrt(degree[i] * degree[j])
    return a_hat


def random_interactions(n_users, n_items, density, seed):
    matrix = sp.random(n_users, n_items, density=density, random_state=seed, format="csr")
    matrix.data[:] = 1.0
    return matrix


def test_normalized_adjacency_equals_the_dense_formula():
    a_hat = dense_normalized_adjacency(INTERACTIONS.toarray())
    built = normalized_adjacency(INTERACTIONS, np.float64)
    np.testing.assert_allclose(built.toarray(), a_hat, rtol=1e-15, atol=0)
    assert a_hat[0, 4] == pytest.approx(1 / np.sqrt(2 * 2))  # user 0 (2 items) - item 0 (2 users)
    assert not a_hat[3].any() and not a_hat[:, 4 + 4].any()  # the isolated user and item
    # repeated and weighted entries count once, with weight 1
    doubled = sp.csr_matrix((np.full(4, 3.0), ([0, 0, 1, 1], [1, 1, 2, 0])), shape=(2, 3))
    np.testing.assert_array_equal(normalized_adjacency(doubled, np.float64).toarray(),
                                  dense_normalized_adjacency((doubled.toarray() > 0).astype(float)))


@pytest.mark.parametrize("engine", ["numpy", "compiled"])
@pytest.mark.parametrize("layers", [0, 1, 3])
def test_propagation_is_the_mean_of_dense_matrix_powers(engine, layers):
    a_hat = dense_normalized_adjacency(INTERACTIONS.toarray())
    table = np.random.default_rng(0).standard_normal((9, 3))
    expected = sum(np.linalg.matrix_power(a_hat, k) @ table for k in range(layers + 1)) / (layers + 1)
    result = propagate(normalized_adjacency(INTERACTIONS, np.float64), table, layers, engine)
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_propagation_equals_scipy(dtype):
    adjacency = normalized_adjacency(random_interactions(300, 200, 0.03, 1), dtype)
    table = np.random.default_rng(1).standard_normal((500, 16)).astype(dtype)
    for layers in (1, 4):
        reference = propagate(adjacency, table, layers, "numpy")
        compiled = propagate(adjacency, table, layers, "compiled")
        assert compiled.dtype == dtype
        # the same products summed in the same order: equal up to the last bit or two
        np.testing.assert_allclose(compiled, reference, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-7)


def small_model(layers=2):
    return LightGCN(4, 5, dim=3, layers=layers, interactions=INTERACTIONS, rng=0, dtype=np.float64)


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_scores_gradient_matches_finite_differences(layers):
    users = np.array([0, 2, 0, 3])
    items = np.array([[1, 0, 4], [3, 3, 2], [0, 1, 1], [2, 4, 0]])  # repeats in and across rows
    fn, grad_fn, inputs = model_case(small_model(layers), users, items)
    ok, max_abs, max_rel = gradcheck(fn, inputs, grad_fn)
    assert ok, (max_abs, max_rel)


def test_bpr_with_batch_l2_gradient_matches_finite_differences():
    """The training loss, BPR on (u, i+, i-) plus BatchL2 on the ego rows, w.r.t. the ego tables."""
    model, objective, l2 = small_model(3), BPRObjective(), BatchL2(0.3)
    users, positives, negatives = np.array([0, 1, 2, 1]), np.array([1, 2, 3, 1]), np.array([[4], [0], [4], [0]])
    parameters = model.parameters()

    def loss(*values):
        for parameter, value in zip(parameters, values):
            parameter.data = value
        model.zero_grad()
        return objective(model, users, positives, negatives) + l2(model, users.size)

    def grad_fn(values, grad_output):
        loss(*values)
        return tuple(float(grad_output) * dense_grad(parameter) for parameter in parameters)

    inputs = tuple(p.data.copy() for p in parameters)
    ok, max_abs, max_rel = gradcheck(loss, inputs, grad_fn)
    assert ok, (max_abs, max_rel)


@pytest.mark.parametrize("side", ["user", "item"])
def test_encode_gradient_matches_finite_differences(side):
    model = small_model(2)
    ids = np.array([1, 3, 1, 0])
    parameters = model.parameters()

    def fn(*values):
        for parameter, value in zip(parameters, values):
            parameter.data = value
        return model.encode(side, ids)

    def grad_fn(values, grad_output):
        fn(*values)
        model.zero_grad()
        model.encode_backward(side, grad_output)
        return tuple(dense_grad(parameter) for parameter in parameters)

    ok, max_abs, max_rel = gradcheck(fn, tuple(p.data.copy() for p in parameters), grad_fn)
    assert ok, (max_abs, max_rel)


def test_the_propagation_is_kept_until_the_ego_tables_change():
    model = small_model(2)
    first = model.propagated()
    assert model.propagated() is first and model.user_factors().base is first
    model.item_embedding.weight.data[2, 1] += 0.5  # an in-place step, as the optimizers take
    second = model.propagated()
    assert second is not first
    np.testing.assert_allclose(second, propagate(model.adjacency, np.concatenate(
        [model.user_embedding.weight.data, model.item_embedding.weight.data]), 2, "numpy"), rtol=1e-12)


def test_zero_layers_is_matrix_factorisation():
    model = small_model(0)
    users, items = np.array([0, 1, 2]), np.array([4, 0, 2])
    expected = np.sum(model.user_embedding.weight.data[users] * model.item_embedding.weight.data[items], axis=1)
    np.testing.assert_allclose(model.score(users, items), expected, rtol=1e-12)


def test_a_model_without_its_graph_says_so():
    model = LightGCN(4, 5, dim=3)
    with pytest.raises(RuntimeError, match="no training graph"):
        model.score(np.array([0]), np.array([1]))
    with pytest.raises(ValueError, match="shape"):
        model.set_interactions(sp.csr_matrix((5, 4)))


# ------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def data():
    return synthetic(n_users=200, n_items=120, dim=8, interactions_per_user=15, seed=0)


def trained(data, epochs, out_dir=None, resume=False):
    model = LightGCN(data.n_users, data.n_items, dim=16, layers=2, interactions=data.train, rng=0)
    trainer = Trainer(model, loss="bpr", optimizer="adam", lr=0.01, batch_size=256, epochs=epochs, l2=1e-4,
                      epoch_sampling="users", seed=1, out_dir=out_dir, progress=False)
    return model, trainer.fit(data, resume=resume)


def test_lightgcn_learns_beyond_random_and_popularity(data):
    model, result = trained(data, epochs=4)
    losses = [record["loss"] for record in result["history"]]
    assert losses[-1] < 0.9 * losses[0]
    random_recall = 20 / data.n_items  # a random ranking finds this fraction of a user's held-out items
    assert result["best_value"] > 3 * random_recall
    assert result["best_value"] > result["popularity"]["recall@20"]


def test_resume_equals_an_uninterrupted_run(data, tmp_path, one_thread):
    straight, expected = trained(data, epochs=2, out_dir=tmp_path / "straight")
    trained(data, epochs=1, out_dir=tmp_path / "resumed")
    resumed, result = trained(data, epochs=2, out_dir=tmp_path / "resumed", resume=True)
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value)
    assert [r["loss"] for r in result["history"]] == [r["loss"] for r in expected["history"]]
    best = load_model(tmp_path / "resumed" / "best.npz")  # the model file holds the graph too
    assert isinstance(best, LightGCN) and (best.interactions != sp.csr_matrix(data.train)).nnz == 0


def test_infonce_trains_lightgcn(data):
    model = LightGCN(data.n_users, data.n_items, dim=16, layers=1, interactions=data.train, rng=0)
    result = Trainer(model, loss="infonce", negatives=16, optimizer="adam", lr=0.01, batch_size=256, epochs=2,
                     progress=False).fit(data)
    assert result["history"][-1]["loss"] < result["history"][0]["loss"]
    assert result["best_value"] > result["popularity"]["recall@20"]


# ----------------------------------------------------------------------------------- model file
def test_model_file_keeps_the_graph(tmp_path):
    model = small_model(2)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.user_factors(), model.user_factors())
    np.testing.assert_array_equal(loaded.recommend(0, INTERACTIONS)[0], model.recommend(0, INTERACTIONS)[0])
    arrays = dict(np.load(tmp_path / "m.npz"))
    arrays["buffer.interactions.indices"] = arrays["buffer.interactions.indices"] + 10  # item ids out of range
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match="bad.npz.*CSR"):
        load_model(tmp_path / "bad.npz")
    arrays["buffer.interactions.indices"] = arrays["buffer.interactions.indices"].astype(np.float64)
    np.savez(tmp_path / "float.npz", **arrays)
    with pytest.raises(ModelFileError, match="expected integers"):
        load_model(tmp_path / "float.npz")


# ------------------------------------------------------------------------------------- settings
def test_settings_build_lightgcn_and_refuse_row_sparse_optimizers(data):
    config = resolve_config({"model": "lightgcn", "layers": 2, "dim": 8}, {})
    model = build_model(config, data.n_users, data.n_items, data.train)
    assert isinstance(model, LightGCN) and model.layers == 2 and model.dim == 8
    with pytest.raises(ValueError, match="train="):
        build_model(config, data.n_users, data.n_items)
    with pytest.raises(SettingError, match="optimizer.*lightgcn"):
        resolve({"model": "lightgcn", "optimizer": "sparse_adam"})
    with pytest.raises(SettingError, match="layers: applies only with model 'lightgcn'"):
        resolve({"model": "mf", "layers": 2})


def test_cli_trains_and_evaluates_lightgcn(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "lightgcn", "--layers", "1", "--dim", "8", "--epochs", "1", "--optimizer",
                 "adam", "--out", str(out)]) == 0
    assert load_model(out / "best.npz").layers == 1
    assert main(["evaluate", "--run", str(out)]) == 0
    assert "recall@20" in capsys.readouterr().out
