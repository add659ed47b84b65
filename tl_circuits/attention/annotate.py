"""Attention facts stored in a graph at attribution time (``attribute(..., head_loadings=True)``):
the head loadings of the cross-position edges the viewer shows, and the QK explanations of the
top heads of the strongest of them, so an exported graph carries both."""

from __future__ import annotations

from typing import Any

import torch

from ..graph import Graph
from .inputs import read_inputs
from .loadings import head_loadings
from .qk import explain_many


def annotate_graph(model: Any, transcoders: Any, graph: Graph, *, node_threshold: float = 0.8,
                   edge_threshold: float = 0.98, n_qk: int = 8, max_edges: int = 2000,
                   progress: bool = True) -> Graph:
    """Store in ``graph.settings`` the head loadings of the cross-position edges of
    ``graph.prune(node_threshold, edge_threshold)`` (the viewer's default view; at most
    ``max_edges``, the largest) and, under ``"qk"``, the QK explanations of the top head of each
    of the ``n_qk`` largest of those edges (target position as query, source position as key).

    Example:
        >>> annotate_graph(model, transcoders, graph)  # doctest: +SKIP
        >>> graph.settings["qk"][0]["pairs"][0]  # doctest: +SKIP
    """
    shown = graph if graph.is_pruned else graph.prune(node_threshold, edge_threshold)
    index = {n: i for i, n in enumerate(graph.nodes)}
    to_full = torch.tensor([index[n] for n in shown.nodes], dtype=torch.long)
    tgt, src, w = shown.edge_list()
    tgt, src = tgt.long(), src.long()
    keep = (shown.node_position[src] != shown.node_position[tgt]) & (w != 0)
    src, tgt, w = src[keep], tgt[keep], w[keep]
    order = w.abs().argsort(descending=True)[:max_edges]
    edges = list(zip(to_full[src[order]].tolist(), to_full[tgt[order]].tolist()))
    if not edges:
        graph.settings["head_loadings"], graph.settings["qk"] = [], []
        return graph
    loads = head_loadings(model, transcoders, graph, edges, progress=progress)
    requests: list[tuple[int, int, int, int]] = []
    for e in range(min(n_qk, len(edges))):
        top = loads.top(e, 1)
        if top:
            s, t = edges[e]
            req = (top[0][0], top[0][1], int(graph.node_position[t]), int(graph.node_position[s]))
            if req not in requests:
                requests.append(req)
    inp = read_inputs(model, transcoders, graph)
    graph.settings["qk"] = [ex.to_json() for ex in explain_many(inp, requests)] if requests else []
    return graph
