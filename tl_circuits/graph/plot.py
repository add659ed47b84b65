"""Static drawing of a pruned graph with matplotlib: positions across, layers up, edges by weight."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .._atomic import atomic_path
from ..errors import ConfigError
from .adjacency import edge_list
from .nodes import NodeKind

if TYPE_CHECKING:
    from .graph import Graph

_STYLE = {  # kind: (marker, colour)
    NodeKind.FEATURE: ("o", "#4c72b0"),
    NodeKind.ERROR: ("s", "#8c8c8c"),
    NodeKind.TOKEN: ("D", "#55a868"),
    NodeKind.TARGET: ("^", "#c44e52"),
}


def plot_graph(
    graph: Graph,
    path: str | os.PathLike[str],
    *,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    max_edges: int = 400,
    title: str | None = None,
) -> None:
    """Draw ``graph`` (pruned first with these thresholds unless it is already pruned) to ``path``.

    Nodes sit at (position, layer): tokens at the bottom, targets at the top, the nodes sharing a
    cell spread side by side. Edges are drawn under the nodes, at most ``max_edges`` of the
    strongest, with width and opacity by |weight| (relative to the strongest edge) and colour by
    sign (blue positive, red negative). The suffix picks the format: ``.png`` or ``.svg``.
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in ("png", "svg"):
        raise ConfigError(f"plot writes .png or .svg files, got {os.fspath(path)!r}; change the suffix")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    g = graph if graph.is_pruned else graph.prune(node_threshold, edge_threshold)
    nodes = g.nodes
    kinds = [NodeKind(k) for k in g.node_kind.tolist()]
    n_layers = int(g.settings.get("n_layers", int(g.node_layer.max()) if g.n_nodes else 0))
    cells: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (nd, kind) in enumerate(zip(nodes, kinds)):
        y = -1 if kind == NodeKind.TOKEN else (n_layers if kind == NodeKind.TARGET else nd.layer)
        cells[(nd.position, y)].append(i)
    xy = torch.zeros(g.n_nodes, 2, dtype=torch.float64)
    for (pos, y), members in cells.items():
        width = min(0.8, 0.12 * (len(members) - 1))
        for j, i in enumerate(members):
            off = 0.0 if len(members) == 1 else -width / 2 + width * j / (len(members) - 1)
            xy[i] = torch.tensor([pos + off, y], dtype=torch.float64)

    n_pos = max(len(g.tokens), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * n_pos + 2), max(4.0, 0.8 * (n_layers + 2) + 1.5)))
    rows, cols, vals = edge_list(g.adjacency)
    vals = vals.double()
    if vals.numel():
        order = vals.abs().argsort(descending=True)[:max_edges].flip(0)  # strongest drawn last
        rows, cols, vals = rows[order], cols[order], vals[order]
        strength = (vals.abs() / vals.abs().max()).tolist()
        segments = [[tuple(xy[c].tolist()), tuple(xy[r].tolist())] for r, c in zip(rows.tolist(), cols.tolist())]
        colours = [("#1f5fbf" if v > 0 else "#d62728", 0.15 + 0.75 * s) for v, s in zip(vals.tolist(), strength)]
        lines = LineCollection(segments, linewidths=[0.3 + 3.5 * s for s in strength], colors=colours, zorder=1)
        ax.add_collection(lines)
    for kind, (marker, colour) in _STYLE.items():
        ids = [i for i, k in enumerate(kinds) if k == kind]
        if ids:
            pts = xy[ids]
            ax.scatter(pts[:, 0], pts[:, 1], marker=marker, s=60, c=colour, edgecolors="black",
                       linewidths=0.5, zorder=2, label=f"{kind.label} ({len(ids)})")
    for i, (nd, kind) in enumerate(zip(nodes, kinds)):
        if kind == NodeKind.FEATURE:
            ax.annotate(str(nd.index), tuple(xy[i].tolist()), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=6, zorder=3)
        elif kind == NodeKind.TARGET:
            ax.annotate(repr(g.targets[nd.index].label), tuple(xy[i].tolist()), textcoords="offset points",
                        xytext=(0, 8), ha="left", fontsize=7, rotation=50, zorder=3)
    ax.set_xticks(range(len(g.str_tokens)))
    ax.set_xticklabels([repr(t) for t in g.str_tokens], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(-1, n_layers + 1))
    ax.set_yticklabels(["tokens"] + [f"L{la}" for la in range(n_layers)] + ["targets"], fontsize=8)
    ax.set_xlim(-0.7, n_pos - 0.3)
    ax.set_ylim(-1.6, n_layers + 1.2)
    ax.grid(axis="y", alpha=0.2)
    scores = g.scores()
    ax.set_title(title or (
        f"{g.n_features} features, {g.adjacency._nnz()} edges | replacement "
        f"{scores['replacement']:.2f}, completeness {scores['completeness']:.2f}"
    ), fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix, dpi=150)
    finally:
        plt.close(fig)
