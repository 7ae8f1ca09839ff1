"""A DSGD worker: one user block, the compiled MF loop on each (user block, item block) it is handed.

A worker is a plain class, made a Ray actor by `recgrad.distributed.cluster` (this module does not
import Ray). It holds its user block's rows of the user table for the whole run and, for each item
block c, the training interactions of its users with the items of c (local ids) and a
`recgrad.train.compiled_mf.CompiledMFLoop` over an `MF` whose user table is the worker's own array
and whose item table is the block it is handed. `train_block` trains one block for one
sub-epoch: the compiled hogwild epoch over the block's interactions in a shuffled order, each
positive's negatives drawn uniformly from item block c (the positives of the user in c re-drawn,
DNS choosing among candidates from c), then hands the updated item block back, to travel to the
next worker through Ray's object store.

Random numbers are given, not kept: the shuffle generator's state and the key of the negatives'
streams (`epoch_key(seed, index)`) come from the driver with each call, so a block trained twice
from the same tables gives the same result (with one thread per worker), which is what lets the
driver restart a sub-epoch after a worker died.

`top_k` is the worker's part of the sharded evaluation (`recgrad.distributed.evaluate`).
"""

import numpy as np
from threadpoolctl import threadpool_limits

from recgrad import kernels
from recgrad.distributed.partition import block_matrices
from recgrad.evaluation import default_block_size
from recgrad.kernels.topk import top_k_masked
from recgrad.models.mf import MF
from recgrad.train.compiled_mf import CompiledMFLoop

__all__ = ["BlockWorker"]


class BlockWorker:
    """A worker process (module doc); `setup` gives it user block b, and again after a restart.

    threads: the compiled kernels' and BLAS's threads in this worker (1: bit-reproducible blocks).
    """

    def __init__(self, threads=1):
        kernels.set_num_threads(int(threads))
        self.threads = int(threads)
        self.block = None

    def setup(self, block, rows, item_block, local_items, items_per_block, user_table, settings, normalize=False):
        """Take user block `block`.

        rows: CSR (users of the block, n_items) of their training interactions (global item ids).
        item_block, local_items: (n_items,) each item's block and local id. items_per_block: (N,) the
        size of each item block. user_table: (users of the block, dim) their rows of the user table
        (copied). settings: the run settings of the compiled loop (optimizer "hogwild"). normalize:
        the model scores by the cosine (`MF(normalize=True)`).
        """
        self.block = int(block)
        self.P = np.array(user_table)  # a writeable copy (an object-store array is read-only)
        self.n_blocks = len(items_per_block)
        self.matrices = block_matrices(rows, item_block, local_items, self.n_blocks, items_per_block)
        self.loops = []
        for matrix in self.matrices:
            if matrix.nnz == 0:  # nothing to train in this block
                self.loops.append(None)
                continue
            model = MF(matrix.shape[0], matrix.shape[1], dim=self.P.shape[1], normalize=normalize, rng=0,
                       dtype=self.P.dtype)
            model.user_embedding.weight.data = self.P
            self.loops.append(CompiledMFLoop(model, matrix, optimizer="hogwild", shuffle_rng=np.random.default_rng(0),
                                             **settings))
        return self.block

    def ready(self):
        """The worker's user block (None before `setup`): answers once the process is up."""
        return self.block

    def train_block(self, item_block, item_table, lr, stream_index, shuffle_state):
        """One sub-epoch on (this user block, item_block): returns (updated item table, statistics).

        stream_index: the epoch index of the negatives' streams (key `epoch_key(seed, stream_index)`).
        shuffle_state: the bit-generator state of the epoch order's generator. Statistics: loss (mean over
        the block's samples), samples, seconds, shuffle_state (after the epoch order).
        """
        table = np.array(item_table)
        loop = self.loops[item_block]
        if loop is None:
            return table, {"loss": 0.0, "samples": 0, "seconds": 0.0, "shuffle_state": shuffle_state}
        loop.model.item_embedding.weight.data = table
        loop.optimizer.param_groups[0]["lr"] = float(lr)
        loop.load_state_dict({"epoch": int(stream_index), "shuffle_rng": shuffle_state})
        stats = loop.train_epoch()
        return table, {"loss": stats["loss"], "samples": stats["samples"], "seconds": stats["seconds"],
                       "shuffle_state": loop.state_dict()["shuffle_rng"]}

    def user_table(self):
        """This user block's rows of the user table."""
        return self.P

    def top_k(self, user_vectors, item_table, item_ids, seen, k):
        """Top-k of every given user among one item shard: (global ids, scores), both (n_users, k).

        user_vectors (n, dim); item_table (m, dim), the shard's rows; item_ids (m,) their global ids
        (ascending); seen: CSR (n, m) of the items to skip (local ids). Order: higher score, then lower
        id (`recgrad.kernels.topk`); ids past the shard's candidates are padding, -1 with score -inf.
        """
        user_vectors, item_table, item_ids = np.asarray(user_vectors), np.asarray(item_table), np.asarray(item_ids)
        n = user_vectors.shape[0]
        ids, top = np.empty((n, k), np.int64), np.empty((n, k), np.result_type(user_vectors, item_table))
        size = default_block_size(item_ids.size)
        with threadpool_limits(self.threads, user_api="blas"):
            for start in range(0, n, size):
                rows = slice(start, min(start + size, n))
                local, top[rows], _ = top_k_masked(user_vectors[rows] @ item_table.T, k, mask=seen[rows])
                ids[rows] = np.where(local >= 0, item_ids[np.maximum(local, 0)], -1)
        return ids, top
