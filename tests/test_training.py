"""Trainer: learning beats popularity, every loss path learns, L2 and log-Q formulas, exact resume, run files."""

import json
import os
import signal

import numpy as np
import pytest
import scipy.sparse as sp

from recgrad.data import Dataset, synthetic
from recgrad.engine import default_engine_set
from recgrad.models import MF
from recgrad.optim.sgd import SGD
from recgrad.samplers import PopularitySampler
from recgrad.train import Callback, Trainer
from recgrad.train.checkpoint import CheckpointError, atomic_write, load_checkpoint


@pytest.fixture(scope="module")
def data():
    return synthetic(n_users=300, n_items=200, dim=8, interactions_per_user=20, seed=0)


def mf(data, sparse=True, seed=0, dtype=np.float32):
    return MF(data.n_users, data.n_items, dim=16, sparse=sparse, rng=seed, dtype=dtype)


def losses(result):
    return [record["loss"] for record in result["history"]]


def test_mf_bpr_beats_popularity_in_a_few_epochs(data):
    result = Trainer(mf(data), loss="bpr", optimizer="sparse_adam", lr=0.03, batch_size=256, epochs=5,
                     progress=False).fit(data)
    assert result["eval_split"] == "test" and result["best_metric"] == "recall@20"
    assert result["best_value"] > 1.3 * result["popularity"]["recall@20"]  # 0.50 vs 0.27 when written
    assert losses(result)[-1] < losses(result)[0]
    assert result["best_metrics"]["recall@20"] == result["best_value"]


@pytest.mark.parametrize("settings", [
    {"loss": "bce"},
    {"loss": "bpr", "negatives": 3, "negatives_mode": "shared", "optimizer": "adam"},
    {"loss": "infonce", "negatives": 16},
    {"loss": "infonce", "negatives": 32, "negatives_mode": "shared", "similarity": "cosine"},
    {"loss": "infonce", "negatives_mode": "in_batch", "logq_correction": True},
    {"loss": "infonce", "negatives": 32, "negatives_mode": "shared", "similarity": "cosine",
     "logq_correction": True, "sampler": "popularity"},
    {"loss": "infonce", "negatives": 16, "dns_candidates": 4, "similarity": "cosine"},
])
def test_every_loss_path_reduces_the_loss(data, settings):
    settings = {"optimizer": "sparse_adam", **settings}
    model = mf(data, sparse=settings["optimizer"] == "sparse_adam")
    result = Trainer(model, lr=0.01, batch_size=256, epochs=3, l2=1e-4, eval_every=3, progress=False,
                     **settings).fit(data)
    assert losses(result)[-1] < 0.95 * losses(result)[0]
    assert result["best_value"] > 0


def test_two_tower_trains_with_infonce(data):
    from recgrad.models.two_tower import TwoTower

    model = TwoTower(data.n_users, data.n_items, dim=16, hidden=(16,), rng=0)
    result = Trainer(model, loss="infonce", optimizer="sparse_adam", lr=0.01, negatives=16, batch_size=256,
                     epochs=2, eval_every=2, progress=False).fit(data)
    assert losses(result)[-1] < losses(result)[0]


def test_dense_adam_on_a_sparse_model_equals_a_dense_model(data):
    # The NumPy loop's "adam" expands row-sparse gradients to the dense table: the same numbers as sparse=False.
    runs = []
    for sparse in (True, False):
        model = mf(data, sparse=sparse, dtype=np.float64)
        Trainer(model, optimizer="adam", lr=0.01, batch_size=512, epochs=1, l2=1e-3, engine="numpy",
                progress=False).fit(data)
        runs.append(model.state_dict())
    for name in runs[0]:
        np.testing.assert_allclose(runs[0][name], runs[1][name], rtol=1e-12, atol=1e-15)


def test_l2_gradient_is_lightgcn_batch_formula(data):
    # One SGD step with and without l2 on the same batch: the difference is -lr * l2 * e / B per
    # looked-up row occurrence (user once, positive and negative items once each).
    batch, lr, l2 = 64, 0.5, 0.1
    steps = []
    for penalty in (0.0, l2):
        model = mf(data, dtype=np.float64)
        trainer = Trainer(model, optimizer=SGD(model.parameters(), lr=lr), batch_size=batch, epochs=1, l2=penalty,
                          progress=False)
        trainer.prepare(data)
        users = np.arange(batch)
        positives = data.train.indices[data.train.indptr[users]]
        before = {k: v.copy() for k, v in model.state_dict().items()}
        loss = trainer.train_batch(users, positives)
        negatives = model.item_embedding.cache[:, 1]
        steps.append((before, model.state_dict(), loss))
    (before, plain, plain_loss), (_, regularised, reg_loss) = steps
    P, Q = before["user_embedding.weight"], before["item_embedding.weight"]
    expected_user = np.zeros_like(P)
    np.add.at(expected_user, users, -lr * l2 * P[users] / batch)
    expected_item = np.zeros_like(Q)
    np.add.at(expected_item, positives, -lr * l2 * Q[positives] / batch)
    np.add.at(expected_item, negatives, -lr * l2 * Q[negatives] / batch)
    np.testing.assert_allclose(regularised["user_embedding.weight"] - plain["user_embedding.weight"], expected_user,
                               atol=1e-14)
    np.testing.assert_allclose(regularised["item_embedding.weight"] - plain["item_embedding.weight"], expected_item,
                               atol=1e-14)
    penalty = 0.5 * l2 * (np.sum(P[users] ** 2) + np.sum(Q[positives] ** 2) + np.sum(Q[negatives] ** 2)) / batch
    np.testing.assert_allclose(reg_loss - plain_loss, penalty, rtol=1e-10)


def test_logq_with_a_uniform_sampler_changes_nothing(data):
    # log q is a constant for the uniform sampler: softmax is shift invariant.
    states = []
    for correction in (False, True):
        model = mf(data, dtype=np.float64)
        Trainer(model, loss="infonce", negatives=8, negatives_mode="shared", logq_correction=correction,
                optimizer="sparse_adam", batch_size=512, epochs=1, progress=False).fit(data)
        states.append(model.state_dict())
    for name in states[0]:
        np.testing.assert_allclose(states[0][name], states[1][name], rtol=1e-9, atol=1e-12)


def run(data, out_dir, epochs, resume=False, interrupt_at=None, model=None, **settings):
    settings = {"loss": "bpr", "optimizer": "sparse_adam", "lr": 0.01, "batch_size": 512, "negatives": 2,
                "l2": 1e-4, "sampler": "popularity", "engine": "numpy", **settings}
    model = mf(data) if model is None else model()
    trainer = Trainer(model, epochs=epochs, out_dir=out_dir, progress=False, seed=3, **settings)
    if interrupt_at is not None:
        original = PopularitySampler.sample
        calls = []

        def sample_then_interrupt(self, users, k):
            calls.append(1)
            if len(calls) == interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)
            return original(self, users, k)

        PopularitySampler.sample = sample_then_interrupt
        try:
            with pytest.raises(KeyboardInterrupt):
                trainer.fit(data, resume=resume)
        finally:
            PopularitySampler.sample = original
        return model, None
    return model, trainer.fit(data, resume=resume)


def without_timings(history):
    return [{k: v for k, v in r.items() if k not in ("train_seconds", "samples_per_second", "eval_seconds")}
            for r in history]


@pytest.mark.parametrize("epoch_sampling", ["interactions", "users"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(data, tmp_path, epoch_sampling, one_thread):
    straight, expected = run(data, tmp_path / "straight", epochs=3, epoch_sampling=epoch_sampling)
    run(data, tmp_path / "stopped", epochs=2, epoch_sampling=epoch_sampling)  # stops at an epoch boundary
    run(data, tmp_path / "stopped", epochs=3, resume=True, interrupt_at=4,
        epoch_sampling=epoch_sampling)  # Ctrl-C mid-epoch 3
    resumed, result = run(data, tmp_path / "stopped", epochs=3, resume=True, epoch_sampling=epoch_sampling)
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value)
    assert without_timings(result["history"]) == without_timings(expected["history"])
    lines = (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_resume_with_two_optimizers_is_bit_identical(data, tmp_path, one_thread):
    # NeuMF under sparse_adam: SparseAdam on the tables and Adam on the MLP, both checkpointed.
    from recgrad.models import NeuMF

    def neumf():
        return NeuMF(data.n_users, data.n_items, rng=0)

    straight, _ = run(data, tmp_path / "straight", epochs=2, model=neumf, loss="bce")
    run(data, tmp_path / "stopped", epochs=1, model=neumf, loss="bce")
    resumed, _ = run(data, tmp_path / "stopped", epochs=2, resume=True, model=neumf, loss="bce")
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value)


@pytest.mark.parametrize("model_name", ["GMF", "NeuMF"])
def test_ncf_models_learn_with_bce(data, model_name):
    import recgrad.models

    model = getattr(recgrad.models, model_name)(data.n_users, data.n_items, rng=0)
    result = Trainer(model, loss="bce", optimizer="sparse_adam", lr=0.01, batch_size=256, epochs=3, l2=1e-5,
                     eval_every=3, progress=False).fit(data)
    assert losses(result)[-1] < 0.8 * losses(result)[0]
    assert result["best_value"] > result["popularity"]["recall@20"]


def test_interrupt_writes_a_checkpoint_and_resume_refuses_other_settings(data, tmp_path):
    run(data, tmp_path, epochs=2, interrupt_at=2)
    assert (tmp_path / "checkpoint.npz").exists()
    state = load_checkpoint(str(tmp_path / "checkpoint.npz"))
    assert state["epoch"] == 0 and state["batch"] == 2
    with pytest.raises(ValueError, match="batch_size=512"):
        run(data, tmp_path, epochs=2, resume=True, batch_size=256)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        run(data, tmp_path / "empty", epochs=1, resume=True)


def test_run_directory_files(data, tmp_path):
    _, result = run(data, tmp_path, epochs=2, eval_every=2)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # fit put Python's handler back
    names = sorted(os.listdir(tmp_path))
    assert names == ["best.npz", "checkpoint.npz", "last.npz", "learning_curve.png", "metrics.jsonl"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        assert {"epoch", "loss", "train_seconds", "samples_per_second"} <= set(record)
    assert "recall@20" not in records[0] and {"recall@20", "ndcg@20"} <= set(records[1])
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = MF.load(str(tmp_path / "best.npz"))
    assert best.n_items == 200 and result["best_epoch"] == 2


def test_atomic_write_leaves_the_old_file_and_no_temp_file_on_failure(tmp_path):
    target = tmp_path / "checkpoint.npz"
    target.write_bytes(b"old")

    def failing(handle):
        handle.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(target), failing)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["checkpoint.npz"]
    atomic_write(str(target), lambda handle: handle.write(b"new"))
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["checkpoint.npz"]


def test_early_stopping_stops(data):
    # A learning rate too small to change the top-20 lists: no strict gain after the first evaluation.
    result = Trainer(mf(data), optimizer="sparse_adam", lr=1e-9, batch_size=1024, epochs=10, patience=2,
                     progress=False).fit(data)
    assert result["stopped_early"] and result["epochs_run"] == 3 and result["best_epoch"] == 1


def test_validation_and_sampled_protocols(data):
    train = data.train.tocsr()
    # Validation present: evaluate on it. Sampled (NCF) protocol when there is test_negatives.
    with_validation = Dataset(train=train, user_ids=data.user_ids, item_ids=data.item_ids, test=data.test,
                              validation=data.test)
    trainer = Trainer(mf(data), epochs=1, topk=[5], progress=False)
    result = trainer.fit(with_validation)
    assert result["eval_split"] == "validation" and trainer.topk == (5, 20)
    rng = np.random.default_rng(0)
    test_users = np.arange(data.n_users)
    test_items = data.test.indices[data.test.indptr[:-1]]
    ncf = Dataset(train=train, user_ids=data.user_ids, item_ids=data.item_ids, test_users=test_users,
                  test_items=test_items, test_negatives=rng.integers(0, data.n_items, (data.n_users, 99)))
    result = Trainer(mf(data), loss="bce", optimizer="sparse_adam", lr=0.03, epochs=5, batch_size=256,
                     progress=False).fit(ncf)
    assert result["eval_protocol"] == "sampled" and result["best_metric"] == "ndcg@10"
    assert result["best_value"] > result["popularity"]["ndcg@10"]


def test_arguments_that_do_not_apply_are_refused(data):
    model = mf(data)
    with pytest.raises(ValueError, match="temperature"):
        Trainer(model, loss="bpr", temperature=0.1)
    with pytest.raises(ValueError, match="in_batch"):
        Trainer(model, loss="bpr", negatives_mode="in_batch")
    with pytest.raises(ValueError, match="negatives"):
        Trainer(model, loss="infonce", negatives_mode="in_batch", negatives=5)
    with pytest.raises(ValueError, match="popularity_alpha"):
        Trainer(model, popularity_alpha=0.5)
    with pytest.raises(ValueError, match="optimizer"):
        Trainer(model, optimizer="rmsprop")
    with pytest.raises(ValueError, match="sparse=True"):
        Trainer(mf(data, sparse=False), optimizer="sparse_adam", epochs=1, progress=False).fit(data)
    with pytest.raises(ValueError, match="metric"):
        Trainer(model, metric="auc", epochs=1, progress=False).fit(data)
    with pytest.raises(ValueError, match="dataset"):
        Trainer(MF(3, 4, dim=2), epochs=1, progress=False).fit(data)
    with pytest.raises(ValueError, match="dns_candidates"):
        Trainer(model, dns_candidates=0)
    with pytest.raises(ValueError, match="dns_candidates"):
        Trainer(model, loss="infonce", negatives_mode="shared", dns_candidates=4)
    with pytest.raises(ValueError, match="logq_correction"):
        Trainer(model, loss="infonce", dns_candidates=4, logq_correction=True)


def test_mf_bpr_with_dynamic_negative_sampling_beats_popularity(data):
    """Its BPR loss need not fall (the chosen negatives get harder as the model learns); recall rises."""
    result = Trainer(mf(data), loss="bpr", optimizer="sparse_adam", lr=0.03, batch_size=256, epochs=5,
                     dns_candidates=8, progress=False).fit(data)
    assert result["best_value"] > 1.3 * result["popularity"]["recall@20"]


@pytest.mark.torch
def test_mf_bpr_dense_adam_with_l2_matches_pytorch(data):
    # The LightGCN recipe written in PyTorch (nn.Embedding + Adam, batch-embedding L2), fed the
    # same batches and negatives: parameters agree after 20 steps.
    torch = pytest.importorskip("torch")
    model = mf(data, sparse=False, dtype=np.float64)
    trainer = Trainer(model, optimizer="adam", lr=0.01, batch_size=128, epochs=1, l2=1e-2, progress=False)
    trainer.prepare(data)
    P = torch.nn.Parameter(torch.tensor(model.user_embedding.weight.data.copy()))
    Q = torch.nn.Parameter(torch.tensor(model.item_embedding.weight.data.copy()))
    optimizer = torch.optim.Adam([P, Q], lr=0.01)
    for step, (users, positives) in enumerate(trainer_batches(data, 128)):
        if step == 20:
            break
        state = trainer.sampler.state_dict()
        ours = trainer.train_batch(users, positives)
        trainer.sampler.load_state_dict(state)
        negatives = torch.tensor(trainer.sampler.sample(users, 1)[:, 0])
        u, i, j = P[torch.tensor(users)], Q[torch.tensor(positives)], Q[negatives]
        loss = torch.nn.functional.softplus((u * j).sum(1) - (u * i).sum(1)).mean()
        loss = loss + 1e-2 * 0.5 * (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum()) / len(users)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        np.testing.assert_allclose(ours, loss.item(), rtol=1e-6)
    np.testing.assert_allclose(model.user_embedding.weight.data, P.detach().numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.item_embedding.weight.data, Q.detach().numpy(), rtol=1e-6, atol=1e-9)


def trainer_batches(data, batch_size):
    from recgrad.samplers import epoch_batches

    return epoch_batches(data.train, batch_size, np.random.default_rng(0))


def test_cosine_lr_schedule_follows_the_closed_form_per_epoch(data):
    lr, lr_min, epochs = 0.02, 0.002, 4
    trainer = Trainer(mf(data), loss="bpr", optimizer="sparse_adam", lr=lr, lr_schedule="cosine", lr_min=lr_min,
                      batch_size=512, epochs=epochs, eval_every=epochs, progress=False)
    result = trainer.fit(data)
    expected = [lr_min + (lr - lr_min) * (1 + np.cos(np.pi * e / epochs)) / 2 for e in range(epochs)]
    np.testing.assert_allclose([r["lr"] for r in result["history"]], expected, rtol=1e-12)
    constant = Trainer(mf(data), optimizer="adam", lr=lr, batch_size=512, epochs=2, eval_every=2,
                       progress=False).fit(data)
    assert [r["lr"] for r in constant["history"]] == [lr, lr]
    with pytest.raises(ValueError, match="lr_schedule"):
        Trainer(mf(data), lr_schedule="step")
    with pytest.raises(ValueError, match="lr_min"):
        Trainer(mf(data), lr_schedule="constant", lr_min=1e-4)
    with pytest.raises(ValueError, match="lr_min"):
        Trainer(mf(data), lr=1e-3, lr_schedule="cosine", lr_min=1e-3)


def test_resume_continues_the_cosine_schedule_exactly(data, tmp_path, one_thread):
    # Two optimizers (NeuMF under sparse_adam) so that each scheduler's state must come back.
    from recgrad.models import NeuMF

    def neumf():
        return NeuMF(data.n_users, data.n_items, rng=0)

    schedule = {"model": neumf, "loss": "bce", "lr_schedule": "cosine", "lr_min": 1e-3}
    straight, expected = run(data, tmp_path / "straight", epochs=3, **schedule)
    run(data, tmp_path / "stopped", epochs=3, interrupt_at=14, **schedule)  # Ctrl-C in epoch 2 (10 batches an epoch)
    resumed, result = run(data, tmp_path / "stopped", epochs=3, resume=True, **schedule)
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value)
    assert without_timings(result["history"]) == without_timings(expected["history"])
    with pytest.raises(ValueError, match="lr_schedule"):
        run(data, tmp_path / "stopped", epochs=4, resume=True, model=neumf, loss="bce")


@pytest.mark.parametrize("optimizer", ["sparse_adam", "hogwild"])
def test_compiled_loop_resumes_exactly_at_epoch_boundaries(data, tmp_path, optimizer, one_thread):
    # one_thread: hogwild is bit-reproducible with one thread
    settings = {"engine": "compiled", "optimizer": optimizer, "lr": 0.05 if optimizer == "hogwild" else 0.01,
                "lr_schedule": "constant", "batch_size": None if optimizer == "hogwild" else 512}
    straight, expected = run(data, tmp_path / "straight", epochs=3, **settings)
    run(data, tmp_path / "stopped", epochs=2, **settings)
    resumed, result = run(data, tmp_path / "stopped", epochs=3, resume=True, **settings)
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value)
    assert without_timings(result["history"]) == without_timings(expected["history"])
    assert losses(result)[-1] < losses(result)[0]


def test_compiled_loop_follows_the_numpy_loop(data):
    # Same lazy Adam, same batches; the negatives come from different streams, so compare the curve.
    curves = {}
    for engine in ("numpy", "compiled"):
        _, result = run(data, None, epochs=4, engine=engine, sampler="uniform")
        curves[engine] = np.array(losses(result))
    np.testing.assert_allclose(curves["compiled"], curves["numpy"], rtol=0.05)


def test_the_compiled_loop_is_the_default_where_it_applies(data):
    model = mf(data)
    trainer = Trainer(model, optimizer="sparse_adam", epochs=1, progress=False)
    trainer.prepare(data)
    assert trainer.compiled is not None
    with default_engine_set("numpy"):
        trainer.prepare(data)
    assert trainer.compiled is None
    trainer = Trainer(model, optimizer="sparse_adam", engine="numpy", epochs=1, progress=False)
    trainer.prepare(data)
    assert trainer.compiled is None


@pytest.mark.parametrize("settings", [
    {"negatives_mode": "in_batch", "loss": "infonce"},
    {"model": "GMF"},
])
def test_what_the_compiled_loop_does_not_cover_runs_the_reference_with_a_notice(data, settings, capsys):
    import recgrad.models

    settings = dict(settings)
    model = getattr(recgrad.models, settings.pop("model", "MF"))(data.n_users, data.n_items, sparse=True, rng=0)
    trainer = Trainer(model, engine="compiled", progress=False, **{"optimizer": "sparse_adam", **settings})
    trainer.prepare(data)
    assert trainer.compiled is None
    assert "notice: the compiled path does not cover" in capsys.readouterr().err


def test_hogwild_reference_is_sgd_one_interaction_at_a_time(data):
    trainer = Trainer(mf(data), optimizer="hogwild", engine="numpy", epochs=1, progress=False)
    trainer.prepare(data)
    assert trainer.compiled is None and trainer.batch_size == 1
    assert type(trainer.optimizers[0]).__name__ == "SGD"
    with pytest.raises(ValueError, match="hogwild"):
        Trainer(recgrad_models().GMF(data.n_users, data.n_items, rng=0), optimizer="hogwild")
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(mf(data), optimizer="hogwild", batch_size=64)


def recgrad_models():
    import recgrad.models

    return recgrad.models


def test_a_callback_of_ones_own_sees_every_epoch(data, tmp_path):
    class Log(Callback):
        def __init__(self):
            self.lines = []

        def on_epoch_end(self, trainer, record):
            self.lines.append((record["epoch"], round(record["loss"], 6), "recall@20" in record))

    log = Log()
    Trainer(mf(data), epochs=3, eval_every=2, progress=False, callbacks=[log]).fit(data)
    assert [line[0] for line in log.lines] == [1, 2, 3]
    assert [line[2] for line in log.lines] == [False, True, True]  # evaluation ran before it


def test_selection_on_validation_never_looks_at_the_test_set(data):
    # Two data sets with the same training interactions and different test items: the validation
    # split, the chosen epoch and the model are the same; only the once-evaluated test numbers move.
    from recgrad.data import with_validation

    rng = np.random.default_rng(5)
    noise = sp.csr_matrix((np.ones(data.n_users, dtype=np.float32),
                           (np.arange(data.n_users), rng.integers(0, data.n_items, data.n_users))),
                          shape=data.test.shape)
    runs = []
    for test in (data.test, noise):
        dataset = with_validation(Dataset(train=data.train, test=test, user_ids=data.user_ids,
                                          item_ids=data.item_ids), ratio=0.1, seed=0)
        model = mf(data)
        trainer = Trainer(model, optimizer="sparse_adam", lr=0.05, batch_size=256, epochs=6, patience=2,
                          progress=False)
        runs.append((trainer.fit(dataset), model.state_dict()))
    (real, real_model), (fake, fake_model) = runs
    assert real["eval_split"] == "validation" and real["test_protocol"] == "full"
    assert real["best_epoch"] == fake["best_epoch"] and real["history"][-1]["loss"] == fake["history"][-1]["loss"]
    for name in real_model:
        np.testing.assert_array_equal(real_model[name], fake_model[name])
    assert real["test_metrics"]["recall@20"] > 2 * fake["test_metrics"]["recall@20"]


def test_selection_on_test_is_the_papers_protocol(data):
    from recgrad.data import with_validation

    dataset = with_validation(data, ratio=0.1, seed=0)
    result = Trainer(mf(data), optimizer="sparse_adam", epochs=1, selection="test", progress=False).fit(dataset)
    assert result["eval_split"] == "test" and result["test_metrics"] is None
