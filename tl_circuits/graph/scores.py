"""Replacement and completeness scores: how much of a graph's influence runs through error nodes.

Definitions of circuit-tracer's ``compute_graph_scores`` (``circuit_tracer/graph.py``), with
``A'`` the row-normalised ``|A|``, ``w`` the target weights and ``I = w (A' + A'^2 + ...)``:

- replacement score = ``I(tokens) / (I(tokens) + I(errors))``: the share of the end-to-end
  influence that reaches the input tokens rather than stopping at an error node;
- completeness score = ``sum_n (1 - sum_{e error} A'[n, e]) (I[n] + w[n]) / sum_n (I[n] + w[n])``:
  the share of each node's incoming (normalised) edge weight not from error nodes, weighted by
  the node's influence (targets by their weight). Nodes without incoming edges count as complete.

For a pruned graph the features that were dropped are folded into the error node at their
layer and position (``A[:, err] += A[:, f]``, then f's row and column removed; a virtual error node
is made where none exists), as circuit-tracer's subgraph scores do; pruned edges and dropped
error nodes are not folded. Where tl_circuits differs from circuit-tracer: on a BOS position there
are no feature or error nodes, what the MLPs write there belongs to the BOS token node (so it
counts as token influence), and the arithmetic runs in float64 on the sparse nonzeros.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Int

from .influence import influence_from_edges
from .prune import ERROR, FEATURE, TOKEN, target_seed

if TYPE_CHECKING:
    from .graph import Graph


def graph_scores(
    graph: Graph, keep_features: Int[torch.Tensor, " k"] | None = None
) -> dict[str, float]:
    """``{'replacement': ..., 'completeness': ...}`` of ``graph``.

    Args:
        keep_features: node ids of the features to keep; every other feature folds into the
            error node at its (layer, position). None keeps every feature (the full graph's
            scores).
    """
    n = graph.n_nodes
    kind = graph.node_kind.long()
    adj = graph.adjacency if graph.adjacency.is_sparse else graph.adjacency.to_sparse()
    adj = adj.coalesce()
    rows, cols = adj.indices()
    vals = adj.values().to(torch.float64)
    is_error = kind == ERROR
    seed = target_seed(graph)

    if keep_features is not None:
        dropped = (kind == FEATURE).clone()
        dropped[keep_features] = False
        # Map each dropped feature to the error node at its (layer, position), or a new one.
        width = int(graph.node_position.max()) + 2 if n else 1
        key = (graph.node_layer.long() + 1) * width + graph.node_position.long()
        err_ids = is_error.nonzero().flatten()
        err_keys, order = torch.sort(key[err_ids])
        drop_ids = dropped.nonzero().flatten()
        drop_keys = key[drop_ids]
        at = torch.searchsorted(err_keys, drop_keys).clamp(max=max(err_keys.numel() - 1, 0))
        hit = err_keys[at] == drop_keys if err_keys.numel() else torch.zeros_like(drop_keys, dtype=torch.bool)
        target_of = torch.arange(n)
        target_of[drop_ids[hit]] = err_ids[order[at[hit]]]
        missing, slot = torch.unique(drop_keys[~hit], return_inverse=True)
        target_of[drop_ids[~hit]] = n + slot
        n_extra = int(missing.numel())
        live = ~dropped[rows]
        rows, cols, vals = rows[live], cols[live], vals[live]
        n_all = n + n_extra
        # Sum the (signed) entries that land on the same (row, error node) before taking |.|.
        moved = dropped[cols] | is_error[cols]
        key = rows[moved] * n_all + target_of[cols[moved]]
        merged_keys, inverse = torch.unique(key, return_inverse=True)
        merged = torch.zeros(merged_keys.numel(), dtype=vals.dtype).index_add_(0, inverse, vals[moved])
        rows = torch.cat([rows[~moved], merged_keys // n_all])
        cols = torch.cat([cols[~moved], merged_keys % n_all])
        vals = torch.cat([vals[~moved], merged])
        is_error = torch.cat([is_error, torch.ones(n_extra, dtype=torch.bool)])
        kind = torch.cat([kind, torch.full((n_extra,), ERROR)])
        seed = torch.cat([seed, torch.zeros(n_extra, dtype=torch.float64)])
    else:
        n_all = n

    vals = vals.abs()
    sums = torch.zeros(n_all, dtype=torch.float64).index_add_(0, rows, vals)
    norm = vals / sums.clamp(min=1e-10)[rows]
    influence = influence_from_edges(rows, cols, norm, seed)
    token_inf = float(influence[kind == TOKEN].sum())
    error_inf = float(influence[is_error].sum())
    replacement = token_inf / (token_inf + error_inf) if token_inf + error_inf > 0 else 0.0

    from_error = torch.zeros(n_all, dtype=torch.float64).index_add_(
        0, rows, torch.where(is_error[cols], norm, torch.zeros_like(norm))
    )
    out_inf = influence + seed
    total = float(out_inf.sum())
    completeness = float(((1 - from_error) * out_inf).sum()) / total if total > 0 else 0.0
    return {"replacement": replacement, "completeness": completeness}
