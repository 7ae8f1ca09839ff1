"""recgrad.models: Embedding, MF, TwoTower, GMF, MLP, NeuMF (and NeuMF started from a GMF and an MLP).

Gradients against central finite differences (float64, parameters wrapped as gradcheck inputs),
row-sparse == dense embedding gradients, the checkerboard fixture, recommend's conventions
(batch == single user, filtering, ties, padding, the user_items row rule), save/load round trips
and the float32 default.
"""

import functools
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recgrad import gradcheck, init
from recgrad.activations import sigmoid
from recgrad.models import GMF, MF, MLP, Embedding, NeuMF, TwoTower, load_model
from recgrad.nn import RowSparseGrad
from recgrad.selfcheck import dense_grad, model_case

ACTIVATIONS = ["relu", "tanh", "sigmoid", "gelu", "swish", "silu"]
ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "models.npz"


def small_models(dtype=np.float32, sparse=True):
    """One small instance of every model (TwoTower with two hidden layers and normalisation)."""
    return [
        MF(6, 7, dim=3, sparse=sparse, rng=1, dtype=dtype),
        MF(6, 7, dim=3, normalize=True, sparse=sparse, rng=5, dtype=dtype),
        TwoTower(6, 7, dim=3, hidden=(4, 5), normalize=True, sparse=sparse, rng=2, dtype=dtype),
        GMF(6, 7, dim=3, init_std=0.5, sparse=sparse, rng=3, dtype=dtype),
        MLP(6, 7, mlp_layers=(6, 4, 3), init_std=0.5, sparse=sparse, rng=6, dtype=dtype),
        NeuMF(6, 7, mf_dim=2, mlp_layers=(6, 4, 3), init_std=0.5, sparse=sparse, rng=4, dtype=dtype),
    ]


def check_model_gradients(model, users, items):
    """gradcheck of forward(users, items) w.r.t. every parameter, through backward (selfcheck's case)."""
    fn, grad_fn, inputs = model_case(model, users, items)
    ok, max_abs, max_rel = gradcheck(fn, inputs, grad_fn)
    assert ok, (type(model).__name__, max_abs, max_rel)


# ------------------------------------------------------------------------------------------ Embedding
def test_embedding_forward_gathers_rows_for_any_id_shape():
    emb = Embedding(5, 3, rng=0)
    ids = np.array([[4, 0, 4], [1, 2, 3]])
    out = emb(ids)
    assert out.shape == (2, 3, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], emb.weight.data[4])
    np.testing.assert_array_equal(out[1, 2], emb.weight.data[3])


def test_embedding_dense_backward_matches_finite_differences():
    ids = np.array([[0, 3, 3], [1, 0, 3]])  # repeated ids must add up

    def fn(weight):
        emb = Embedding(4, 2, sparse=False, rng=0, dtype=np.float64)
        emb.weight.data = weight
        return emb(ids)

    def grad_fn(inputs, grad_output):
        emb = Embedding(4, 2, sparse=False, rng=0, dtype=np.float64)
        emb.weight.data = inputs[0]
        emb(ids)
        assert emb.backward(grad_output) is None
        return (emb.weight.grad,)

    ok, max_abs, max_rel = gradcheck(fn, (np.random.default_rng(0).standard_normal((4, 2)),), grad_fn)
    assert ok, (max_abs, max_rel)


def test_embedding_sparse_gradient_equals_dense_and_keeps_only_looked_up_rows():
    ids = np.array([5, 1, 5, 5, 0])
    grad = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    sparse, dense = Embedding(8, 4, sparse=True, rng=0), Embedding(8, 4, sparse=False, rng=0)
    for emb in (sparse, dense):
        emb(ids)
        emb.backward(grad)
    assert isinstance(sparse.weight.grad, RowSparseGrad)
    np.testing.assert_array_equal(sparse.weight.grad.rows, [0, 1, 5])
    np.testing.assert_allclose(sparse.weight.grad.values[2], grad[0] + grad[2] + grad[3], rtol=1e-6)
    np.testing.assert_allclose(sparse.weight.grad.to_dense((8, 4)), dense.weight.grad, rtol=1e-6)
    assert sparse.weight.grad.values.dtype == dense.weight.grad.dtype == np.float32


def test_embedding_gradients_accumulate_over_backward_calls():
    emb = Embedding(3, 2, sparse=False, rng=0, dtype=np.float64)
    emb(np.array([1]))
    emb.backward(np.ones((1, 2)))
    emb.backward(np.ones((1, 2)))
    np.testing.assert_array_equal(emb.weight.grad, [[0, 0], [2, 2], [0, 0]])


def test_embedding_rejects_bad_ids_naming_them():
    emb = Embedding(4, 2, rng=0)
    with pytest.raises(IndexError, match="7"):
        emb(np.array([0, 7]))
    with pytest.raises(IndexError, match="-1"):
        emb(np.array([-1]))
    with pytest.raises(TypeError, match="integer"):
        emb(np.array([0.0, 1.0]))
    with pytest.raises(RuntimeError):
        Embedding(4, 2, rng=0).backward(np.ones((1, 2)))
    emb(np.array([1, 2]))
    with pytest.raises(ValueError, match="grad_output"):
        emb.backward(np.ones((3, 2)))


def test_embedding_init_default_normal_and_initializer_override():
    emb = Embedding(2000, 50, rng=0)
    assert emb.weight.data.dtype == np.float32
    assert abs(emb.weight.data.std() - 0.1) < 0.002 and abs(emb.weight.data.mean()) < 0.002
    xavier = Embedding(2000, 50, initializer=functools.partial(init.xavier_normal_), rng=0)
    assert abs(xavier.weight.data.std() - np.sqrt(2.0 / 2050)) < 0.001  # shrinks with the table
    np.testing.assert_array_equal(Embedding(10, 3, rng=5).weight.data, Embedding(10, 3, rng=5).weight.data)
    with pytest.raises(ValueError, match="initializer"):
        Embedding(10, 3, init_std=0.5, initializer=init.xavier_normal_)
    with pytest.raises(ValueError, match="num_embeddings"):
        Embedding(0, 3)
    with pytest.raises(ValueError, match="dtype"):
        Embedding(3, 3, dtype=np.int64)


# ------------------------------------------------------------------------------------ model gradients
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("items", [np.array([0, 6, 2, 0]), np.array([[0, 6], [2, 2], [5, 1], [0, 3]])])
def test_mf_gradients(sparse, items, normalize):
    model = MF(5, 7, dim=3, sparse=sparse, normalize=normalize, rng=0, dtype=np.float64)
    check_model_gradients(model, np.array([1, 4, 1, 0]), items)


def test_normalized_mf_scores_by_the_cosine_everywhere(tmp_path):
    model = MF(5, 7, dim=4, normalize=True, rng=0, dtype=np.float64)
    P, Q = model.user_embedding.weight.data, model.item_embedding.weight.data
    cosines = (P / np.linalg.norm(P, axis=1, keepdims=True)) @ (Q / np.linalg.norm(Q, axis=1, keepdims=True)).T
    users, items = np.array([0, 4, 2]), np.array([6, 0, 2])
    np.testing.assert_allclose(model.score(users, items), cosines[users, items], rtol=1e-12)
    np.testing.assert_allclose(model.score_all(users), cosines[users], rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(model.item_factors(), axis=1), 1.0, rtol=1e-12)
    ids, _ = model.recommend(4, sp.csr_matrix((5, 7)), N=3)
    np.testing.assert_array_equal(ids, np.argsort(-cosines[4])[:3])
    model.save(tmp_path / "mf.npz")
    assert load_model(tmp_path / "mf.npz").normalize is True
    with pytest.raises(TypeError, match="normalize"):
        MF(5, 7, normalize=1)


def test_normalized_mf_encode_backward_matches_finite_differences():
    model = MF(4, 6, dim=3, sparse=False, normalize=True, rng=0, dtype=np.float64)
    ids = np.array([5, 1, 5])  # a repeated row adds up
    weights = np.random.default_rng(1).standard_normal((3, 3))

    def fn(table):
        model.item_embedding.weight.data = table
        return np.sum(weights * model.encode("item", ids))

    def grad_fn(inputs, grad_output):
        fn(inputs[0])
        model.zero_grad()
        model.encode_backward("item", grad_output * weights)
        return (model.item_embedding.weight.grad,)

    ok, max_abs, max_rel = gradcheck(fn, (model.item_embedding.weight.data.copy(),), grad_fn)
    assert ok, (max_abs, max_rel)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("normalize", [False, True])
def test_two_tower_gradients(activation, normalize):
    model = TwoTower(4, 5, dim=3, hidden=(4,), activation=activation, normalize=normalize, rng=0, dtype=np.float64)
    check_model_gradients(model, np.array([0, 3, 3]), np.array([[1, 4], [0, 1], [1, 1]]))


def test_two_tower_without_hidden_layers_gradients():
    model = TwoTower(4, 5, dim=3, hidden=(), init="xavier", rng=0, dtype=np.float64)
    check_model_gradients(model, np.array([0, 3, 2]), np.array([1, 4, 4]))


@pytest.mark.parametrize("items", [np.array([0, 6, 2]), np.array([[0, 6], [2, 2], [5, 1]])])
def test_gmf_gradients(items):
    model = GMF(5, 7, dim=3, init_std=0.5, rng=0, dtype=np.float64)
    check_model_gradients(model, np.array([1, 4, 1]), items)


@pytest.mark.parametrize("mlp_layers", [(6, 4, 3), (4,)])
def test_neumf_gradients(mlp_layers):
    model = NeuMF(5, 7, mf_dim=2, mlp_layers=mlp_layers, init_std=0.5, rng=0, dtype=np.float64)
    check_model_gradients(model, np.array([1, 4, 1]), np.array([[0, 6], [2, 2], [5, 1]]))


@pytest.mark.parametrize("items", [np.array([0, 6, 6]), np.array([[0, 6], [2, 2], [5, 1]])])
@pytest.mark.parametrize("mlp_layers", [(6, 4, 3), (4,)])
def test_mlp_gradients(mlp_layers, items):
    model = MLP(5, 7, mlp_layers=mlp_layers, init_std=0.5, rng=0, dtype=np.float64)
    check_model_gradients(model, np.array([1, 4, 1]), items)


def test_mlp_is_neumfs_mlp_branch():
    """NeuMF holding the MLP's weights in its MLP branch, with h_GMF = 0, computes the MLP's logits."""
    mlp = MLP(5, 7, mlp_layers=(6, 4, 3), init_std=0.5, rng=2, dtype=np.float64)
    neumf = NeuMF(5, 7, mf_dim=2, mlp_layers=(6, 4, 3), init_std=0.5, rng=2, dtype=np.float64)
    state = mlp.state_dict()
    neumf.load_state_dict({**neumf.state_dict(), **{k: v for k, v in state.items() if not k.startswith("output")},
                           "output.weight": np.concatenate([np.zeros((1, 2)), state["output.weight"]], axis=1),
                           "output.bias": state["output.bias"]})
    users, items = np.array([0, 4, 4]), np.array([[6, 1], [0, 0], [3, 2]])
    np.testing.assert_allclose(neumf.forward(users, items), mlp.forward(users, items), rtol=1e-12, atol=0)
    assert mlp.output.weight.data.shape == (1, 3) and abs(mlp.mlp_user_embedding.weight.data).max() > 0


# -------------------------------------------------------------------------------------- pre-training
def trained_like(model, seed):
    """The model with every parameter redrawn N(0, 1) (a stand-in for training: nothing left at its init)."""
    rng = np.random.default_rng(seed)
    model.load_state_dict({name: rng.standard_normal(value.shape) for name, value in model.state_dict().items()})
    return model


@pytest.mark.parametrize("alpha", [0.5, 0.2, 1.0])
def test_from_pretrained_logit_is_the_alpha_mix_of_the_two_models(alpha):
    gmf = trained_like(GMF(9, 11, dim=3, rng=0, dtype=np.float64), seed=1)
    mlp = trained_like(MLP(9, 11, mlp_layers=(8, 6, 4), rng=0, dtype=np.float64), seed=2)
    neumf = NeuMF.from_pretrained(gmf, mlp, alpha=alpha)
    assert (neumf.mf_dim, neumf.mlp_layers, neumf.dtype) == (3, (8, 6, 4), np.float64)
    rng = np.random.default_rng(3)
    users, items = rng.integers(0, 9, size=50), rng.integers(0, 11, size=(50, 4))
    expected = alpha * gmf.score(users, items) + (1 - alpha) * mlp.score(users, items)
    np.testing.assert_allclose(neumf.score(users, items), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(neumf.score_all(users), alpha * gmf.score_all(users)
                               + (1 - alpha) * mlp.score_all(users), rtol=1e-12, atol=1e-12)
    # copies: training the NeuMF leaves the pre-trained models as they were
    neumf.gmf_user_embedding.weight.data[...] = 0.0
    neumf.mlp[0].weight.data[...] = 0.0
    assert abs(gmf.user_embedding.weight.data).min() > 0 and abs(mlp.mlp[0].weight.data).min() > 0


def test_from_pretrained_refuses_models_that_do_not_fit():
    gmf = GMF(9, 11, dim=3, rng=0)
    with pytest.raises(ValueError, match=r"GMF has 9 users x 11 items but the MLP has 9 x 12"):
        NeuMF.from_pretrained(gmf, MLP(9, 12, mlp_layers=(8, 4), rng=0))
    with pytest.raises(ValueError, match="GMF has 9 users x 11 items but the MLP has 8 x 11"):
        NeuMF.from_pretrained(gmf, MLP(8, 11, mlp_layers=(8, 4), rng=0))
    with pytest.raises(TypeError, match="mlp must be an MLP, got GMF"):
        NeuMF.from_pretrained(gmf, gmf)
    with pytest.raises(TypeError, match="gmf must be a GMF, got MLP"):
        NeuMF.from_pretrained(MLP(9, 11, mlp_layers=(8, 4), rng=0), MLP(9, 11, mlp_layers=(8, 4), rng=0))
    with pytest.raises(ValueError, match="alpha"):
        NeuMF.from_pretrained(gmf, MLP(9, 11, mlp_layers=(8, 4), rng=0), alpha=1.5)


@pytest.mark.parametrize("model", small_models(), ids=lambda m: type(m).__name__)
def test_score_all_matches_pairwise_scores_and_float32_is_kept(model):
    users = np.array([5, 0, 2])
    all_scores = model.score_all(users)
    assert all_scores.shape == (3, 7) and all_scores.dtype == np.float32
    items = np.broadcast_to(np.arange(7), (3, 7))
    np.testing.assert_allclose(all_scores, model.score(users, items), rtol=1e-5, atol=1e-6)
    subset = np.array([6, 1])
    np.testing.assert_allclose(model.score_all(users, subset), all_scores[:, subset], rtol=1e-5, atol=1e-6)
    scores = model.forward(users, np.array([1, 2, 3]))
    assert scores.dtype == np.float32
    model.backward(np.ones(3, dtype=np.float32))
    for name, parameter in model.named_parameters():
        grad = parameter.grad.values if isinstance(parameter.grad, RowSparseGrad) else parameter.grad
        assert parameter.data.dtype == grad.dtype == np.float32, name


@pytest.mark.parametrize("model", small_models(), ids=lambda m: type(m).__name__)
def test_forward_input_errors(model):
    with pytest.raises(IndexError, match="users"):
        model.forward(np.array([6]), np.array([0]))
    with pytest.raises(IndexError, match="items"):
        model.forward(np.array([0]), np.array([7]))
    with pytest.raises(ValueError, match="items"):
        model.forward(np.array([0, 1]), np.array([0, 1, 2]))
    model.score(np.array([0]), np.array([1]))
    with pytest.raises(RuntimeError, match="forward"):
        model.backward(np.ones(1))  # score keeps no cache to differentiate
    model.forward(np.array([0]), np.array([[1, 2]]))
    with pytest.raises(ValueError, match="grad_scores"):
        model.backward(np.ones(2))


# --------------------------------------------------------------------------------------- checkerboard
def checkerboard(n):
    """User u liked item i iff u and i have the same parity and u != i (the diagonal withheld)."""
    same = (np.arange(n)[:, None] % 2) == (np.arange(n)[None, :] % 2)
    return same & ~np.eye(n, dtype=bool)


def test_checkerboard_exact_mf_factors():
    n = 10
    model = MF(n, n, dim=2, rng=0)
    parity = np.eye(2, dtype=np.float32)[np.arange(n) % 2]  # even -> (1, 0), odd -> (0, 1)
    model.user_embedding.weight.data[...] = parity
    model.item_embedding.weight.data[...] = parity
    ids, _ = model.recommend(np.arange(n), sp.csr_matrix(checkerboard(n)), N=1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(n))


@pytest.mark.parametrize(
    "make",
    [
        lambda: MF(10, 10, dim=2, init_std=0.3, rng=0),
        lambda: TwoTower(10, 10, dim=4, hidden=(8,), init_std=0.3, rng=0),
        lambda: GMF(10, 10, dim=4, init_std=0.3, rng=0),
        lambda: MLP(10, 10, mlp_layers=(8, 4), init_std=0.3, rng=0),
        lambda: NeuMF(10, 10, mf_dim=4, mlp_layers=(8, 4), init_std=0.3, rng=0),
    ],
    ids=["MF", "TwoTower", "GMF", "MLP", "NeuMF"],
)
def test_checkerboard_trained_with_bce(make):
    """Full-batch gradient descent on BCE over the observed pairs (the diagonal is not in the loss)."""
    n = 10
    model = make()
    liked = checkerboard(n)
    users, items = np.nonzero(~np.eye(n, dtype=bool))
    labels = liked[users, items].astype(np.float32)
    for _ in range(300):
        model.zero_grad()
        logits = model.forward(users, items)
        model.backward((sigmoid(logits) - labels) / np.float32(labels.size))  # d mean BCE / d logit
        for parameter in model.parameters():
            parameter.data -= 1.0 * dense_grad(parameter)
    ids, scores = model.recommend(np.arange(n), sp.csr_matrix(liked), N=1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(n))


# ------------------------------------------------------------------------------------------ recommend
def random_interactions(n_users, n_items, density, seed):
    return sp.random(n_users, n_items, density=density, format="csr", random_state=seed, data_rvs=np.ones)


@pytest.mark.parametrize("model", small_models(), ids=lambda m: type(m).__name__)
def test_recommend_batch_equals_single_user_and_filters_liked(model):
    user_items = random_interactions(6, 7, 0.4, seed=0)
    users = np.array([3, 0, 5, 1])
    ids, scores = model.recommend(users, user_items, N=4)
    assert ids.shape == scores.shape == (4, 4) and ids.dtype == np.int64
    for row, user in enumerate(users):
        single_ids, single_scores = model.recommend(int(user), user_items, N=4)
        np.testing.assert_array_equal(single_ids, ids[row])
        np.testing.assert_allclose(single_scores, scores[row], rtol=1e-5, atol=1e-7)  # BLAS: GEMM vs GEMV
        liked = set(user_items[user].indices)
        valid = ids[row][ids[row] >= 0]
        assert not liked & set(valid)
        assert valid.size == min(4, 7 - len(liked))
        expected = model.score(np.full(valid.size, user), valid)
        np.testing.assert_allclose(scores[row][: valid.size], expected, rtol=1e-5, atol=1e-6)
        assert np.all(np.diff(scores[row][: valid.size]) <= 0)
    # The rows for userid (implicit's convention) give the same answer as the full matrix.
    by_rows = model.recommend(users, user_items[users], N=4)
    np.testing.assert_array_equal(by_rows[0], ids)
    unfiltered, _ = model.recommend(users, None, N=7, filter_already_liked_items=False)
    assert np.all(np.sort(unfiltered, axis=1) == np.arange(7))


@pytest.mark.parametrize("model", small_models(), ids=lambda m: type(m).__name__)
def test_recommend_compiled_equals_the_numpy_reference(model):
    """The compiled masked scan answers as the reference: same ids and scores, padding, and a stored
    zero in user_items is not a liked item."""
    user_items = random_interactions(6, 7, 0.5, seed=2)
    user_items.data[::3] = 0.0
    users = np.array([4, 1, 0, 5])
    padded = 0
    for N, filtered in ((3, True), (7, True), (9, False)):
        compiled = model.recommend(users, user_items, N=N, filter_already_liked_items=filtered, engine="compiled")
        reference = model.recommend(users, user_items, N=N, filter_already_liked_items=filtered, engine="numpy")
        np.testing.assert_array_equal(compiled[0], reference[0])
        np.testing.assert_array_equal(compiled[1], reference[1])
        padded += (compiled[0] == -1).sum()
    assert padded > 0  # the filtered rows with fewer than N candidates were compared too


def test_recommend_ties_padding_and_item_subset():
    model = MF(3, 6, dim=2, rng=0)
    model.item_embedding.weight.data[...] = 0.0  # every score ties at 0
    user_items = sp.csr_matrix(np.array([[0, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]]))
    ids, scores = model.recommend(np.array([0, 1, 2]), user_items, N=3)
    np.testing.assert_array_equal(ids, [[0, 2, 4], [5, -1, -1], [0, 1, 2]])  # lower id first; -1 pads
    assert np.isneginf(scores[1, 1:]).all() and (scores[1, 0] == 0.0)
    ids, _ = model.recommend(0, user_items, N=10, items=np.array([5, 3, 2]))
    np.testing.assert_array_equal(ids, [2, 5, -1])  # N clipped to the 3 candidates, the liked 3 padded
    ids, _ = model.recommend(0, user_items, N=10, items=np.array([5, 3, 2]), filter_already_liked_items=False)
    np.testing.assert_array_equal(ids, [2, 3, 5])


def test_recommend_argument_errors():
    model = MF(4, 5, dim=2, rng=0)
    full = random_interactions(4, 5, 0.5, seed=1)
    with pytest.raises(ValueError, match="rows"):
        model.recommend(np.array([0, 1, 2]), full[:2], N=2)
    with pytest.raises(ValueError, match="columns"):
        model.recommend(0, sp.csr_matrix((4, 3)), N=2)
    with pytest.raises(ValueError, match="ambiguous|unambiguous"):
        model.recommend(np.array([3, 2, 1, 0]), full, N=2)
    with pytest.raises(TypeError, match="user_items"):
        model.recommend(0, full.toarray(), N=2)
    with pytest.raises(IndexError, match="userid"):
        model.recommend(4, full, N=2)
    with pytest.raises(ValueError, match="N"):
        model.recommend(0, full, N=0)
    with pytest.raises(ValueError, match="repeated"):
        model.recommend(0, full, items=np.array([1, 1]))
    ids, _ = model.recommend(np.arange(4), full, N=2)  # all users in order: both readings agree
    assert ids.shape == (4, 2)


# ------------------------------------------------------------------------------------------ save/load
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip(tmp_path, dtype):
    users = np.arange(6)
    for model in small_models(dtype=dtype, sparse=False):
        name = type(model).__name__
        written = model.save(tmp_path / name)  # np.savez appends .npz
        assert written == str(tmp_path / name) + ".npz"
        restored = load_model(written)
        assert type(restored) is type(model) and restored.config() == model.config()
        assert restored.dtype == np.dtype(dtype) and restored.sparse is False
        np.testing.assert_array_equal(restored.score_all(users), model.score_all(users))
        for (key, a), (_, b) in zip(model.named_parameters(), restored.named_parameters()):
            np.testing.assert_array_equal(a.data, b.data, err_msg=key)
            assert a.data.dtype == b.data.dtype
        assert type(model).load(written).config() == model.config()
        with np.load(written, allow_pickle=False) as archive:
            assert str(archive["__model__"]) == name


def test_save_to_an_open_file_and_seeded_construction(tmp_path):
    """The Trainer writes through a file handle (atomic temp file + rename); equal seeds, equal models."""
    for first, second in zip(small_models(), small_models()):
        for (key, a), (_, b) in zip(first.named_parameters(), second.named_parameters()):
            np.testing.assert_array_equal(a.data, b.data, err_msg=key)
        path = tmp_path / f"{type(first).__name__}.tmp"
        with open(path, "wb") as handle:
            assert first.save(handle) is None
        np.testing.assert_array_equal(load_model(path).score_all(np.arange(6)), first.score_all(np.arange(6)))


def test_load_refuses_another_class_and_foreign_files(tmp_path):
    path = MF(3, 4, dim=2, rng=0).save(tmp_path / "mf.npz")
    with pytest.raises(ValueError, match="not a GMF"):
        GMF.load(path)
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="not a recgrad model"):
        load_model(tmp_path / "other.npz")


def test_constructor_argument_errors():
    with pytest.raises(ValueError, match="activation"):
        TwoTower(3, 3, activation="softsign")
    with pytest.raises(ValueError, match="init"):
        TwoTower(3, 3, init="orthogonal")
    with pytest.raises(ValueError, match="mlp_layers"):
        NeuMF(3, 3, mlp_layers=(7, 4))
    with pytest.raises(ValueError, match="mlp_layers"):
        MLP(3, 3, mlp_layers=())
    with pytest.raises(ValueError, match="n_users"):
        MF(0, 3)
    with pytest.raises(ValueError, match="dim"):
        GMF(3, 3, dim=-1)


# --------------------------------------------------------------------------------------------- inits
def test_tower_and_ncf_initialisers_follow_the_documented_rules():
    kaiming = TwoTower(2, 2, dim=400, hidden=(300,), init="kaiming", activation="tanh", rng=0)
    w = kaiming.user_tower[0].weight.data
    assert abs(w.std() - (5.0 / 3.0) / np.sqrt(400)) < 0.002
    xavier = TwoTower(2, 2, dim=400, hidden=(300,), init="xavier", rng=0)
    bound = np.sqrt(6.0 / 700)
    w = xavier.item_tower[2].weight.data
    assert w.max() <= bound and w.min() >= -bound and w.max() > 0.98 * bound
    default = TwoTower(2, 2, dim=400, hidden=(300,), init="default", rng=0)
    assert np.abs(default.user_tower[0].weight.data).max() <= 1.0 / np.sqrt(400)
    neumf = NeuMF(2000, 3, mf_dim=40, mlp_layers=(64, 32), rng=0)
    assert abs(neumf.gmf_user_embedding.weight.data.std() - 0.01) < 0.0005
    np.testing.assert_array_equal(neumf.output.bias.data, 0.0)
    np.testing.assert_array_equal(neumf.mlp[0].bias.data, 0.0)
    assert np.abs(neumf.output.weight.data).max() <= np.sqrt(3.0 / 72)  # LeCun uniform, fan_in 40 + 32


# -------------------------------------------------------------------------------------- PyTorch parity
def build_for_spec(spec):
    """The recgrad object a fixture spec describes (parameters are loaded afterwards)."""
    dtype, model = np.dtype(spec["dtype"]), spec["model"]
    if model == "Embedding":
        return Embedding(7, spec["dim"], rng=0, dtype=dtype)
    if model == "MF":
        return MF(5, 7, dim=spec["dim"], rng=0, dtype=dtype)
    if model == "GMF":
        return GMF(5, 7, dim=spec["dim"], rng=0, dtype=dtype)
    if model == "NeuMF":
        return NeuMF(5, 7, mf_dim=spec["mf_dim"], mlp_layers=tuple(spec["mlp_layers"]), rng=0, dtype=dtype)
    return TwoTower(
        5, 7, dim=spec["dim"], hidden=tuple(spec["hidden"]), activation=spec["activation"],
        normalize=spec["normalize"], rng=0, dtype=dtype,
    )


def run_recgrad(spec, arrays):
    """(scores, {param: dense gradient}) from recgrad for a spec and its recorded inputs."""
    module = build_for_spec(spec)
    module.load_state_dict({key[len("param:"):]: value for key, value in arrays.items() if key.startswith("param:")})
    if spec["model"] == "Embedding":
        scores = module(arrays["ids"])
    else:
        scores = module.forward(arrays["users"], arrays["items"])
    module.backward(arrays["grad_scores"])
    return scores, {name: dense_grad(parameter) for name, parameter in module.named_parameters()}


def assert_parity(spec, scores, grads, expected_scores, expected_grads):
    tolerance = {"rtol": 1e-6, "atol": 1e-12} if spec["dtype"] == "float64" else {"rtol": 1e-5, "atol": 1e-6}
    assert scores.dtype == np.dtype(spec["dtype"]), spec["name"]
    np.testing.assert_allclose(scores, expected_scores, err_msg=spec["name"], **tolerance)
    assert sorted(grads) == sorted(expected_grads), spec["name"]
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, expected_grads[name], err_msg=f"{spec['name']} {name}", **tolerance)


def recorded_cases():
    with np.load(FIXTURE, allow_pickle=False) as archive:
        specs = json.loads(str(archive["specs"]))
        cases = []
        for spec in specs:
            prefix = spec["name"] + ":"
            entries = {key[len(prefix):]: archive[key] for key in archive.files if key.startswith(prefix)}
            cases.append((spec, entries))
    return cases


def test_recorded_pytorch_parity():
    cases = recorded_cases()
    assert {spec["model"] for spec, _ in cases} == {"Embedding", "MF", "GMF", "NeuMF", "TwoTower"}
    for spec, entries in cases:
        arrays = {key: value for key, value in entries.items() if key != "scores" and not key.startswith("grad:")}
        expected = {key[len("grad:"):]: value for key, value in entries.items() if key.startswith("grad:")}
        scores, grads = run_recgrad(spec, arrays)
        assert_parity(spec, scores, grads, entries["scores"], expected)


@pytest.mark.torch
def test_live_pytorch_parity():
    pytest.importorskip("torch")
    location = ROOT / "scripts" / "fixtures" / "make_models.py"
    loader = importlib.util.spec_from_file_location("make_models", location)
    generator = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(generator)
    for spec in generator.case_specs():
        arrays = generator.make_inputs(spec)
        expected_scores, expected_grads = generator.torch_reference(spec, arrays)
        scores, grads = run_recgrad(spec, arrays)
        assert_parity(spec, scores, grads, expected_scores, expected_grads)


def test_encode_matches_the_factors_and_encode_backward_reaches_the_tables():
    from recgrad.models import TwoTower

    for model in (MF(4, 5, dim=3, sparse=False, rng=0), MF(4, 5, dim=3, sparse=False, normalize=True, rng=0),
                  TwoTower(4, 5, dim=3, hidden=(4,), normalize=True, sparse=False, rng=0)):
        ids = np.array([1, 3])
        factors = model.item_factors(ids)  # (releases the towers' caches, so before encode)
        np.testing.assert_allclose(model.encode("item", ids), factors, rtol=1e-6)
        model.zero_grad()
        model.encode_backward("item", np.ones((2, 3), dtype=np.float32))
        assert model.item_embedding.weight.grad is not None and model.user_embedding.weight.grad is None
        with pytest.raises(ValueError, match="side"):
            model.encode("items", ids)
    with pytest.raises(RuntimeError, match="before encode"):
        model.encode_backward("user", np.ones((2, 3), dtype=np.float32))
