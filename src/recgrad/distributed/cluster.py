"""Distributed MF training (DSGD) and sharded evaluation on a Ray cluster: the driver's side.

`RayCluster(workers=N)` joins a Ray cluster (`address`) or starts a local one
(`ray.init(num_cpus=N * threads, include_dashboard=False)`, shut down by `shutdown()`), and gives
the Trainer two things (`Trainer(model, cluster=cluster, ...)`):

- `epoch_loop(...)`: a `DSGDLoop`, which the Trainer runs in place of the one-process compiled
  loop (same interface: `epoch`, `train_epoch()`);
- `evaluate(...)`: full ranking with the items sharded across the workers
  (`recgrad.distributed.evaluate`), in place of `recgrad.evaluation.evaluate_recommender`.

An epoch of `DSGDLoop` (Gemulla et al., KDD 2011; `recgrad.distributed.partition`): the users and
items are cut into N blocks each, balanced by interaction count; worker w (a Ray actor,
`recgrad.distributed.workers.BlockWorker`) keeps user block w for the whole run. In sub-epoch s,
worker w trains block (w, (w + s) mod N) with the compiled hogwild loop, and hands item block
(w + s) mod N (its rows of the item table; hogwild SGD has no optimizer state) through Ray's
object store to worker w - 1, which trains it in sub-epoch s + 1. The driver only passes object
references along; the tables never pass through it during an epoch. After the N sub-epochs,
which cover every training interaction once, the driver gathers the blocks into the model's
tables (the Trainer's evaluation, model files and checkpoint read them there).

Random numbers, so that a sub-epoch can be recomputed exactly: block (b, c) of an epoch takes its
order from the Trainer's shuffle generator as it is at the start of the epoch, jumped b N + c times
(`bit_generator.jumped`: non-overlapping streams; block (0, 0) takes it unjumped), and its negatives from
`epoch_key(seed, (epoch N + b) N + c)`; after the epoch the Trainer's generator continues from
block (0, 0)'s. With one worker this is exactly the one-process loop: the order generator is the
Trainer's, the key is `epoch_key(seed, epoch)`, and the block is the whole matrix with its own ids.

Faults: the driver holds the tables as of the start of the epoch (the state the Trainer's
Checkpointing callback wrote atomically to checkpoint.npz at the end of the previous epoch). When
a worker dies (any Ray actor error) during an epoch, the driver starts a new worker in its place,
gives every worker its user block again from that state and runs the epoch again, up to
`max_restarts` times per epoch. With one
thread per worker every block is deterministic, so the run ends exactly as an uninterrupted one.
If the driver itself dies, `recgrad train --resume` continues from checkpoint.npz, with any
number of workers: the blocks are cut anew from the tables.
"""

import time

import numpy as np

from recgrad.distributed.evaluate import merge_top_k, metrics_from_top_k
from recgrad.distributed.partition import partition
from recgrad.distributed.workers import BlockWorker
from recgrad.evaluation import _seen_items, evaluate_recommender, protocol_for
from recgrad.models.mf import MF
from recgrad.train import settings as run_settings

__all__ = ["RayCluster", "DSGDLoop", "import_ray"]


def import_ray():
    """The ray module; ImportError with the install line when Ray is missing."""
    try:
        import ray
    except ImportError:
        raise ImportError("distributed training needs Ray: pip install 'recgrad[distributed]'") from None
    return ray


class RayCluster:
    """N DSGD workers on a Ray cluster (module doc).

    Args:
        workers: N, the number of workers (actors), user blocks and item blocks.
        address: a running Ray cluster to join (`ray.init(address=...)`, e.g. "auto" or
            "ray://host:10001"; recgrad must be importable on its nodes); None starts a local cluster
            with N * threads CPUs, shut down by `shutdown()`.
        threads: the compiled kernels' and BLAS threads of each worker (1: bit-reproducible blocks).
        max_restarts: how many times an epoch (or an evaluation) is run again after a worker died.
        on_sub_epoch: optional callable(loop, epoch, sub_epoch) called by the driver after each
            sub-epoch (progress reports; the fault tests kill a worker from it).

    Use as a context manager, or call `start()` and `shutdown()`.
    """

    def __init__(self, workers, address=None, threads=1, max_restarts=3, on_sub_epoch=None):
        for name, value, low in (("workers", workers, 1), ("threads", threads, 1), ("max_restarts", max_restarts, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        self.workers, self.address, self.threads = int(workers), address, int(threads)
        self.max_restarts, self.on_sub_epoch = int(max_restarts), on_sub_epoch
        self.loop = self.actors = None
        self._owns_ray = False

    def start(self):
        """Join or start the Ray cluster (idempotent)."""
        ray = import_ray()
        if not ray.is_initialized():
            if self.address is None:
                ray.init(num_cpus=self.workers * self.threads, include_dashboard=False, logging_level="WARNING",
                         log_to_driver=False)
                self._owns_ray = True
            else:
                ray.init(address=self.address, logging_level="WARNING", log_to_driver=False)
        return self

    def live_workers(self):
        """The N worker actors, a new one in place of each that died (a worker process starts in seconds:
        the live ones are kept, from one run to the next too)."""
        ray = import_ray()
        actors = self.actors or [None] * self.workers
        for index, actor in enumerate(actors):
            if actor is not None:
                try:
                    ray.get(actor.ready.remote())
                    continue
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                    pass
            actors[index] = ray.remote(BlockWorker).options(num_cpus=self.threads, max_restarts=0).remote(self.threads)
        self.actors = actors
        return actors

    def stop_workers(self):
        """End the worker actors (their CPUs return to the cluster)."""
        if self.actors is not None:
            ray = import_ray()
            for actor in self.actors:
                ray.kill(actor)
            self.actors = None
        if self.loop is not None:
            self.loop.ready = False

    def shutdown(self):
        """End the workers, and the Ray cluster when this object started it."""
        self.stop_workers()
        if self._owns_ray:
            import_ray().shutdown()
            self._owns_ray = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.shutdown()

    # ------------------------------------------------------------------------------ training
    def epoch_loop(self, model, train, optimizer, shuffle_rng, settings):
        """The `DSGDLoop` of a Trainer's run (the Trainer calls this in `prepare`)."""
        self.start()
        self.loop = DSGDLoop(self, model, train, optimizer, shuffle_rng, settings)
        return self.loop

    # ---------------------------------------------------------------------------- evaluation
    def evaluate(self, model, dataset, split="test", ks=(20,), metrics=("recall", "ndcg")):
        """`recgrad.evaluation.evaluate_recommender` with the full ranking sharded over the workers
        (the item blocks of the training partition); the sampled NCF protocol runs in the driver."""
        if protocol_for(dataset, split) == "sampled" or self.loop is None or not hasattr(model, "user_factors"):
            return evaluate_recommender(model, dataset, split, ks=ks, metrics=metrics)
        return self.loop.run(lambda: self.loop.evaluate(model, _seen_items(dataset, split), getattr(dataset, split),
                                                        ks, metrics))


class DSGDLoop:
    """Epochs of DSGD on the cluster's workers, on the model's tables (module doc).

    `train_epoch()` trains one epoch (the Trainer sets `epoch` first) and returns {"loss",
    "samples", "seconds", "samples_per_second", "worker_seconds" and "worker_samples" (each worker's
    compute time and interactions trained),
    "bytes_moved" (item blocks handed between workers, then both tables gathered)}; the same
    dict is appended to `history`. `restarts` counts the epochs run again after a worker died.
    """

    def __init__(self, cluster, model, train, optimizer, shuffle_rng, settings):
        if type(model) is not MF:
            raise ValueError(f"model: distributed training trains MF, got {type(model).__name__}")
        for name, allowed in run_settings.DISTRIBUTED.items():
            if name in settings and settings[name] is not None and settings[name] not in allowed:
                raise ValueError(f"{name}: distributed training (workers) runs {' or '.join(map(repr, allowed))}, "
                                 f"got {settings[name]!r}")
        self.cluster, self.model, self.optimizer, self.shuffle_rng = cluster, model, optimizer, shuffle_rng
        self.train = train
        self.settings = dict(settings)
        self.n = cluster.workers
        self.partition = partition(train, self.n)
        self.epoch, self.restarts, self.history = 0, 0, []
        self.actors, self.ready = None, False

    # -------------------------------------------------------------------------------- workers
    def start_workers(self):
        """Give the N workers (new ones for the dead) their user blocks from the model's tables, and put
        the item blocks in the object store."""
        ray = import_ray()
        part = self.partition
        P, Q = self.model.user_embedding.weight.data, self.model.item_embedding.weight.data
        item_block, local_items = ray.put(part.item_block), ray.put(part.local_items())
        sizes = [ids.size for ids in part.items]
        self.actors = self.cluster.live_workers()
        ray.get([actor.setup.remote(b, self.train[part.users[b]], item_block, local_items, sizes, P[part.users[b]],
                                    self.settings, self.model.normalize) for b, actor in enumerate(self.actors)])
        self.item_refs = [ray.put(Q[ids]) for ids in part.items]
        self.ready = True

    def run(self, step):
        """step() with the workers set up; after a worker died, set them up again (a new worker for the
        dead one) from the model's tables and repeat step(), up to the cluster's max_restarts times."""
        ray = import_ray()
        for attempt in range(self.cluster.max_restarts + 1):
            if not self.ready or self.cluster.actors is not self.actors:
                self.start_workers()
            try:
                return step()
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as error:
                self.ready = False
                if attempt == self.cluster.max_restarts:
                    raise RuntimeError(f"a worker died {attempt + 1} times in epoch {self.epoch + 1}; last: "
                                       f"{str(error).splitlines()[0]}") from None
                self.restarts += 1

    # -------------------------------------------------------------------------------- training
    def train_epoch(self):
        """One epoch (every training interaction once), restarted from the epoch's start after a fault."""
        start_state = self.shuffle_rng.bit_generator.state
        stats = self.run(lambda: self._epoch(start_state))
        self.history.append(stats)
        return stats

    def _epoch(self, start_state):
        ray = import_ray()
        n, part = self.n, self.partition
        start = time.perf_counter()
        self.shuffle_rng.bit_generator.state = start_state
        base = self.shuffle_rng.bit_generator
        # block (0, 0) continues the generator itself (jumped(0) would drop PCG64's buffered 32 bits)
        orders = [start_state] + [base.jumped(j).state for j in range(1, n * n)]
        lr = float(self.optimizer.param_groups[0]["lr"])
        loss_sum, samples, worker_seconds, worker_samples, moved = 0.0, 0, np.zeros(n), np.zeros(n, np.int64), 0
        end_state = start_state
        for sub_epoch in range(n):
            infos, handed = [], list(self.item_refs)
            for w, actor in enumerate(self.actors):
                c = (w + sub_epoch) % n
                handed[c], info = actor.train_block.options(num_returns=2).remote(
                    c, self.item_refs[c], lr, (self.epoch * n + w) * n + c, orders[w * n + c])
                infos.append(info)
            for w, info in enumerate(ray.get(infos)):
                loss_sum += info["loss"] * info["samples"]
                samples += info["samples"]
                worker_seconds[w] += info["seconds"]
                worker_samples[w] += info["samples"]
                if w == (w + sub_epoch) % n == 0:
                    end_state = info["shuffle_state"]
            self.item_refs = handed
            moved += sum(ids.size for ids in part.items) * self.model.item_embedding.weight.data[:1].nbytes
            if self.cluster.on_sub_epoch is not None:
                self.cluster.on_sub_epoch(self, self.epoch, sub_epoch)
        user_blocks = ray.get([a.user_table.remote() for a in self.actors])
        item_blocks = ray.get(self.item_refs)
        P, Q = self.model.user_embedding.weight.data, self.model.item_embedding.weight.data
        for ids, block in zip(part.users, user_blocks):
            P[ids] = block
        for ids, block in zip(part.items, item_blocks):
            Q[ids] = block
        moved += P.nbytes + Q.nbytes
        self.shuffle_rng.bit_generator.state = end_state
        seconds = time.perf_counter() - start
        return {"loss": loss_sum / max(samples, 1), "samples": samples, "seconds": seconds,
                "samples_per_second": samples / max(seconds, 1e-12), "worker_seconds": worker_seconds.tolist(),
                "worker_samples": worker_samples.tolist(), "bytes_moved": int(moved)}

    # ------------------------------------------------------------------------------ evaluation
    def evaluate(self, model, seen, relevant, ks, metrics):
        """Full ranking of the users with a relevant item, item block c scored by worker c (module
        `recgrad.distributed.evaluate`)."""
        ray = import_ray()
        users = np.flatnonzero(np.diff(relevant.indptr) > 0)
        k = max(ks)
        user_vectors = ray.put(np.ascontiguousarray(model.ranking_user_factors(users)))
        items = model.ranking_item_factors()
        seen = seen.tocsr()[users]
        parts = [actor.top_k.remote(user_vectors, np.ascontiguousarray(items[ids]), ids, seen[:, ids], k)
                 for actor, ids in zip(self.actors, self.partition.items)]
        shards = ray.get(parts)
        ids, _ = merge_top_k([part[0] for part in shards], [part[1] for part in shards], k)
        return metrics_from_top_k(ids, relevant.tocsr()[users], ks, metrics)
