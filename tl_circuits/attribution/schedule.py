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
    on_batch: Callable[[], object] = lambda: None,
) -> tuple[Float[torch.Tensor, "n_rows n_nodes"], Int[torch.Tensor, " n_rows"]]:
    """Rows and their node ids: the targets', then ``budget`` features' (all if budget >= n).

    Rows go into one preallocated buffer, so re-ranking reads them without copying.
    """
    n_targets = target_nodes.numel()
    budget = min(budget, n_features)
    buffer = target_rows.new_zeros(n_targets + budget, target_rows.shape[1])
    nodes = torch.empty(n_targets + budget, dtype=torch.long)
    buffer[:n_targets] = target_rows
    nodes[:n_targets] = target_nodes
    filled = n_targets

    def run(queue: torch.Tensor) -> None:
        nonlocal filled
        for lo in range(0, queue.numel(), batch_size):
            ids = queue[lo : lo + batch_size]
            buffer[filled : filled + ids.numel()] = rows_of(ids)
            nodes[filled : filled + ids.numel()] = ids
            filled += ids.numel()
            on_batch()

    if budget == n_features:
        run(torch.arange(n_features))
        return buffer, nodes
    visited = torch.zeros(n_features, dtype=torch.bool)
    seed = torch.zeros(n_targets + budget, dtype=torch.float64)
    seed[:n_targets] = target_weights
    while filled - n_targets < budget:
        influence = influence_from_rows(buffer[:filled], nodes[:filled], seed[:filled])
        influence = influence[:n_features].cpu()
        influence[visited] = -1.0
        k = min(update_interval * batch_size, budget - (filled - n_targets))
        queue = torch.sort(influence.topk(k).indices).values  # feature ids sort by layer
        visited[queue] = True
        run(queue)
    return buffer, nodes
