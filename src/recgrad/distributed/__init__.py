"""Distributed training and evaluation of MF on a Ray cluster (the `distributed` extra: Ray).

    from recgrad.distributed import RayCluster
    with RayCluster(workers=2) as cluster:
        Trainer(model, cluster=cluster, optimizer="hogwild", ...).fit(dataset)

- `partition`: users and items in N blocks each, balanced by interaction count (DSGD's strata).
- `workers`: `BlockWorker`, the Ray actor that keeps a user block and trains the blocks it is handed.
- `evaluate`: the exact merge of the item shards' top-K lists.
- `cluster`: `RayCluster` and `DSGDLoop`, the driver (the epoch, the restarts after a worker died).

Ray is imported only when a cluster starts. Design and measurements: docs/scaling.md.
"""

from recgrad.distributed.cluster import DSGDLoop, RayCluster
from recgrad.distributed.evaluate import merge_top_k
from recgrad.distributed.partition import Partition, balanced_blocks, partition

__all__ = ["RayCluster", "DSGDLoop", "merge_top_k", "Partition", "balanced_blocks", "partition"]
