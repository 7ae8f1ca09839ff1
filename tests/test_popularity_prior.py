"""The popularity prior (recgrad.train.popularity_prior, FactorModel.set_item_prior): what the rankings
add, where they add it, what is saved, how "auto" chooses beta, and that the test set never chooses it."""

import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp

from recgrad.cli import main
from recgrad.data import synthetic, with_validation
from recgrad.evaluation import full_ranking, model_score_fn
from recgrad.models import GMF, MF, LightGCN, load_model
from recgrad.train import Trainer
from recgrad.train.popularity_prior import RATIOS, beta_grid, log_counts
from recgrad.train.settings import SettingError, check_value, resolve


@pytest.fixture(scope="module")
def data():
    return with_validation(synthetic(n_users=200, n_items=150, popularity_skew=1.0, seed=1), ratio=0.1, seed=0)


def cosine_mf(n_users=7, n_items=9, seed=0):
    return MF(n_users, n_items, dim=4, normalize=True, rng=seed)


def test_the_ranking_adds_the_prior_to_every_score_and_training_never_sees_it():
    model = cosine_mf()
    prior = np.linspace(-0.5, 2.0, 9)
    users, items = np.array([0, 3, 6]), np.array([[1, 2], [0, 8], [4, 4]])
    plain_all, plain_pairs = model.score_all(users), model.score(users, items)
    units_u, units_i = model.user_factors(), model.item_factors()
    model.set_item_prior(prior)
    np.testing.assert_allclose(model.score_all(users), units_u[users] @ units_i.T + prior.astype(np.float32),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.score_all(users), plain_all + prior.astype(np.float32), atol=1e-6)
    np.testing.assert_allclose(model.score(users, items), plain_pairs + prior[items].astype(np.float32), atol=1e-6)
    np.testing.assert_allclose(model.forward(users, items), plain_pairs, atol=0)  # the training scores
    assert model.ranking_user_factors().shape == (7, 5) and model.ranking_item_factors().shape == (9, 5)
    np.testing.assert_array_equal(model.ranking_item_factors([2, 5])[:, -1], prior[[2, 5]].astype(np.float32))
    model.set_item_prior(None)
    np.testing.assert_array_equal(model.score_all(users), plain_all)


def test_recommend_and_the_evaluation_rank_by_the_score_plus_the_prior():
    model = cosine_mf(20, 30)
    prior = np.random.default_rng(1).normal(0, 0.5, 30)
    seen = sp.random(20, 30, density=0.2, random_state=2, format="csr", dtype=np.float32)
    seen.data[:] = 1
    model.set_item_prior(prior)
    expected = model.user_factors() @ model.item_factors().T + prior.astype(np.float32)
    for engine in ("compiled", "numpy"):
        ids, scores = model.recommend(np.arange(20), seen, N=5, engine=engine)
        masked = np.where(seen.toarray() > 0, -np.inf, expected)
        np.testing.assert_allclose(scores, -np.sort(-masked, axis=1)[:, :5], atol=1e-5)
    np.testing.assert_allclose(model_score_fn(model)(np.arange(20)), expected, atol=1e-5)


def test_fold_in_uses_the_factors_and_ranks_with_the_prior():
    model = cosine_mf(5, 12)
    prior = np.arange(12) * 0.1
    plain_vector = model.fold_in([1, 4])
    model.set_item_prior(prior)
    ids, scores = model.recommend_new([1, 4], N=3)
    np.testing.assert_allclose(model.fold_in([1, 4]), plain_vector)
    expected = model.item_factors() @ plain_vector + prior.astype(np.float32)
    expected[[1, 4]] = -np.inf
    np.testing.assert_array_equal(ids, np.argsort(-expected, kind="stable")[:3])
    np.testing.assert_allclose(scores, np.sort(expected)[::-1][:3], atol=1e-5)


def test_the_prior_is_saved_with_the_model_and_read_back(tmp_path):
    for model in (cosine_mf(), LightGCN(7, 9, dim=4, layers=2, rng=0,
                                        interactions=sp.csr_matrix(np.eye(7, 9, dtype=np.float32)))):
        model.set_item_prior(np.arange(9) * 0.25)
        loaded = load_model(model.save(tmp_path / f"{type(model).__name__}.npz"))
        np.testing.assert_array_equal(loaded.item_prior, model.item_prior)
        np.testing.assert_allclose(loaded.score_all(np.arange(7)), model.score_all(np.arange(7)), atol=1e-6)
    plain = cosine_mf()
    assert load_model(plain.save(tmp_path / "plain.npz")).item_prior is None


@pytest.mark.parametrize("prior, message", [(np.ones(8), "expected 9 finite numbers"),
                                            (np.full(9, np.nan), "expected 9 finite numbers"),
                                            (np.array(["a"] * 9), "expected 9 finite numbers")])
def test_a_bad_prior_is_refused(prior, message):
    with pytest.raises(ValueError, match=message):
        cosine_mf().set_item_prior(prior)


def test_a_model_file_with_a_non_finite_prior_is_refused(tmp_path):
    model = cosine_mf()
    model.set_item_prior(np.zeros(9))
    model.item_prior[3] = np.inf  # as a damaged file would hold it
    with pytest.raises(ValueError, match="buffer item_prior"):
        load_model(model.save(tmp_path / "bad.npz"))


def test_the_log_counts_and_the_grid():
    train = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0]], dtype=np.float32))
    np.testing.assert_allclose(log_counts(train), np.log1p([2, 1, 0]))
    model = cosine_mf(2, 3)
    popularity = log_counts(train)
    grid = beta_grid(model, np.arange(2), popularity)
    spread = np.mean(np.std(model.score_all(np.arange(2)), axis=1, dtype=np.float64))
    np.testing.assert_allclose(grid, [0.0] + [r * spread / np.std(popularity) for r in RATIOS], rtol=1e-6)


def test_auto_chooses_the_best_beta_on_validation_and_the_test_set_never_matters(data, one_thread, tmp_path):
    def fit(dataset, out):
        model = MF(data.n_users, data.n_items, dim=8, normalize=True, rng=0)
        trainer = Trainer(model, out_dir=out, progress=False, loss="ccl", epochs=3, lr=0.5, optimizer="hogwild",
                          negatives=8, popularity_prior="auto")
        return trainer, trainer.fit(dataset)

    trainer, result = fit(data, tmp_path / "a")
    search = result["prior_search"]
    values = {float(beta): value for beta, value in search["grid"].items()}
    assert search["popularity_prior"] == result["popularity_prior"] == trainer.popularity_prior
    assert search["recall@20"] == max(values.values())
    assert min(beta for beta, value in values.items() if value == max(values.values())) == \
        pytest.approx(search["popularity_prior"], rel=1e-5)
    assert len(values) == 1 + len(RATIOS)
    best = load_model(tmp_path / "a" / "best.npz")  # written again with the prior
    np.testing.assert_allclose(best.item_prior, result["popularity_prior"] * log_counts(data.train), rtol=1e-6)
    model = trainer.best_parameters()
    chosen = MF(data.n_users, data.n_items, dim=8, normalize=True, rng=0)
    chosen.load_state_dict(model)
    chosen.set_item_prior(result["popularity_prior"] * log_counts(data.train))
    ranked = full_ranking(model_score_fn(chosen), data.train, data.validation)
    assert ranked["recall@20"] == pytest.approx(search["recall@20"], abs=1e-12)
    test = json.loads((tmp_path / "a" / "test_metrics.json").read_text())
    assert test["popularity_prior"] == result["popularity_prior"]
    noise = sp.random(data.n_users, data.n_items, density=0.05, random_state=3, format="csr", dtype=np.float32)
    noise.data[:] = 1
    _, other = fit(dataclasses.replace(data, test=noise), tmp_path / "b")
    assert other["prior_search"] == search  # the same choice, whatever the test set holds


def test_a_fixed_beta_is_in_every_evaluation(data, one_thread):
    model = MF(data.n_users, data.n_items, dim=8, normalize=True, rng=0)
    trainer = Trainer(model, progress=False, loss="ccl", epochs=2, lr=0.5, optimizer="hogwild", negatives=8,
                      popularity_prior=0.05)
    result = trainer.fit(data)
    np.testing.assert_allclose(model.item_prior, 0.05 * log_counts(data.train), rtol=1e-6)
    assert result["popularity_prior"] == 0.05 and result["prior_search"] is None
    again = full_ranking(model_score_fn(model), data.train, data.validation)
    assert result["history"][-1]["recall@20"] == pytest.approx(again["recall@20"], abs=1e-12)


def test_the_setting_takes_auto_or_a_number_and_only_for_dot_product_models():
    assert check_value("popularity_prior", "auto") == "auto"
    assert check_value("popularity_prior", "0.01") == 0.01
    for bad in ("-1", "often", "nan"):
        with pytest.raises(SettingError, match="popularity_prior: expected auto or a number >= 0"):
            check_value("popularity_prior", bad)
    with pytest.raises(SettingError, match="popularity_prior: applies only with model"):
        resolve({"model": "neumf", "popularity_prior": "auto"})
    assert resolve({"model": "neumf"})["popularity_prior"] is None
    with pytest.raises(SettingError, match="popularity_prior: applies only with model"):
        Trainer(GMF(5, 6, dim=4, rng=0), popularity_prior=0.1)

    class ScaledGMF(GMF):  # a model class of one's own: no `model` setting to check it against
        pass

    with pytest.raises(ValueError, match="popularity_prior: ranks a dot-product model"):
        Trainer(ScaledGMF(5, 6, dim=4, rng=0), popularity_prior=0.1)


def test_train_reports_the_chosen_beta_and_the_refit_keeps_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "3", "--dim", "8", "--threads", "1", "--normalize", "true",
                 "--popularity-prior", "auto"]) == 0
    printed = capsys.readouterr().out
    assert "popularity prior: beta" in printed and "chosen on the validation split" in printed
    report = json.loads((out / "test_metrics.json").read_text())
    assert report["refit"] is True
    assert report["popularity_prior"] > 0  # the synthetic data's popular items: the prior pays there
    assert load_model(out / "best.npz").item_prior is not None  # the refit model, with the chosen beta
    assert main(["evaluate", "--run", str(out)]) == 0  # the saved model ranks as the run reported
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["model"]["recall@20"] == pytest.approx(report["recall@20"], abs=1e-12)


def test_recommend_and_its_faiss_index_rank_with_the_saved_prior(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "2", "--dim", "8", "--threads", "1", "--normalize", "true",
                 "--popularity-prior", "0.2", "--refit", "false"]) == 0
    capsys.readouterr()
    model = load_model(out / "best.npz")
    dataset = synthetic(seed=0)
    users = np.arange(0, 300, 15)
    assert main(["recommend", "--run", str(out), "--users", ",".join(str(dataset.user_ids[u]) for u in users),
                 "-n", "10"]) == 0
    exact = [line.split("\t")[1].split() for line in capsys.readouterr().out.splitlines()]
    with_prior = model.score_all(users)
    ids, _ = model.recommend(users, dataset.train[users], N=10)
    assert exact == [[str(dataset.item_ids[i]) for i in row] for row in ids]
    model.set_item_prior(None)
    plain, _ = model.recommend(users, dataset.train[users], N=10)
    assert not np.array_equal(plain, ids) and not np.allclose(with_prior, model.score_all(users))
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (the ann extra)")
    assert main(["recommend", "--run", str(out), "--users", ",".join(str(dataset.user_ids[u]) for u in users),
                 "-n", "10", "--index", "faiss"]) == 0
    approx = [line.split("\t")[1].split() for line in capsys.readouterr().out.splitlines()]
    assert np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)]) >= 0.95
