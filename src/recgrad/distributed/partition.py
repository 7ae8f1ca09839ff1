"""Blocks of users and items for stratified SGD, balanced by interaction count.

DSGD (Gemulla, Nijkamp, Haas & Sismanis, "Large-scale matrix factorization with distributed
stochastic gradient descent", KDD 2011) splits the users into N blocks and the items into N
blocks, so that the user x item matrix becomes N x N blocks. Blocks (b, c) and (b', c') with
b != b' and c != c' share no row of either table, so N workers can train N such blocks at once
without touching each other's rows. A stratum is N blocks that pairwise share neither a user
block nor an item block; sub-epoch s trains the stratum {(w, (w + s) mod N) : w < N}, and N
sub-epochs cover every interaction once.

Balance: a sub-epoch lasts as long as its slowest worker, so each user block and each item
block should carry about nnz / N interactions. `balanced_blocks` assigns the ids by longest
processing time first (Graham 1969): the ids sorted by count, largest first, each into the block
with the smallest total so far. Every block's total is then within the largest single count of
the mean (the bound `tests/test_distributed.py` checks), which matters on power-law data, where a
few items hold a large share of the interactions.

Inside a block the ids keep their ascending global order, so local id order is global id order
(the evaluation's tie rule, lower id first, survives the mapping, and with one block the local ids
are the global ids).
"""

import heapq
from dataclasses import dataclass

import numpy as np
import scipy.sparse

__all__ = ["balanced_blocks", "Partition", "partition", "block_matrices"]


def balanced_blocks(counts, n_blocks):
    """Block of each id (int64, (n,)) so that the blocks' summed counts are balanced (LPT, module doc).

    counts: (n,) non-negative interaction counts. Ties (equal counts) go in ascending id order, and a
    tie between blocks to the lowest block, so the result is deterministic.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if isinstance(n_blocks, bool) or int(n_blocks) != n_blocks or n_blocks < 1:
        raise ValueError(f"n_blocks must be a positive int, got {n_blocks!r}")
    n_blocks = int(n_blocks)
    block_of = np.zeros(counts.size, np.int64)
    if n_blocks == 1:
        return block_of
    order = np.argsort(-counts, kind="stable")
    heap = [(0, block) for block in range(n_blocks)]
    for index in order.tolist():
        load, block = heapq.heappop(heap)
        block_of[index] = block
        heapq.heappush(heap, (load + int(counts[index]), block))
    return block_of


@dataclass(frozen=True)
class Partition:
    """N user blocks and N item blocks of a training matrix.

    user_block, item_block: (n_users,), (n_items,) the block of each id. users[b], items[c]: the
    global ids of block b / c in ascending order (position = local id). nnz: (N, N) interactions
    of each (user block, item block).
    """

    user_block: np.ndarray
    item_block: np.ndarray
    users: tuple
    items: tuple
    nnz: np.ndarray

    @property
    def n_blocks(self):
        return len(self.users)

    def local_items(self):
        """(n_items,) the local id of each item inside its block."""
        local = np.empty(self.item_block.size, np.int64)
        for ids in self.items:
            local[ids] = np.arange(ids.size)
        return local


def partition(train, n_blocks):
    """The `Partition` of a user x item matrix into n_blocks user and n_blocks item blocks."""
    train = scipy.sparse.csr_matrix(train)
    n_users, n_items = train.shape
    if n_blocks > min(n_users, n_items):
        raise ValueError(f"workers: {n_blocks} blocks need at least as many users and items, the data has "
                         f"{n_users} users and {n_items} items")
    user_block = balanced_blocks(np.diff(train.indptr), n_blocks)
    item_block = balanced_blocks(np.bincount(train.indices, minlength=n_items), n_blocks)
    users = tuple(np.flatnonzero(user_block == b) for b in range(n_blocks))
    items = tuple(np.flatnonzero(item_block == c) for c in range(n_blocks))
    rows = np.repeat(user_block, np.diff(train.indptr))
    nnz = np.bincount(rows * n_blocks + item_block[train.indices], minlength=n_blocks * n_blocks)
    return Partition(user_block, item_block, users, items, nnz.reshape(n_blocks, n_blocks))


def block_matrices(rows, item_block, local_items, n_item_blocks, items_per_block):
    """Split a CSR of some users' rows (global item ids) into one CSR per item block (local ids)."""
    rows = scipy.sparse.csr_matrix(rows)
    row_of = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    blocks = item_block[rows.indices]
    out = []
    for c in range(n_item_blocks):
        keep = blocks == c
        matrix = scipy.sparse.csr_matrix(
            (np.ones(int(keep.sum()), np.float32), (row_of[keep], local_items[rows.indices[keep]])),
            shape=(rows.shape[0], int(items_per_block[c])))
        matrix.sum_duplicates()
        out.append(matrix)
    return out
