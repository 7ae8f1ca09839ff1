"""Distributed MF (recgrad.distributed) on a real local Ray cluster with 2 CPUs, started once.

The partition and the top-K merge are checked against their definitions; the runs against the
one-process Trainer (one worker: the same tables, to float32 rounding: the fastmath kernels compiled
in a Ray worker process have been seen to round the last bit differently on some hosts), against an uninterrupted run (a
worker killed mid-epoch), and the sharded evaluation against `evaluate_recommender`.
"""

import numpy as np
import pytest
import scipy.sparse

ray = pytest.importorskip("ray")

from recgrad.data import synthetic  # noqa: E402
from recgrad.distributed import RayCluster, balanced_blocks, merge_top_k, partition  # noqa: E402
from recgrad.distributed.partition import block_matrices  # noqa: E402
from recgrad.distributed.workers import BlockWorker  # noqa: E402
from recgrad.evaluation import evaluate_recommender  # noqa: E402
from recgrad.kernels.topk import top_k_masked  # noqa: E402
from recgrad.models.mf import MF  # noqa: E402
from recgrad.train import Trainer  # noqa: E402

SETTINGS = dict(optimizer="hogwild", lr=0.05, dns_candidates=4, l2=0.01, eval_every=1, seed=3, selection="test")


@pytest.fixture(scope="module")
def data():
    return synthetic(n_users=300, n_items=400, popularity_skew=1.0, seed=0)


@pytest.fixture(scope="module")
def cluster(one_thread_module):
    """A local Ray cluster of 2 CPUs for the module, started as `recgrad train --workers 2` starts it."""
    started = RayCluster(2).start()
    yield started
    started.shutdown()


def fit(data, cluster=None, epochs=3, out_dir=None, resume=False):
    model = MF(data.n_users, data.n_items, dim=16, rng=0)
    trainer = Trainer(model, progress=False, cluster=cluster, out_dir=out_dir, epochs=epochs, **SETTINGS)
    return model, trainer.fit(data, resume=resume)


def tables(model):
    return model.user_embedding.weight.data.copy(), model.item_embedding.weight.data.copy()


def test_blocks_hold_every_interaction_once_and_balance_the_counts(data):
    train = data.train
    for n in (2, 3):
        part = partition(train, n)
        assert part.nnz.sum() == train.nnz
        local = part.local_items()
        rebuilt = scipy.sparse.lil_matrix(train.shape, dtype=np.float32)
        for b, users in enumerate(part.users):
            blocks = block_matrices(train[users], part.item_block, local, n, [ids.size for ids in part.items])
            for c, block in enumerate(blocks):
                assert block.nnz == part.nnz[b, c]
                coo = block.tocoo()
                rebuilt[users[coo.row], part.items[c][coo.col]] += coo.data
        assert (rebuilt.tocsr() != (train != 0).astype(np.float32)).nnz == 0  # each interaction once
        for counts, block_of in ((np.diff(train.indptr), part.user_block),
                                 (np.bincount(train.indices, minlength=train.shape[1]), part.item_block)):
            loads = np.bincount(block_of, weights=counts, minlength=n)
            assert loads.max() - loads.min() <= counts.max()  # longest processing time first's bound
            assert loads.max() <= 1.05 * train.nnz / n
    # power-law counts: the heavy ids spread over the blocks first
    assert balanced_blocks([10, 1, 1, 9, 1, 1, 8, 1], 3).tolist() == [0, 2, 1, 1, 2, 0, 2, 1]  # loads 11, 11, 10


def test_sharded_top_k_merge_is_exact_with_ties():
    rng = np.random.default_rng(0)
    n_users, n_items, k = 50, 37, 10
    users = rng.integers(-1, 2, size=(n_users, 3)).astype(np.float32)  # integer scores in [-6, 6]: many ties
    items = rng.integers(-2, 3, size=(n_items, 3)).astype(np.float32)
    seen = scipy.sparse.random(n_users, n_items, density=0.3, random_state=1, format="csr")
    expected_ids, expected_scores, _ = top_k_masked(users @ items.T, k, mask=seen)
    shard_of = rng.integers(0, 3, size=n_items)  # interleaved shards, one with fewer unseen items than k
    shard_of[:30] = np.where(shard_of[:30] == 2, 0, shard_of[:30])
    worker = BlockWorker.__new__(BlockWorker)
    worker.threads = 1
    ids, scores = [], []
    for shard in range(3):
        item_ids = np.flatnonzero(shard_of == shard)
        shard_ids, shard_scores = worker.top_k(users, items[item_ids], item_ids, seen[:, item_ids], k)
        ids.append(shard_ids)
        scores.append(shard_scores)
    merged_ids, merged_scores = merge_top_k(ids, scores, k)
    assert np.array_equal(merged_ids, expected_ids)
    assert np.array_equal(merged_scores, expected_scores)
    assert any((part == -1).any() for part in ids)  # a shard with fewer unseen items than k: padding
    assert (expected_scores[:, :-1] == expected_scores[:, 1:]).any()  # ties inside the top k


def test_one_worker_trains_exactly_the_one_process_loop(data, cluster):
    one_process, expected = fit(data)
    with RayCluster(1) as single:
        distributed, result = fit(data, single)
    for a, b in zip(tables(one_process), tables(distributed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert [r["recall@20"] for r in result["history"]] == [r["recall@20"] for r in expected["history"]]


def test_killed_worker_restarts_the_epoch_and_the_run_ends_as_an_uninterrupted_one(data, cluster, tmp_path):
    uninterrupted, expected = fit(data, cluster)
    assert cluster.loop.restarts == 0
    assert [r["samples"] for r in cluster.loop.history] == [data.train.nnz] * 3

    killed = []

    def kill_a_worker(loop, epoch, sub_epoch):
        if (epoch, sub_epoch) == (1, 0) and not killed:
            killed.append(loop.actors[1])
            ray.kill(loop.actors[1])  # in the middle of epoch 2: its second sub-epoch has not run

    cluster.on_sub_epoch = kill_a_worker
    try:
        recovered, result = fit(data, cluster, out_dir=tmp_path / "run")
    finally:
        cluster.on_sub_epoch = None
    assert killed and cluster.loop.restarts == 1
    for a, b in zip(tables(uninterrupted), tables(recovered)):
        assert np.array_equal(a, b)
    assert [r["recall@20"] for r in result["history"]] == [r["recall@20"] for r in expected["history"]]

    # the sharded evaluation: the same metrics as one process on exactly representable tables
    rng = np.random.default_rng(1)
    recovered.user_embedding.weight.data[:] = rng.integers(-2, 3, size=(data.n_users, 16))
    recovered.item_embedding.weight.data[:] = rng.integers(-2, 3, size=(data.n_items, 16))
    metrics = ("recall", "ndcg", "precision", "hr", "mrr", "map")
    assert cluster.evaluate(recovered, data, "test", ks=(5, 20), metrics=metrics) == \
        evaluate_recommender(recovered, data, "test", ks=(5, 20), metrics=metrics)


def test_a_run_resumes_with_another_number_of_workers(data, cluster, tmp_path):
    fit(data, cluster, epochs=2, out_dir=tmp_path / "two")
    fit(data, cluster, epochs=2, out_dir=tmp_path / "one")
    cluster.stop_workers()  # their CPUs go to the one-worker cluster
    with RayCluster(1) as single:  # one worker computes the one-process loop: compare with that
        resumed, result = fit(data, single, epochs=3, out_dir=tmp_path / "two", resume=True)
    in_process, expected = fit(data, None, epochs=3, out_dir=tmp_path / "one", resume=True)
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3]
    for a, b in zip(tables(resumed), tables(in_process)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("flags, fragment", [
    (["--workers", "2", "--optimizer", "adam"], "--optimizer: distributed training (workers) runs 'hogwild'"),
    (["--workers", "2", "--optimizer", "hogwild", "--sampler", "popularity"], "--sampler: distributed training"),
    (["--workers", "0"], "--workers"),
    (["--address", "auto"], "--address: applies only with workers"),
])
def test_train_refuses_what_distributed_training_does_not_run_in_one_line(flags, fragment, tmp_path, capsys):
    from recgrad.cli import main

    assert main(["train", "--out", str(tmp_path / "run"), *flags]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("recgrad: error: ") and fragment in lines[0], lines
    assert not (tmp_path / "run").exists()
