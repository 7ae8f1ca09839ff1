"""The compiled MF training loop against the NumPy Trainer: same losses and parameters, sampler
guarantees and distributions, learning on synthetic data, seeded reproducibility."""

import numpy as np
import pytest
import scipy.sparse as sp

from recgrad import kernels
from recgrad.data import synthetic
from recgrad.evaluation import evaluate_baseline, evaluate_recommender
from recgrad.models import MF
from recgrad.optim.adam import Adam
from recgrad.optim.sgd import SGD
from recgrad.optim.sparse_adam import SparseAdam
from recgrad.samplers import EPOCH_SAMPLING, PopularitySampler, UniformSampler, epoch_batches, sample_negatives
from recgrad.train import Callback, Trainer
from recgrad.train.compiled_mf import SHARED_NEGATIVES_MAX, CompiledMFLoop


@pytest.fixture(scope="module")
def small():
    return synthetic(n_users=120, n_items=90, dim=8, interactions_per_user=12, seed=1)


@pytest.fixture(scope="module")
def data():
    return synthetic(n_users=600, n_items=400, dim=8, interactions_per_user=20, seed=0)


def recording(sampler_class):
    """The reference sampler class, keeping every block of negatives it hands out (per user or shared)."""

    class Recording(sampler_class):
        def __init__(self, train, seed):
            super().__init__(train, seed=seed)
            self.drawn = []

        def sample(self, users, k):
            out = super().sample(users, k)
            self.drawn.append(out.copy())
            return out

        def sample_shared(self, k):
            out = super().sample_shared(k)
            self.drawn.append(out.copy())
            return out

    return Recording


RecordingSampler = recording(UniformSampler)


class BatchLosses(Callback):
    def __init__(self):
        self.losses = []

    def on_batch_end(self, trainer, loss, size):
        self.losses.append(loss)


def reference_epoch(data, settings, batch_size, seed=3, normalize=False, dtype=np.float32):
    """One epoch of the NumPy Trainer, batch by batch: (model, per-batch losses, negatives drawn:
    (nnz, K) per user, (n_batches, K) shared)."""
    settings = dict(settings)
    model = MF(data.n_users, data.n_items, dim=16, normalize=normalize, rng=7, dtype=dtype)
    sampler_class = PopularitySampler if settings.pop("sampler", "uniform") == "popularity" else UniformSampler
    sampler = recording(sampler_class)(data.train, seed=11)
    recorder = BatchLosses()
    if settings["optimizer"] != "hogwild":
        settings = {**settings, "batch_size": batch_size}
    trainer = Trainer(model, sampler=sampler, seed=seed, epochs=1, eval_every=10, engine="numpy", progress=False,
                      callbacks=[recorder], **settings)
    trainer.fit(data)
    losses = np.array(recorder.losses)
    if settings.get("negatives_mode") == "shared":
        return model, losses, np.stack(sampler.drawn)
    return model, losses, np.concatenate(sampler.drawn).reshape(data.train.nnz, -1)


def assert_close(actual, expected, rtol=1e-5):
    """Relative to the array's scale: max |a - e| <= rtol * max |e| (float32 parity)."""
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(actual - expected)) <= rtol * scale, np.max(np.abs(actual - expected)) / scale


@pytest.mark.parametrize("settings", [
    {"loss": "bpr", "l2": 1e-2},
    {"loss": "bpr", "negatives": 3, "l2": 1e-3, "weight_decay": 0.05},
    {"loss": "bce", "negatives": 4, "l2": 1e-3},
    {"loss": "infonce", "negatives": 5, "temperature": 0.2},
    {"loss": "infonce", "negatives": 4, "similarity": "cosine", "temperature": 0.5, "l2": 1e-3},
    # MF(normalize=True): cosine scores for every loss; a cosine InfoNCE on it normalises unit rows again
    {"loss": "bpr", "negatives": 3, "l2": 1e-3, "normalize": True},
    {"loss": "bce", "negatives": 4, "normalize": True},
    {"loss": "infonce", "negatives": 4, "temperature": 0.5, "normalize": True},
    {"loss": "infonce", "negatives": 4, "similarity": "cosine", "temperature": 0.5, "normalize": True},
    # CCL: margin 0.2 leaves some of the random negatives' cosines above it, some below
    {"loss": "ccl", "negatives": 6, "margin": 0.2, "negative_weight": 10.0, "l2": 1e-3},
    {"loss": "ccl", "negatives": 6, "margin": 0.2, "negative_weight": 10.0, "normalize": True},
])
def test_lazy_adam_matches_the_reference_trainer(small, settings, one_thread):
    settings = {"optimizer": "sparse_adam", "lr": 0.05, **settings}
    normalize = settings.pop("normalize", False)
    reference, ref_losses, negatives = reference_epoch(small, settings, batch_size=64, normalize=normalize)
    model = MF(small.n_users, small.n_items, dim=16, normalize=normalize, rng=7)
    fused = CompiledMFLoop(model, small.train, batch_size=64, seed=3, **settings)
    result = fused.train_epoch(negatives=negatives)
    assert result["batch_losses"].shape == ref_losses.shape
    np.testing.assert_allclose(result["batch_losses"], ref_losses, rtol=1e-5)
    # The normalisation adds float32 rounding that Adam's 1/sqrt(v) amplifies over the epoch's steps
    # (in float64 the normalised paths agree to 3e-14).
    rtol = 3e-5 if normalize else 1e-5
    assert_close(model.user_embedding.weight.data, reference.user_embedding.weight.data, rtol)
    assert_close(model.item_embedding.weight.data, reference.item_embedding.weight.data, rtol)
    state = fused.optimizer.state
    assert state[0]["step"] == state[1]["step"] == ref_losses.size


def test_hogwild_sgd_is_the_batch_size_one_reference_step(small, one_thread):
    """With one thread, hogwild SGD = the Trainer's SGD at batch_size=1 (LightGCN L2 at B = 1)."""
    settings = {"loss": "bpr", "optimizer": "hogwild", "lr": 0.05, "l2": 1e-2, "weight_decay": 0.0}
    reference, ref_losses, negatives = reference_epoch(small, settings, batch_size=1)
    model = MF(small.n_users, small.n_items, dim=16, rng=7)
    fused = CompiledMFLoop(model, small.train, loss="bpr", optimizer="hogwild", lr=0.05, l2=1e-2, seed=3)
    result = fused.train_epoch(negatives=negatives)
    np.testing.assert_allclose(result["loss"], ref_losses.mean(), rtol=1e-5)
    assert_close(model.user_embedding.weight.data, reference.user_embedding.weight.data)
    assert_close(model.item_embedding.weight.data, reference.item_embedding.weight.data)


def test_hogwild_ccl_is_the_batch_size_one_reference_step(small, one_thread):
    """One negative per sample (hogwild updates an item that occurs twice in a sample twice in sequence,
    the reference once with the summed gradient: with one negative no item can), float64: equal to rounding."""
    settings = {"loss": "ccl", "optimizer": "hogwild", "lr": 0.05, "l2": 1e-3, "weight_decay": 0.0, "negatives": 1,
                "margin": 0.0, "negative_weight": 2.0}
    reference, ref_losses, negatives = reference_epoch(small, settings, batch_size=1, normalize=True,
                                                       dtype=np.float64)
    model = MF(small.n_users, small.n_items, dim=16, normalize=True, rng=7, dtype=np.float64)
    result = CompiledMFLoop(model, small.train, seed=3, **settings).train_epoch(negatives=negatives)
    np.testing.assert_allclose(result["loss"], ref_losses.mean(), rtol=1e-12)
    assert_close(model.user_embedding.weight.data, reference.user_embedding.weight.data, 1e-12)
    assert_close(model.item_embedding.weight.data, reference.item_embedding.weight.data, 1e-12)


@pytest.mark.parametrize("settings", [
    {"loss": "bpr", "negatives": 2, "dns_candidates": 4, "l2": 1e-3},
    {"loss": "bce", "negatives": 3, "dns_candidates": 3},
    {"loss": "infonce", "negatives": 4, "dns_candidates": 2, "temperature": 0.5},
    {"loss": "bpr", "negatives": 1, "dns_candidates": 5, "normalize": True},
])
def test_dynamic_negative_sampling_matches_the_reference_trainer(small, settings, one_thread):
    """DNS: given the same candidates, the kernel chooses the negatives the Trainer's model.score picks."""
    settings = {"optimizer": "sparse_adam", "lr": 0.05, **settings}
    normalize = settings.pop("normalize", False)
    reference, ref_losses, candidates = reference_epoch(small, settings, batch_size=64, normalize=normalize)
    assert candidates.shape == (small.train.nnz, settings["negatives"] * settings["dns_candidates"])
    model = MF(small.n_users, small.n_items, dim=16, normalize=normalize, rng=7)
    result = CompiledMFLoop(model, small.train, batch_size=64, seed=3, **settings).train_epoch(negatives=candidates)
    np.testing.assert_allclose(result["batch_losses"], ref_losses, rtol=1e-5)
    assert_close(model.user_embedding.weight.data, reference.user_embedding.weight.data, 3e-5)
    assert_close(model.item_embedding.weight.data, reference.item_embedding.weight.data, 3e-5)


def test_dynamic_negative_sampling_in_hogwild_sgd_is_the_batch_size_one_reference(small, one_thread):
    settings = {"loss": "bpr", "optimizer": "hogwild", "lr": 0.05, "l2": 1e-2, "weight_decay": 0.0, "negatives": 1,
                "dns_candidates": 4}
    reference, ref_losses, candidates = reference_epoch(small, settings, batch_size=1)
    model = MF(small.n_users, small.n_items, dim=16, rng=7)
    fused = CompiledMFLoop(model, small.train, loss="bpr", optimizer="hogwild", lr=0.05, l2=1e-2, negatives=1,
                           dns_candidates=4, seed=3)
    result = fused.train_epoch(negatives=candidates)
    np.testing.assert_allclose(result["loss"], ref_losses.mean(), rtol=1e-5)
    assert_close(model.user_embedding.weight.data, reference.user_embedding.weight.data)
    assert_close(model.item_embedding.weight.data, reference.item_embedding.weight.data)


# ------------------------------------------------------------ dense optimizers and shared negatives
def compare_epoch(data, settings, dtype, rtol):
    """One epoch of the compiled loop against the NumPy Trainer on its batches and negatives; returns the loop."""
    settings = {"lr": 0.05, **settings}
    normalize = settings.pop("normalize", False)
    reference, ref_losses, negatives = reference_epoch(data, settings, batch_size=64, normalize=normalize, dtype=dtype)
    model = MF(data.n_users, data.n_items, dim=16, normalize=normalize, rng=7, dtype=dtype)
    loop = CompiledMFLoop(model, data.train, batch_size=64, seed=3, **settings)
    result = loop.train_epoch(negatives=negatives)
    np.testing.assert_allclose(result["batch_losses"], ref_losses, rtol=rtol)
    assert_close(model.user_embedding.weight.data, reference.user_embedding.weight.data, rtol)
    assert_close(model.item_embedding.weight.data, reference.item_embedding.weight.data, rtol)
    return loop


# float32: dense Adam moves rows with no gradient on m / sqrt(v), which amplifies the rounding of the
# summed gradients (1.7e-5 of the scale at most when written); float64 agrees to 1e-13.
FLOAT_TOLERANCES = [(np.float32, 3e-5), (np.float64, 1e-12)]


@pytest.mark.parametrize("settings", [
    {"optimizer": "adam", "loss": "bpr", "l2": 1e-2},
    {"optimizer": "adam", "loss": "bce", "negatives": 3, "weight_decay": 1e-2},  # Adam's L2 in the gradient
    {"optimizer": "adam", "loss": "infonce", "negatives": 4, "similarity": "cosine", "temperature": 0.5,
     "normalize": True, "l2": 1e-3},
    {"optimizer": "adam", "loss": "bpr", "negatives": 2, "dns_candidates": 3},
    {"optimizer": "adamw", "loss": "bpr", "negatives": 2, "l2": 1e-3},  # AdamW's default decay, 1e-2
    {"optimizer": "sgd", "loss": "bpr", "lr": 0.5, "l2": 1e-2},  # no decay: only the batch's rows move
    {"optimizer": "sgd", "loss": "infonce", "negatives": 4, "lr": 0.5, "weight_decay": 1e-2},  # every row decays
    {"optimizer": "adam", "loss": "ccl", "negatives": 5, "margin": 0.0, "negative_weight": 4.0, "normalize": True,
     "l2": 1e-3},
])
@pytest.mark.parametrize("dtype, rtol", FLOAT_TOLERANCES)
def test_dense_optimizers_match_the_reference_trainer(small, settings, dtype, rtol, one_thread):
    loop = compare_epoch(small, settings, dtype, rtol)
    if settings["optimizer"] != "sgd":
        state = loop.optimizer.state
        assert state[0]["step"] == state[1]["step"] == -(-small.train.nnz // 64)


@pytest.mark.parametrize("settings", [
    {"loss": "bpr", "negatives": 3, "l2": 1e-2},
    {"loss": "bce", "negatives": 4, "l2": 1e-3},
    {"loss": "infonce", "negatives": 8, "temperature": 0.5, "l2": 1e-2},  # a shared row's L2 counts once
    {"loss": "infonce", "negatives": 8, "similarity": "cosine", "temperature": 0.5, "normalize": True,
     "sampler": "popularity", "logq_correction": True, "l2": 1e-3},
    {"loss": "ccl", "negatives": 8, "margin": 0.1, "negative_weight": 20.0, "normalize": True, "l2": 1e-2},
])
@pytest.mark.parametrize("optimizer", ["sparse_adam", "adam"])
@pytest.mark.parametrize("dtype, rtol", FLOAT_TOLERANCES)
def test_shared_negatives_match_the_reference_trainer(small, settings, optimizer, dtype, rtol, one_thread):
    compare_epoch(small, {"optimizer": optimizer, "negatives_mode": "shared", **settings}, dtype, rtol)


@pytest.mark.parametrize("options", [
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-3},
    {"momentum": 0.5, "nesterov": True},
])
def test_sgd_momentum_of_an_optimizer_object_matches_the_reference_trainer(small, options, one_thread):
    """An SGD object with a batch size: minibatch SGD with its momentum buffer (every row moves)."""
    reference = MF(small.n_users, small.n_items, dim=16, sparse=False, rng=7)
    sampler, recorder = RecordingSampler(small.train, seed=11), BatchLosses()
    ref_optimizer = SGD(reference.parameters(), lr=0.3, **options)
    Trainer(reference, optimizer=ref_optimizer, sampler=sampler, batch_size=64, seed=3, epochs=1, eval_every=10,
            engine="numpy", progress=False, callbacks=[recorder]).fit(small)
    model = MF(small.n_users, small.n_items, dim=16, rng=7)
    loop = CompiledMFLoop(model, small.train, optimizer=SGD(model.parameters(), lr=0.3, **options), batch_size=64,
                          seed=3)
    result = loop.train_epoch(negatives=np.concatenate(sampler.drawn))
    np.testing.assert_allclose(result["batch_losses"], recorder.losses, rtol=1e-5)
    assert_close(model.user_embedding.weight.data, reference.user_embedding.weight.data)
    assert_close(model.item_embedding.weight.data, reference.item_embedding.weight.data)
    for table in (0, 1):
        assert_close(loop.optimizer.state[table]["momentum_buffer"], ref_optimizer.state[table]["momentum_buffer"])


def test_dynamic_negative_sampling_chooses_harder_negatives(data, one_thread):
    """On a trained model, DNS's own draws give a larger BPR loss per sample than uniform draws."""
    model = MF(data.n_users, data.n_items, dim=8, rng=0)
    warm_up = CompiledMFLoop(model, data.train, loss="bpr", optimizer="hogwild", lr=0.1, l2=1e-3, dns_candidates=1,
                             seed=0)
    for _ in range(10):
        warm_up.train_epoch()
    losses = {}
    for per in (1, 8):
        trial = MF(data.n_users, data.n_items, dim=8, rng=0)
        trial.load_state_dict(model.state_dict())
        fused = CompiledMFLoop(trial, data.train, loss="bpr", optimizer="hogwild", lr=1e-9, dns_candidates=per, seed=1)
        losses[per] = fused.train_epoch()["loss"]
    assert losses[8] > 1.5 * losses[1]


@pytest.mark.parametrize("sampling", EPOCH_SAMPLING)
def test_same_shuffle_as_the_trainer(small, sampling):
    """The fused loop draws its epoch order from the generator exactly as the Trainer's batches do."""
    fused = CompiledMFLoop(MF(small.n_users, small.n_items, dim=4, rng=0), small.train, seed=5)
    trainer_rng = np.random.default_rng(np.random.SeedSequence(5).spawn(2)[0])
    assert fused.shuffle_rng.bit_generator.state == trainer_rng.bit_generator.state
    shared = CompiledMFLoop(MF(small.n_users, small.n_items, dim=4, rng=0), small.train,
                            shuffle_rng=np.random.default_rng(8), epoch_sampling=sampling)
    shared.train_epoch()
    reference = np.random.default_rng(8)
    list(epoch_batches(small.train, 10 ** 9, reference, sampling=sampling))
    assert shared.shuffle_rng.bit_generator.state == reference.bit_generator.state


# ------------------------------------------------------------------------------------ sampler
def test_sampler_never_returns_a_positive(data):
    users = np.repeat(np.arange(data.n_users), 50)
    dense = data.train.toarray() != 0
    for sampler in ("uniform", "popularity"):
        drawn = sample_negatives(data.train, users, 3, sampler=sampler, seed=2)
        assert drawn.shape == (users.size, 3) and drawn.dtype == np.int64
        assert not np.any(dense[users[:, None], drawn])
    kept = sample_negatives(data.train, users, 3, exclude_positives=False, seed=2)
    assert np.any(dense[users[:, None], kept])  # without exclusion they occur


def pearson(observed, expected):
    """Pearson's statistic and its degrees of freedom, over cells with positive expectation."""
    cells = expected > 0
    assert observed[~cells].sum() == 0
    return np.sum((observed[cells] - expected[cells]) ** 2 / expected[cells]), cells.sum() - 1


def test_uniform_sampler_is_uniform_over_the_users_non_positives():
    train = sp.csr_matrix(np.array([[1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0]]))
    drawn = sample_negatives(train, np.zeros(30000, dtype=np.int64), 2, seed=4).reshape(-1)
    expected = np.where(train.toarray()[0] == 0, drawn.size / 8, 0.0)
    statistic, dof = pearson(np.bincount(drawn, minlength=12), expected)
    assert abs(statistic - dof) < 6 * np.sqrt(2 * dof), statistic


def test_popularity_sampler_follows_count_to_the_alpha_restricted_to_non_positives(data):
    alpha = 0.75
    counts = np.bincount(data.train.indices, minlength=data.n_items).astype(np.float64)
    user = 5
    q = counts ** alpha
    q[data.train[user].indices] = 0.0
    drawn = sample_negatives(data.train, np.full(40000, user), 2, sampler="popularity", popularity_alpha=alpha,
                             seed=9).reshape(-1)
    statistic, dof = pearson(np.bincount(drawn, minlength=data.n_items), drawn.size * q / q.sum())
    assert abs(statistic - dof) < 6 * np.sqrt(2 * dof), statistic


def test_sampler_is_independent_of_the_thread_count(data, kernel_threads):
    users = np.arange(data.n_users)
    kernel_threads(1)
    one = sample_negatives(data.train, users, 4, sampler="popularity", seed=1)
    kernel_threads(kernels.numba.config.NUMBA_NUM_THREADS)
    many = sample_negatives(data.train, users, 4, sampler="popularity", seed=1)
    np.testing.assert_array_equal(one, many)


def test_user_with_every_item_raises():
    train = sp.csr_matrix(np.array([[1, 1, 1], [0, 1, 0]]))
    with pytest.raises(ValueError, match=r"user\(s\) \[0\]"):
        CompiledMFLoop(MF(2, 3, dim=2, rng=0), train)
    CompiledMFLoop(MF(2, 3, dim=2, rng=0), train, exclude_positives=False)


# ---------------------------------------------------------------------------------- learning
def test_hogwild_bpr_learns_well_above_popularity(data):
    model = MF(data.n_users, data.n_items, dim=32, rng=0)
    fused = CompiledMFLoop(model, data.train, loss="bpr", optimizer="hogwild", lr=0.05, l2=1e-3, dns_candidates=1,
                           seed=0)
    losses = [fused.train_epoch()["loss"] for _ in range(15)]
    assert losses[-1] < 0.6 * losses[0]
    recall = evaluate_recommender(model, data, "test", ks=(20,))["recall@20"]
    popularity = evaluate_baseline(data, "test", ks=(20,))["recall@20"]
    assert recall > 1.5 * popularity, (recall, popularity)  # 0.39 vs 0.21 when written


@pytest.mark.parametrize("optimizer, settings", [
    ("sparse_adam", {"loss": "bce", "negatives": 4}),
    ("sparse_adam", {"loss": "infonce", "negatives": 16, "similarity": "cosine", "sampler": "popularity",
                     "logq_correction": True}),
    ("adam", {"loss": "infonce", "negatives": 64, "negatives_mode": "shared"}),
    ("hogwild", {"loss": "bce", "negatives": 4, "lr": 0.5}),
    ("hogwild", {"loss": "infonce", "negatives": 16, "lr": 0.005}),
    ("hogwild", {"loss": "infonce", "negatives": 16, "similarity": "cosine", "temperature": 0.2, "lr": 0.05}),
    ("hogwild", {"loss": "ccl", "negatives": 32, "margin": 0.5, "negative_weight": 10.0, "lr": 0.5}),
    ("sparse_adam", {"loss": "ccl", "negatives": 32, "margin": 0.5, "negative_weight": 10.0}),
])
def test_bce_infonce_and_ccl_paths_learn(data, optimizer, settings, one_thread):
    settings = {"lr": 0.02, "l2": 1e-4, "seed": 0, **settings}
    if optimizer != "hogwild":
        settings["batch_size"] = 256
    model = MF(data.n_users, data.n_items, dim=16, rng=0)
    fused = CompiledMFLoop(model, data.train, optimizer=optimizer, **settings)
    losses = [fused.train_epoch()["loss"] for _ in range(4)]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0], losses
    recall = evaluate_recommender(model, data, "test", ks=(20,))["recall@20"]
    assert recall > evaluate_baseline(data, "test", ks=(20,))["recall@20"]


# ---------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("optimizer", ["hogwild", "sparse_adam"])
def test_one_thread_is_bit_reproducible(data, optimizer, one_thread):
    tables = []
    for _ in range(2):
        model = MF(data.n_users, data.n_items, dim=8, rng=0)
        fused = CompiledMFLoop(model, data.train, optimizer=optimizer, lr=0.02, negatives=2, l2=1e-3, seed=4,
                               batch_size=128 if optimizer == "sparse_adam" else None)
        fused.train_epoch()
        fused.train_epoch()
        tables.append((model.user_embedding.weight.data.copy(), model.item_embedding.weight.data.copy()))
    np.testing.assert_array_equal(tables[0][0], tables[1][0])
    np.testing.assert_array_equal(tables[0][1], tables[1][1])


@pytest.mark.parametrize("settings", [
    {"optimizer": "sparse_adam"},
    {"optimizer": "adam", "weight_decay": 1e-3},
    {"optimizer": "sgd", "lr": 0.5, "weight_decay": 1e-3},
    {"optimizer": "adamw", "loss": "infonce", "negatives_mode": "shared", "negatives": 16},
])
def test_minibatch_loop_does_not_depend_on_the_thread_count(small, settings, kernel_threads):
    settings = {"lr": 0.02, "negatives": 3, "l2": 1e-3, **settings}
    results = []
    for threads in (1, kernels.numba.config.NUMBA_NUM_THREADS):
        kernel_threads(threads)
        model = MF(small.n_users, small.n_items, dim=8, rng=0)
        CompiledMFLoop(model, small.train, seed=4, batch_size=256, **settings).train_epoch()
        results.append(model.item_embedding.weight.data.copy())
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("settings", [
    {"optimizer": "adam", "weight_decay": 1e-3},
    {"optimizer": "adamw"},
    {"optimizer": "sgd", "lr": 0.5, "weight_decay": 1e-3},
    {"optimizer": "adam", "loss": "infonce", "negatives_mode": "shared", "negatives": 16},
])
def test_the_trainer_resumes_the_compiled_loop_exactly(small, tmp_path, settings, one_thread):
    """The optimizer's state (moments, step counts) is the kernel's: its checkpoint resumes exactly."""
    def run(out_dir, epochs, resume=False):
        model = MF(small.n_users, small.n_items, dim=8, rng=0)
        trainer = Trainer(model, epochs=epochs, out_dir=out_dir, progress=False, seed=3, batch_size=256,
                          eval_every=10, engine="compiled", **{"lr": 0.01, **settings})
        result = trainer.fit(small, resume=resume)
        assert trainer.compiled is not None
        return model, [{k: v for k, v in r.items() if k in ("epoch", "loss", "lr")} for r in result["history"]]

    straight, expected = run(tmp_path / "straight", epochs=3)
    run(tmp_path / "stopped", epochs=2)
    resumed, history = run(tmp_path / "stopped", epochs=3, resume=True)
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value)
    assert history == expected


def test_the_trainer_runs_every_mf_optimizer_compiled(small):
    for settings in ({}, {"optimizer": "adamw"}, {"optimizer": "sgd"}, {"optimizer": "hogwild"},
                     {"loss": "infonce", "negatives_mode": "shared", "negatives": SHARED_NEGATIVES_MAX}):
        trainer = Trainer(MF(small.n_users, small.n_items, dim=4, rng=0), progress=False, **settings)
        trainer.prepare(small)
        assert trainer.compiled is not None, settings
    # in-batch negatives; InfoNCE's default 1024 shared negatives, faster in the NumPy loop's matrix products
    for settings in ({"negatives_mode": "in_batch"}, {"negatives_mode": "shared"}):
        trainer = Trainer(MF(small.n_users, small.n_items, dim=4, rng=0), loss="infonce", progress=False, **settings)
        trainer.prepare(small)
        assert trainer.compiled is None, settings


def test_state_lives_in_a_sparse_adam_and_resumes_exactly(small, one_thread):
    def run(split):
        model = MF(small.n_users, small.n_items, dim=8, rng=0)
        tables = [model.user_embedding.weight, model.item_embedding.weight]
        fused = CompiledMFLoop(model, small.train, optimizer=SparseAdam(tables, lr=0.03), batch_size=50, seed=2)
        fused.train_epoch()
        if split:
            saved = (fused.state_dict(), fused.optimizer.state_dict(), model.state_dict())
            model = MF(small.n_users, small.n_items, dim=8, rng=1)
            model.load_state_dict(saved[2])
            tables = [model.user_embedding.weight, model.item_embedding.weight]
            optimizer = SparseAdam(tables, lr=0.03)
            optimizer.load_state_dict(saved[1])
            fused = CompiledMFLoop(model, small.train, optimizer=optimizer, batch_size=50, seed=2)
            fused.load_state_dict(saved[0])
        fused.train_epoch()
        return model.item_embedding.weight.data

    np.testing.assert_array_equal(run(False), run(True))


def test_clear_errors(small):
    model = MF(small.n_users, small.n_items, dim=4, rng=0)
    with pytest.raises(ValueError, match="loss"):
        CompiledMFLoop(model, small.train, loss="hinge")
    with pytest.raises(ValueError, match="optimizer"):
        CompiledMFLoop(model, small.train, optimizer="rmsprop")
    with pytest.raises(ValueError, match="amsgrad"):
        CompiledMFLoop(model, small.train, optimizer=Adam(model.parameters(), amsgrad=True))
    with pytest.raises(ValueError, match="item tables"):
        CompiledMFLoop(model, small.train, optimizer=Adam([model.user_embedding.weight]))
    with pytest.raises(ValueError, match="momentum"):
        CompiledMFLoop(model, small.train, optimizer=SGD(model.parameters(), momentum=0.9))  # hogwild
    with pytest.raises(ValueError, match="similarity"):
        CompiledMFLoop(model, small.train, loss="bpr", similarity="cosine")
    with pytest.raises(ValueError, match="train_csr"):
        CompiledMFLoop(model, small.train[:, :10])
    with pytest.raises(ValueError, match="negatives"):
        CompiledMFLoop(model, small.train).train_epoch(negatives=np.zeros((3, 1), dtype=np.int64))
    with pytest.raises(ValueError, match="negatives_mode"):
        CompiledMFLoop(model, small.train, negatives_mode="in_batch", optimizer="sparse_adam", loss="infonce")
    with pytest.raises(ValueError, match=r"negatives: expected shape \(5, 2\)"):
        CompiledMFLoop(model, small.train, negatives_mode="shared", negatives=2, batch_size=256).train_epoch(
            negatives=np.zeros((small.train.nnz, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="model"):
        CompiledMFLoop(object(), small.train)
