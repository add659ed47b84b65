"""Sub-graphs: a graph restricted to some of its nodes, with the edges among them.

What :meth:`Graph.prune` and :meth:`Graph.subgraph` return. Nodes keep their relative order, so
the result is in node order whenever the input is; nothing here assumes that order: a kept
feature's activation is found by its rank among the feature nodes, and a kept target's record by
its number (see :mod:`tl_circuits.graph.nodes`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Int

from ..errors import ConfigError
from .adjacency import csr_from_counts, edge_list
from .nodes import NodeKind, feature_rank, kind_mask

if TYPE_CHECKING:
    from .graph import Graph


def restrict(
    graph: Graph,
    keep: Int[torch.Tensor, " k"] | Bool[torch.Tensor, " n_nodes"],
    *,
    entry_mask: Bool[torch.Tensor, " nnz"] | None = None,
    settings_update: dict[str, Any] | None = None,
) -> Graph:
    """A new graph with the nodes ``keep`` and the edges among them (``graph`` is unchanged).

    Args:
        keep: node ids (any order, repeats ignored) or a bool mask over the nodes.
        entry_mask: one bool per stored entry of the adjacency (row-major order); only the
            entries it marks are kept (how pruning drops edges between kept nodes).
        settings_update: merged into a copy of ``graph.settings``.

    Kept nodes keep their relative order; target numbers are renumbered 0, 1, ... in that order
    (with their records and vectors), ``rows_computed`` and supernodes follow the new ids
    (a supernode none of whose members survives is dropped).

    Example (a token node listed before two features; the second feature is kept):
        >>> import torch
        >>> from tl_circuits import Graph, TargetInfo
        >>> K = NodeKind
        >>> g = Graph.from_tables(
        ...     kind=torch.tensor([K.TOKEN, K.FEATURE, K.FEATURE, K.TARGET], dtype=torch.int8),
        ...     layer=torch.tensor([-1, 0, 0, 1]), position=torch.zeros(4, dtype=torch.long),
        ...     index=torch.tensor([9, 4, 6, 0]), activations=torch.tensor([0.5, 0.25]),
        ...     adjacency=torch.tensor([[0, 0, 0, 0], [2.0, 0, 0, 0], [1, 0, 0, 0], [0, 3, 5, 0]]).to_sparse(),
        ...     targets=[TargetInfo("x", "logit", (9,), 1.0, 1.0)], target_vectors=torch.zeros(1, 2),
        ...     prompt=None, tokens=[9], str_tokens=["x"], settings={})
        >>> sub = restrict(g, torch.tensor([0, 2, 3]))
        >>> [n.kind for n in sub.nodes], sub.activations.tolist(), sub.adjacency.to_dense()[2].tolist()
        (['token', 'feature', 'target'], [0.25], [0.0, 5.0, 0.0])
    """
    n = graph.n_nodes
    if keep.dtype == torch.bool:
        if keep.shape != (n,):
            raise ConfigError(f"a keep mask needs one bool per node ({n}), got shape {tuple(keep.shape)}")
        keep = keep.nonzero().flatten()
    keep = torch.unique(keep.long())  # sorted
    if keep.numel() and not (0 <= int(keep[0]) and int(keep[-1]) < n):
        raise ConfigError(f"node ids to keep must lie in 0..{n - 1}, got {keep.tolist()[:10]} ...")
    new_id = torch.full((n,), -1, dtype=torch.long)
    new_id[keep] = torch.arange(keep.numel())

    rows, cols, vals = edge_list(graph.adjacency)
    inside = (new_id[rows] >= 0) & (new_id[cols] >= 0)
    if entry_mask is not None:
        if entry_mask.shape != inside.shape:
            raise ConfigError(
                f"entry_mask needs one bool per stored adjacency entry ({inside.numel()}), got "
                f"shape {tuple(entry_mask.shape)}"
            )
        inside &= entry_mask
    k = keep.numel()
    # Monotone relabelling keeps the row-major order (rows, then columns, sorted and unique), so
    # the CSR invariants hold by construction.
    at = inside.nonzero().flatten()
    del inside
    counts = torch.bincount(new_id[rows[at]], minlength=k)
    adjacency = csr_from_counts(counts, new_id[cols[at]], vals[at], k)
    del at, rows

    kind, index = graph.node_kind[keep], graph.node_index[keep].clone()
    kept_features = feature_rank(graph.node_kind)[keep][kind_mask(kind, NodeKind.FEATURE)]
    is_target = kind_mask(kind, NodeKind.TARGET)
    old_targets = index[is_target].tolist()
    index[is_target] = torch.arange(len(old_targets), dtype=index.dtype)
    computed = new_id[graph.rows_computed.long()]
    supernodes = {}
    for name, members in graph.supernodes.items():
        kept = [int(new_id[m]) for m in members if int(new_id[m]) >= 0]
        if kept:
            supernodes[name] = kept
    return dataclasses.replace(
        graph, node_kind=kind, node_layer=graph.node_layer[keep], node_position=graph.node_position[keep],
        node_index=index, adjacency=adjacency,
        activations=graph.activations[kept_features.to(graph.activations.device)],
        targets=[graph.targets[i] for i in old_targets],
        target_vectors=graph.target_vectors[torch.tensor(old_targets, dtype=torch.long)],
        tokens=list(graph.tokens), str_tokens=list(graph.str_tokens),
        settings={**graph.settings, **(settings_update or {})},
        rows_computed=computed[computed >= 0], supernodes=supernodes,
    )
