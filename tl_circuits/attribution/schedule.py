"""Which feature rows to compute, and in what order: all of them, or the most influential.

Rows are computed in batches of read-outs sorted by layer, so a batch of early-layer features
back-propagates only through the layers below them. Under a node budget the features are ranked
by their influence on the targets as estimated from the rows computed so far, and re-ranked
after every ``update_interval`` batches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int

from ..graph.influence import influence_from_rows

#: Computes the adjacency rows of a batch of feature ids (sorted by layer).
RowFn = Callable[[Int[torch.Tensor, " n"]], Float[torch.Tensor, "n n_nodes"]]


def feature_rows(
    rows_of: RowFn,
    target_rows: Float[torch.Tensor, "n_targets n_nodes"],
    target_nodes: Int[torch.Tensor, " n_targets"],
    target_weights: Float[torch.Tensor, " n_targets"],
    n_features: int,
    *,
    budget: int,
    batch_size: int,
    update_interval: int,
    on_batch: Callable[[], None] = lambda: None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Rows and their node ids for ``budget`` features (all of them if budget == n_features)."""
    blocks, nodes = [target_rows], [target_nodes]

    def run(queue: torch.Tensor) -> None:
        for lo in range(0, queue.numel(), batch_size):
            ids = queue[lo : lo + batch_size]
            blocks.append(rows_of(ids))
            nodes.append(ids)
            on_batch()

    if budget >= n_features:
        run(torch.arange(n_features))
        return blocks, nodes
    visited = torch.zeros(n_features, dtype=torch.bool)
    n_targets = target_nodes.numel()
    while (done := int(visited.sum())) < budget:
        rows = torch.cat(blocks)
        seed = torch.zeros(rows.shape[0], dtype=torch.float64)
        seed[:n_targets] = target_weights
        influence = influence_from_rows(rows, torch.cat(nodes), seed)[:n_features].cpu()
        influence[visited] = -1.0
        k = min(update_interval * batch_size, budget - done)
        queue = torch.sort(influence.topk(k).indices).values  # feature ids sort by layer
        visited[queue] = True
        run(queue)
    return blocks, nodes
