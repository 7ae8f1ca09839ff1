"""Refit on train + validation (recgrad.train.refit): the data it trains on, where it stops, that it
never sees the test set, its default rule, and the run directory `recgrad train` leaves."""

import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp

from recgrad.cli import main, resolve_config
from recgrad.data import synthetic, with_validation
from recgrad.train.refit import merged_training, refit, wants_refit


@pytest.fixture(scope="module")
def data():
    return with_validation(synthetic(n_users=200, n_items=150, popularity_skew=1.0, seed=1), ratio=0.1, seed=0)


def values(**flags):
    return resolve_config({}, {"data": "synthetic", "threads": 1, "epochs": 6, "dim": 8, **flags})


def test_the_merged_training_set_is_train_and_validation_and_nothing_else(data):
    merged = merged_training(data)
    assert merged.validation is None and merged.train_timestamps is None
    assert merged.train.nnz == data.train.nnz + data.validation.nnz
    assert (merged.train != (data.train + data.validation)).nnz == 0
    assert merged.train.has_sorted_indices
    with pytest.raises(ValueError, match="no validation set"):
        merged_training(merged)


def test_the_refit_follows_the_first_runs_schedule_and_stops_at_the_chosen_epoch(data, one_thread):
    settings = values()
    trainer = refit(settings, data, epochs=4)
    assert trainer.epoch == 4
    lrs = [record["lr"] for record in trainer.history]
    expected = [0.5 * 0.05 * (1 + np.cos(np.pi * e / 6)) for e in range(4)]  # the cosine over all 6 epochs
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert not any("recall@20" in record for record in trainer.history)  # nothing is evaluated
    assert trainer.train.nnz == data.train.nnz + data.validation.nnz


def test_the_refit_model_does_not_depend_on_the_test_set(data, one_thread):
    settings = values()
    rng = np.random.default_rng(5)
    noise = sp.random(data.n_users, data.n_items, density=0.05, random_state=rng, format="csr", dtype=np.float32)
    noise.data[:] = 1.0
    first = refit(settings, data, epochs=3).model.state_dict()
    second = refit(settings, dataclasses.replace(data, test=noise), epochs=3).model.state_dict()
    for name in first:
        assert np.array_equal(first[name], second[name])


def test_the_default_refits_where_validation_holds_a_tenth_of_the_data(data):
    assert wants_refit({"selection": "validation"}, data)
    assert not wants_refit({"selection": "test"}, data)
    assert not wants_refit({"selection": "validation"}, dataclasses.replace(data, validation=None))
    rows = np.repeat(np.arange(2_600), 100)  # 260,000 interactions: above the rule's 250,000
    large = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, np.tile(np.arange(100), 2_600))))
    held = sp.csr_matrix(large.shape, dtype=np.float32)
    assert not wants_refit({"selection": "validation"}, dataclasses.replace(
        data, train=large, validation=held, test=None, user_ids=np.arange(2_600), item_ids=np.arange(100),
        train_timestamps=None))


def test_train_keeps_the_refit_model_and_reports_both_on_test(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "4", "--dim", "8", "--threads", "1"]) == 0
    printed = capsys.readouterr()
    assert "refitting on train + validation for" in printed.err
    assert "(selected)" in printed.out and "refit (" in printed.out
    report = json.loads((out / "test_metrics.json").read_text())
    assert report["refit"] is True and set(report["selected_model"]) == {"recall@20", "ndcg@20"}
    assert main(["evaluate", "--run", str(out)]) == 0  # best.npz is the refit model: the same test numbers
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["model"]["recall@20"] == pytest.approx(report["recall@20"], abs=1e-12)

    kept = tmp_path / "kept"
    assert main(["train", "--out", str(kept), "--epochs", "4", "--dim", "8", "--threads", "1",
                 "--refit", "false"]) == 0
    assert "refit" not in json.loads((kept / "test_metrics.json").read_text())
    assert main(["train", "--out", str(tmp_path / "x"), "--selection", "test", "--refit", "true"]) == 2
    assert "refit: applies only with selection 'validation'" in capsys.readouterr().err
