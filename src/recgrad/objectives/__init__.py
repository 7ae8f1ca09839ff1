"""Training objectives: given a model, a batch of users, their positives and their negatives, an
objective returns the batch's loss and leaves the gradients in the model's parameters.

    loss = objective(model, users, positives, negatives)      # then optimizer.step()

- `pairwise`: BPR and BCE over the model's scores of [positive, K negatives] (any recommender).
- `contrastive`: InfoNCE over the model's user and item representations (dot-product models),
  with per-user, shared or in-batch negatives, a temperature, dot or cosine similarity and the
  log-Q correction.
- `cosine_contrastive`: SimpleX's cosine contrastive loss (CCL) over the same representations,
  with per-user or shared negatives, a margin and a negative weight.
- `regularizers`: LightGCN's L2 on the embedding rows a batch looked up.

The negatives come from `recgrad.samplers` (`PerUserNegatives`, `SharedNegatives`,
`InBatchNegatives`, `DynamicNegatives`): (B, K) per user, (K,) shared, or None in-batch.
"""

from recgrad.objectives.contrastive import InfoNCEObjective
from recgrad.objectives.cosine_contrastive import CCLObjective
from recgrad.objectives.pairwise import BCEObjective, BPRObjective
from recgrad.objectives.regularizers import BatchL2

__all__ = ["BPRObjective", "BCEObjective", "InfoNCEObjective", "CCLObjective", "BatchL2"]
