"""Questions asked of a graph: top nodes, strongest path, neighbourhoods, supernodes, sub-graphs."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from jaxtyping import Int

from ..errors import ConfigError
from .adjacency import edge_list
from .influence import node_influence, normalized_edges
from .nodes import KIND_NAMES, NodeKind, kind_mask

if TYPE_CHECKING:
    from .graph import Graph, Node


class RankedNode(NamedTuple):
    """A node id, its record and its influence on the targets."""

    id: int
    node: Node
    influence: float


class Path(NamedTuple):
    """Node ids from source to target, and the product of the normalised edge weights on it."""

    nodes: list[int]
    score: float


def node_id(graph: Graph, node: int | Node | Sequence[Any]) -> int:
    """The adjacency index of ``node``: an int id, a :class:`Node` or a (kind, layer, pos, index)."""
    if isinstance(node, int) and not isinstance(node, bool):
        if not 0 <= node < graph.n_nodes:
            raise ConfigError(
                f"node id {node} does not exist: this graph has node ids 0..{graph.n_nodes - 1}"
            )
        return node
    if isinstance(node, (tuple, list)) and len(node) == 4 and isinstance(node[0], str):
        try:
            return graph.node_index_of(str(node[0]), int(node[1]), int(node[2]), int(node[3]))
        except KeyError as err:
            raise ConfigError(f"{err.args[0]} in this graph; list its nodes with graph.nodes") from None
    raise ConfigError(
        f"cannot read {node!r} as a node: give an int node id, a Node or "
        "(kind, layer, position, index)"
    )


def top_nodes(
    graph: Graph, k: int = 10, kinds: Iterable[str | NodeKind] = (NodeKind.FEATURE,)
) -> list[RankedNode]:
    """The ``k`` nodes of the given kinds (names or :class:`NodeKind`) with the largest influence
    on the targets."""
    kinds = [kd.label if isinstance(kd, NodeKind) else kd for kd in kinds]
    unknown = [kd for kd in kinds if kd not in KIND_NAMES]
    if unknown:
        raise ConfigError(f"unknown node kinds {unknown}; use some of {list(KIND_NAMES)}")
    wanted = kind_mask(graph.node_kind, *kinds)
    influence = node_influence(graph)
    candidates = wanted.nonzero().flatten()
    k = max(0, min(k, candidates.numel()))
    best = influence[candidates].topk(k)
    nodes = graph.nodes
    return [
        RankedNode(int(candidates[i]), nodes[int(candidates[i])], float(v))
        for v, i in zip(best.values.tolist(), best.indices.tolist())
    ]


def strongest_path(graph: Graph, source: int | Node | Sequence[Any], target: int | Node | Sequence[Any],
                   *, via_features: bool = False) -> Path:
    """The path from ``source`` to ``target`` with the largest product of normalised edge weights.

    An edge ``s -> t`` weighs ``A'[t, s] = |A[t, s]| / sum_s' |A[t, s']|``, the share of ``t``'s
    incoming attribution that comes from ``s``; the product along a path is the share of the
    target's influence that flows along that path (the terms of ``w (A' + A'^2 + ...)``). Found by
    a longest-path search on ``log A'`` (a sum of log-weights), exact on a DAG.

    ``via_features=True``: the strongest path whose inner nodes are all features, with at least
    one (the path a reader can follow through dashboards; weights stay normalised over all of a
    node's inputs, so the score is still a share of the target's influence).
    """
    src, dst = node_id(graph, source), node_id(graph, target)
    rows, cols, vals = normalized_edges(graph.adjacency)
    if via_features:
        feature = kind_mask(graph.node_kind, NodeKind.FEATURE)
        keep = (feature[rows] | (rows == dst)) & (feature[cols] | (cols == src))
        keep &= ~((rows == dst) & (cols == src))
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
    logw = vals.log()
    best = torch.full((graph.n_nodes,), -math.inf, dtype=torch.float64)
    best[dst] = 0.0
    for _ in range(graph.n_nodes + 1):
        cand = best[rows] + logw
        new = best.scatter_reduce(0, cols, cand, reduce="amax")
        new[dst] = 0.0
        if torch.equal(new, best):
            break
        best = new
    if not math.isfinite(float(best[src])):
        raise ConfigError(
            f"no path from node {src} ({graph.nodes[src]}) to node {dst} ({graph.nodes[dst]}): "
            "choose a source upstream of the target (e.g. a token node) in this graph"
        )
    path = [src]
    while path[-1] != dst:
        here = path[-1]
        out = (cols == here) & (best[rows] + logw == best[here])
        path.append(int(rows[out.nonzero()[0, 0]]))
    return Path(path, float(best[src].exp()))


def neighbourhood(graph: Graph, node_ids: Iterable[int], hops: int = 1) -> Int[torch.Tensor, " k"]:
    """Sorted ids of ``node_ids`` and every node within ``hops`` edges of them (either direction)."""
    mask = torch.zeros(graph.n_nodes, dtype=torch.bool)
    for i in node_ids:
        mask[node_id(graph, i)] = True
    rows, cols, vals = edge_list(graph.adjacency)
    nonzero = vals != 0
    rows, cols = rows[nonzero], cols[nonzero]
    for _ in range(hops):
        grow = mask.clone()
        grow[rows[mask[cols]]] = True
        grow[cols[mask[rows]]] = True
        mask = grow
    return mask.nonzero().flatten()


def subgraph(graph: Graph, node_ids: Iterable[int | Node], hops: int = 1) -> Graph:
    """The graph restricted to ``node_ids`` and their ``hops``-neighbourhood, with all edges among them."""
    if hops < 0:
        raise ConfigError(f"hops must be 0 or more, got {hops}")
    ids = [node_id(graph, i) for i in node_ids]
    if not ids:
        raise ConfigError("subgraph needs at least one node id")
    return graph.restrict(neighbourhood(graph, ids, hops))


def add_supernode(graph: Graph, name: str, node_ids: Iterable[int | Node], *, replace: bool = False) -> None:
    """Group nodes under ``name`` (stored with the graph); ConfigError for unknown ids or names."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a supernode name must be a non-empty string, got {name!r}")
    if name in graph.supernodes and not replace:
        raise ConfigError(
            f"a supernode named {name!r} already exists (nodes {graph.supernodes[name]}); "
            "pick another name or pass replace=True"
        )
    ids = sorted({node_id(graph, i) for i in node_ids})
    if not ids:
        raise ConfigError(f"supernode {name!r} needs at least one node")
    graph.supernodes[name] = ids


def _restrict(graph: Graph, keep: torch.Tensor, **kwargs: Any) -> Graph:
    """``graph.restrict(keep, **kwargs)``: what ``tl_circuits.graph.queries.restrict`` was."""
    return graph.restrict(keep, **kwargs)


def __getattr__(name: str) -> Any:
    """Deprecated alias (one release): ``restrict`` is now :meth:`Graph.restrict`."""
    if name == "restrict":
        warnings.warn("tl_circuits.graph.queries.restrict(graph, keep, ...) moved to "
                      "graph.restrict(keep, ...); use that (the alias goes in the next release)",
                      DeprecationWarning, stacklevel=2)
        return _restrict
    raise AttributeError(f"module 'tl_circuits.graph.queries' has no attribute {name!r}")
