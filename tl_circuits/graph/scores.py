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
from jaxtyping import Bool, Float, Int

from .adjacency import edge_list
from .influence import CHUNK, influence_from_edges, row_normalize_, target_seed
from .nodes import NodeKind, kind_mask

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
    rows, cols, vals = edge_list(graph.adjacency)
    is_error = kind_mask(graph.node_kind, NodeKind.ERROR)
    is_token = kind_mask(graph.node_kind, NodeKind.TOKEN)
    seed = target_seed(graph)

    if keep_features is not None:
        dropped = kind_mask(graph.node_kind, NodeKind.FEATURE)
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
        n_all = n + n_extra
        rows, cols, vals = _fold(rows, cols, vals, dropped, is_error | dropped, target_of, n_all)
        is_error = torch.cat([is_error, torch.ones(n_extra, dtype=torch.bool)])
        is_token = torch.cat([is_token, torch.zeros(n_extra, dtype=torch.bool)])
        seed = torch.cat([seed, torch.zeros(n_extra, dtype=torch.float64)])
    else:
        n_all = n
        vals = vals.to(torch.float64, copy=True)

    norm = row_normalize_(rows, vals.abs_(), n_all)
    influence = influence_from_edges(rows, cols, norm, seed)
    token_inf = float(influence[is_token].sum())
    error_inf = float(influence[is_error].sum())
    replacement = token_inf / (token_inf + error_inf) if token_inf + error_inf > 0 else 0.0

    from_error = torch.zeros(n_all, dtype=torch.float64)
    for lo in range(0, norm.numel(), CHUNK):
        r, c, v = rows[lo : lo + CHUNK], cols[lo : lo + CHUNK], norm[lo : lo + CHUNK]
        from_error.index_add_(0, r, torch.where(is_error[c], v, torch.zeros_like(v)))
    out_inf = influence + seed
    total = float(out_inf.sum())
    completeness = float(((1 - from_error) * out_inf).sum()) / total if total > 0 else 0.0
    return {"replacement": replacement, "completeness": completeness}


def _fold(
    rows: Int[torch.Tensor, " nnz"], cols: Int[torch.Tensor, " nnz"], vals: Float[torch.Tensor, " nnz"],
    dropped: Bool[torch.Tensor, " n"], merges: Bool[torch.Tensor, " n"],
    target_of: Int[torch.Tensor, " n"], n_all: int,
) -> tuple[torch.Tensor, torch.Tensor, Float[torch.Tensor, " m"]]:
    """The entries with dropped rows removed and, per row, the (signed) entries from ``merges``
    columns summed onto ``target_of`` their column; float64 values.

    Works through the row-sorted entries in chunks that end on row boundaries, writing into
    buffers of the input's length (the output is never longer), so a graph of 10^8 edges needs
    no second full-size copy or global sort.
    """
    nnz = rows.numel()
    index_dtype = torch.int32 if n_all < 2**31 else torch.long
    out_r = torch.empty(nnz, dtype=index_dtype)
    out_c = torch.empty(nnz, dtype=index_dtype)
    out_v = torch.empty(nnz, dtype=torch.float64)
    lo = at = 0
    while lo < nnz:
        hi = min(lo + CHUNK, nnz)
        if hi < nnz:  # back up to the first entry of row rows[hi] (at least one row per chunk)
            hi = int(torch.searchsorted(rows, rows[hi : hi + 1]))
            if hi <= lo:
                hi = int(torch.searchsorted(rows, rows[lo : lo + 1], right=True))
        r, c, v = rows[lo:hi], cols[lo:hi], vals[lo:hi].to(torch.float64)
        live = ~dropped[r]
        r, c, v = r[live], c[live], v[live]
        moved = merges[c]
        key = r[moved].long() * n_all + target_of[c[moved]]
        merged_keys, inverse = torch.unique(key, return_inverse=True)
        merged = torch.zeros(merged_keys.numel(), dtype=torch.float64).index_add_(0, inverse, v[moved])
        for part_r, part_c, part_v in ((r[~moved], c[~moved], v[~moved]),
                                       (merged_keys // n_all, merged_keys % n_all, merged)):
            k = part_v.numel()
            out_r[at : at + k], out_c[at : at + k], out_v[at : at + k] = part_r, part_c, part_v
            at += k
        lo = hi
    return out_r[:at], out_c[:at], out_v[:at]
