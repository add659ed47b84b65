"""Pruning: keep the smallest node and edge sets that carry given shares of influence on the targets.

Same rules as circuit-tracer's ``prune_graph`` (``circuit_tracer/graph.py``), computed on the
nonzero entries of the sparse adjacency only (memory linear in edges, never ``n_nodes^2``):

1. node influence ``I = w (A' + A'^2 + ...)``, ``A'`` the row-normalised ``|A|``, ``w`` the target
   weights; keep nodes with ``I >=`` the smallest score whose descending cumulative share reaches
   ``node_threshold``; tokens and targets are always kept;
2. zero the rows and columns of dropped nodes, renormalise to ``A''``, and score each edge
   ``A''[t, s] * (I''[t] + w[t])``; keep edges at or above the cut for ``edge_threshold``;
3. repeatedly drop feature and error nodes without a kept outgoing edge and feature nodes without
   a kept incoming edge (and their edges), until nothing changes.

Differences from circuit-tracer: an edge is a stored nonzero entry (circuit-tracer's dense mask
counts zero entries as edges when a threshold of 1.0 cuts at score 0); features whose rows were
not computed (``max_feature_nodes``) are leaf nodes here and take their share of influence before
the incoming-edge rule drops them, while circuit-tracer leaves them out of the matrix entirely.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from jaxtyping import Bool, Float

from ..errors import ConfigError
from .influence import abs_entries, influence_from_edges, row_normalize_, target_seed
from .influence import node_influence as _node_influence
from .nodes import NodeKind, kind_mask
from .scores import graph_scores

if TYPE_CHECKING:
    from .graph import Graph


class PruneResult(NamedTuple):
    """Which nodes and edges survive; ``edge_rows/edge_cols`` list the nonzero entries between
    nodes that passed the node threshold."""

    node_mask: Bool[torch.Tensor, " n_nodes"]
    edge_rows: torch.Tensor
    edge_cols: torch.Tensor
    edge_mask: Bool[torch.Tensor, " nnz"]
    node_influence: Float[torch.Tensor, " n_nodes"]
    #: Position of each listed edge among the adjacency's stored entries (row-major).
    edge_entries: torch.Tensor


def cumulative_cut(scores: Float[torch.Tensor, " m"], n_total: int, share: float) -> float:
    """The score at which the descending cumulative share of ``scores`` first reaches ``share``.

    ``scores`` (non-negative) are the entries of a vector of length ``n_total`` whose other
    entries are 0; only the positive ones are sorted, in place on one copy (no index tensor), so
    10^8 edge scores need two extra float64 copies at most. Same value as circuit-tracer's
    ``find_threshold`` on the full vector.
    """
    ordered = scores[scores > 0].to(torch.float64)
    if ordered.numel() == 0:
        return 0.0
    ordered.numpy().sort()  # ascending, in place
    ordered = ordered.flip(0)
    total = ordered.sum()
    if float(total) <= 0:
        return 0.0
    cum = torch.cumsum(ordered, 0).div_(total)
    at = int(torch.searchsorted(cum, torch.tensor([share], dtype=cum.dtype)).item())
    if at >= ordered.numel():
        return 0.0 if ordered.numel() < n_total else float(ordered[-1])
    return float(ordered[at])


def prune_masks(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> PruneResult:
    """Node and edge masks of the pruned graph (see the module docstring for the rules)."""
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be between 0 and 1 (a share of influence), got {value}")
    n = graph.n_nodes
    kind = graph.node_kind
    seed = target_seed(graph)
    e_rows, e_cols, e_abs, entries = abs_entries(graph.adjacency)
    influence = influence_from_edges(e_rows, e_cols, row_normalize_(e_rows, e_abs, n), seed)
    del e_abs

    node_mask = influence >= cumulative_cut(influence, n, node_threshold)
    node_mask |= kind_mask(kind, NodeKind.TOKEN, NodeKind.TARGET)

    # Edge scores on the node-pruned matrix, renormalised (edges between kept nodes only).
    inside = (node_mask[e_rows] & node_mask[e_cols]).nonzero().flatten()
    e_rows, e_cols = e_rows[inside], e_cols[inside]
    entries = inside if entries is None else entries[inside]
    stored = graph.adjacency.values()
    p_vals = row_normalize_(e_rows, stored[entries].abs().to(torch.float64), n)
    pruned_influence = influence_from_edges(e_rows, e_cols, p_vals, seed) + seed
    scores = p_vals.mul_(pruned_influence[e_rows])  # in place: p_vals is not needed again
    del p_vals
    cut = cumulative_cut(scores, n * n, edge_threshold)
    edge_mask = scores >= cut

    # Feature and error nodes need a kept outgoing edge; features need a kept incoming edge.
    feat_err = kind_mask(kind, NodeKind.FEATURE, NodeKind.ERROR)
    feat = kind_mask(kind, NodeKind.FEATURE)
    while True:
        live = edge_mask & node_mask[e_rows] & node_mask[e_cols]
        has_out = torch.zeros(n, dtype=torch.bool)
        has_out[e_cols[live]] = True
        has_in = torch.zeros(n, dtype=torch.bool)
        has_in[e_rows[live]] = True
        new = node_mask & ~(feat_err & ~has_out) & ~(feat & ~has_in)
        if torch.equal(new, node_mask):
            edge_mask = live
            break
        node_mask = new
    return PruneResult(node_mask, e_rows, e_cols, edge_mask, influence, entries)


def prune(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Graph:
    """The pruned graph: kept nodes (in their order) and kept edges with their original weights.

    ``settings['pruning']`` records the thresholds, the full graph's size and the pruned graph's
    scores (dropped features folded into their error nodes, see :mod:`.scores`).
    """
    result = prune_masks(graph, node_threshold, edge_threshold)
    kept = result.node_mask.nonzero().flatten()
    feature_ids = graph.indices(NodeKind.FEATURE)
    kept_features = feature_ids[result.node_mask[feature_ids]]
    scores = graph_scores(graph, keep_features=kept_features)
    adj = graph.adjacency
    pruning = {
        "node_threshold": node_threshold, "edge_threshold": edge_threshold,
        "n_nodes_full": graph.n_nodes, "n_edges_full": int(adj.values().count_nonzero()),
        "scores": scores,
    }
    entry_mask = torch.zeros(adj._nnz(), dtype=torch.bool)
    entry_mask[result.edge_entries[result.edge_mask]] = True
    return graph.restrict(kept, entry_mask=entry_mask, settings_update={"pruning": pruning})


#: Deprecated aliases (one release): the kind constants, now ``NodeKind`` members, and
#: ``node_influence``, now in ``graph/influence.py`` (``target_seed`` is imported from there).
_MOVED: dict[str, tuple[str, Any]] = {
    "node_influence": ("tl_circuits.graph.influence.node_influence", _node_influence),
    **{k.name: (f"tl_circuits.graph.nodes.NodeKind.{k.name}", k) for k in NodeKind},
}


def __getattr__(name: str) -> Any:
    """The deprecated aliases of ``_MOVED``, with a DeprecationWarning naming the new home."""
    if name in _MOVED:
        new, value = _MOVED[name]
        warnings.warn(f"tl_circuits.graph.prune.{name} moved to {new}; use that (the alias goes "
                      "in the next release)", DeprecationWarning, stacklevel=2)
        return value
    raise AttributeError(f"module 'tl_circuits.graph.prune' has no attribute {name!r}")
