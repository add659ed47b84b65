"""Influence of nodes on the targets: ``w (A' + A'^2 + ...)`` with ``A'`` the row-normalised |A|.

Rows of ``A`` are targets of edges, columns their sources, so ``w A'`` spreads each target's
weight over its direct sources in proportion to |edge|, and each further power one step further
back. Attribution graphs are acyclic, so the series ends after at most depth-many terms.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int


def influence_from_rows(
    rows: Float[torch.Tensor, "n_rows n_nodes"],
    row_nodes: Int[torch.Tensor, " n_rows"],
    row_weights: Float[torch.Tensor, " n_rows"],
    *,
    max_steps: int = 1000,
) -> Float[torch.Tensor, " n_nodes"]:
    """Influence on every node of the weight placed on the rows' nodes.

    ``rows[i]`` holds the incoming edges of node ``row_nodes[i]``; nodes without a row pass
    nothing further back. Only the given rows are touched, so this works on the partial
    adjacency that exists while attribution is still choosing which rows to compute.
    """
    a = rows.abs().to(torch.float64)
    a = a / a.sum(dim=1, keepdim=True).clamp(min=1e-30)
    n_nodes = rows.shape[1]
    where = torch.full((n_nodes,), -1, dtype=torch.long, device=rows.device)
    where[row_nodes] = torch.arange(row_nodes.numel(), device=rows.device)
    has_row = where >= 0
    total = torch.zeros(n_nodes, dtype=torch.float64, device=rows.device)
    x = row_weights.to(torch.float64)
    for _ in range(max_steps):
        flow = x @ a
        total += flow
        x = torch.zeros_like(x)
        x[where[has_row]] = flow[has_row]
        if not bool(x.any()):
            break
    return total
