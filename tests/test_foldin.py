"""Fold-in of new users: the compiled steps against the NumPy reference, and against training."""

import os
import subprocess
import sys

import numpy as np
import pytest

from recgrad.models import MF, TwoTower
from recgrad.serving.foldin import FoldIn


def _table(n_items=120, dim=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n_items, dim))


@pytest.mark.parametrize("settings", [
    {"loss": "bpr"},
    {"loss": "bpr", "l2": 0.03, "dns_candidates": 4},
    {"loss": "bpr", "cosine": True, "dns_candidates": 3},
    {"loss": "bce", "negatives": 3, "l2": 1e-2},
    {"loss": "infonce", "negatives": 5, "temperature": 0.2},
    {"loss": "infonce", "negatives": 5, "cosine": True},
    {"loss": "ccl", "negatives": 6, "margin": 0.0, "negative_weight": 3.0, "dns_candidates": 2},
])
def test_compiled_steps_equal_the_reference(settings):
    table = _table()
    history = np.array([3, 17, 50, 99])
    fold = FoldIn(steps=60, **settings)
    order, _ = fold._plan(history, len(table))
    negatives = fold.draw_negatives(history, len(table), order)
    reference = fold.vector(table, history, negatives=negatives, engine="numpy")
    compiled = fold.vector(table, history, negatives=negatives, engine="compiled")
    np.testing.assert_allclose(compiled, reference, rtol=1e-10, atol=1e-12)
    assert not np.allclose(reference, table[history].mean(axis=0))  # the steps moved the start


def test_drawn_negatives_avoid_the_history_and_repeat_for_a_seed():
    table = _table(n_items=30).astype(np.float32)
    history = np.arange(0, 30, 2)
    fold = FoldIn(steps=200, negatives=3)
    order, _ = fold._plan(history, 30)
    assert not np.isin(fold.draw_negatives(history, 30, order), history).any()
    np.testing.assert_array_equal(fold.vector(table, history), fold.vector(table, history))
    assert fold.vector(table, history).dtype == np.float32


def test_fold_in_minimises_the_users_objective():
    """The folded vector's expected BPR + L2 over uniform negatives is below the start's and a
    nearby perturbation's (the objective is convex in p, the annealed SGD lands near its minimum)."""
    table = _table(n_items=60, dim=4, seed=1)
    history = np.array([1, 5, 9])
    fold = FoldIn(l2=0.05, steps=4000)

    def objective(p):
        scores = table @ p
        negatives = np.setdiff1d(np.arange(len(table)), history)
        margin = scores[negatives][None, :] - scores[history][:, None]
        return np.logaddexp(0.0, margin).mean() + 0.5 * fold.l2 * p @ p

    folded = fold.vector(table, history, engine="numpy")
    start = table[history].mean(axis=0)
    assert objective(folded) < objective(start)
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert objective(folded) <= objective(folded + 0.2 * rng.normal(size=folded.shape)) + 1e-3


def test_history_errors_name_the_problem():
    table = _table(n_items=5)
    with pytest.raises(ValueError, match="at least one known item"):
        FoldIn().vector(table, np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="every item"):
        FoldIn().vector(table, np.arange(5))
    with pytest.raises(ValueError, match="loss"):
        FoldIn(loss="hinge")
    with pytest.raises(ValueError, match="steps"):
        FoldIn(steps=0)


def test_recommend_new_excludes_the_history_and_normalises_cosine_models():
    model = MF(10, 40, dim=8, normalize=True, rng=0)
    ids, scores = model.recommend_new([2, 7], N=38)
    assert set(ids) == set(range(40)) - {2, 7}
    assert np.all(np.diff(scores) <= 0) and np.all(np.abs(scores) <= 1 + 1e-6)
    kept, _ = model.recommend_new([2, 7], N=40, filter_already_liked_items=False)
    assert set(kept) == set(range(40))
    tower = TwoTower(10, 40, dim=8, hidden=(8,), rng=0)
    ids, _ = tower.recommend_new(np.array([1, 3]), N=5)
    assert ids.shape == (5,) and not np.isin(ids, [1, 3]).any()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("foldin-run")
    env = dict(os.environ, RECGRAD_NUM_THREADS="1")
    command = [sys.executable, "-c", "import sys; from recgrad.cli import main; sys.exit(main())"]  # as the script
    subprocess.run([*command, "train", "--epochs", "15", "--eval-every", "15", "--threads", "1", "--out", str(out)],
                   check=True, capture_output=True, env=env)
    return out


def test_a_folded_in_user_lands_close_to_the_trained_ranking(trained_run):
    """Fold each of 150 training users in from their own training items: the top 20 overlaps the
    trained vector's top 20 by more than half on average (two random top-20s of 3000 items
    share 0.13 of an item), and their test recall stays within 10% of the trained one's."""
    from recgrad.cli import load_dataset, read_toml, resolve_config
    from recgrad.models import load_model

    config = resolve_config(read_toml(trained_run / "config.toml"), {})
    model = load_model(trained_run / "best.npz")
    data = load_dataset(config)
    fold = FoldIn.from_run_config(config, model)
    users = np.flatnonzero(np.diff(data.test.indptr) > 0)[:150]
    overlap, recall_trained, recall_folded = [], [], []
    for user in users:
        trained, _ = model.recommend(user, data.train, N=20)
        folded, _ = model.recommend_new(data.train[user].indices, N=20, fold=fold)
        test = set(data.test[user].indices)
        overlap.append(len(set(trained) & set(folded)) / 20)
        recall_trained.append(len(test & set(trained)) / min(20, len(test)))
        recall_folded.append(len(test & set(folded)) / min(20, len(test)))
    assert np.mean(overlap) > 0.5
    assert np.mean(recall_folded) >= 0.9 * np.mean(recall_trained)
