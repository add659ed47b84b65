"""``Graph``: the nodes and sparse adjacency of one prompt's attribution graph.

Nodes come in a fixed order, features (layer, position, index) | errors (layer, position) |
tokens (position) | targets (the node schema and its contract: :mod:`tl_circuits.graph.nodes`),
and ``adjacency[t, s]`` is the direct effect of source ``s`` on target ``t`` (rows = targets of
edges, columns = sources), held as sparse CSR with int32 indices (:mod:`.adjacency`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from jaxtyping import Bool, Float, Int

from .adjacency import edge_list, to_csr
from .nodes import KIND_NAMES, NodeKind, kind_mask

__all__ = ["KIND_NAMES", "Graph", "Node", "NodeKind", "TargetInfo"]


class Node(NamedTuple):
    """One node. ``kind``: its :class:`NodeKind`'s label (``"feature"``, ...). ``index``: feature
    id, token id (token nodes), target number (targets), or -1. ``layer``: -1 for tokens,
    n_layers for targets."""

    kind: str
    layer: int
    position: int
    index: int


class TargetInfo(NamedTuple):
    """A target node's label, kind, token ids, probability and weight in influence."""

    label: str
    kind: str
    token_ids: tuple[int, ...]
    probability: float
    weight: float


@dataclass
class Graph:
    """An attribution graph. Build one with :func:`tl_circuits.attribute`.

    ``adjacency`` is a sparse CSR tensor with int32 indices (8 bytes an edge; any dense or sparse
    COO tensor given is converted): ``adjacency.to_dense()``, ``adjacency.values()``,
    ``adjacency.crow_indices()`` / ``col_indices()`` read it, :meth:`edge_list` gives
    ``(rows, cols, values)`` and ``adjacency.to_sparse_coo()`` a COO copy (int64 indices).

    Example:
        >>> import torch
        >>> from tl_circuits import Graph, TargetInfo
        >>> from tl_circuits.graph import NodeKind
        >>> g = Graph.from_tables(
        ...     kind=torch.tensor([NodeKind.TOKEN, NodeKind.TARGET], dtype=torch.int8),
        ...     layer=torch.tensor([-1, 1]),
        ...     position=torch.tensor([0, 0]), index=torch.tensor([7, 0]),
        ...     adjacency=torch.tensor([[0.0, 0.0], [2.5, 0.0]]).to_sparse(),
        ...     activations=torch.zeros(0), targets=[TargetInfo("x", "logit", (7,), 1.0, 1.0)],
        ...     target_vectors=torch.zeros(1, 4), prompt="x", tokens=[7], str_tokens=["x"],
        ...     settings={})
        >>> g.nodes[1], float(g.adjacency.to_dense()[1, 0])
        (Node(kind='target', layer=1, position=0, index=0), 2.5)
    """

    node_kind: Int[torch.Tensor, " n_nodes"]
    node_layer: Int[torch.Tensor, " n_nodes"]
    node_position: Int[torch.Tensor, " n_nodes"]
    node_index: Int[torch.Tensor, " n_nodes"]
    adjacency: Float[torch.Tensor, "n_nodes n_nodes"]
    activations: Float[torch.Tensor, " n_features"]
    targets: list[TargetInfo]
    target_vectors: Float[torch.Tensor, "n_targets d_model"]
    prompt: str | None
    tokens: list[int]
    str_tokens: list[str]
    settings: dict[str, Any]
    rows_computed: Int[torch.Tensor, " n_rows"] = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    #: Named groups of node ids (adjacency order), saved with the graph.
    supernodes: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.adjacency = to_csr(self.adjacency)

    def __deepcopy__(self, memo: dict[int, Any]) -> Graph:
        """A deep copy (``copy.deepcopy`` cannot copy a sparse CSR tensor itself: it is cloned)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        adjacency = fields.pop("adjacency")
        out = Graph(adjacency=adjacency.clone(), **copy.deepcopy(fields, memo))
        memo[id(self)] = out
        return out

    @classmethod
    def from_tables(cls, *, kind: torch.Tensor, layer: torch.Tensor, position: torch.Tensor,
                    index: torch.Tensor, **rest: Any) -> Graph:
        """Build a graph from node tables (as :meth:`save` writes them)."""
        return cls(node_kind=kind, node_layer=layer, node_position=position, node_index=index, **rest)

    @property
    def n_nodes(self) -> int:
        return int(self.node_kind.numel())

    @property
    def n_features(self) -> int:
        return int(kind_mask(self.node_kind, NodeKind.FEATURE).sum())

    @property
    def nodes(self) -> list[Node]:
        """One record per node, in adjacency order."""
        return [
            Node(KIND_NAMES[k], la, p, i)
            for k, la, p, i in zip(
                self.node_kind.tolist(), self.node_layer.tolist(),
                self.node_position.tolist(), self.node_index.tolist(),
            )
        ]

    def indices(self, kind: NodeKind | str) -> Int[torch.Tensor, " n"]:
        """Adjacency indices of every node of one kind: a :class:`NodeKind` or its name
        ('feature', 'error', 'token', 'target'); ConfigError for other names."""
        return kind_mask(self.node_kind, kind).nonzero().flatten()

    def node_index_of(self, kind: NodeKind | str, layer: int, position: int, index: int = -1) -> int:
        """The adjacency index of a node (``kind``: a :class:`NodeKind` or its name), or KeyError
        naming it."""
        kind = NodeKind.parse(kind)
        match = (
            kind_mask(self.node_kind, kind) & (self.node_layer == layer)
            & (self.node_position == position) & (self.node_index == index)
        ).nonzero()
        if match.numel() == 0:
            raise KeyError(f"no {kind.label} node at layer {layer}, position {position}, index {index}")
        return int(match[0, 0])

    def edge_list(self) -> tuple[Int[torch.Tensor, " nnz"], Int[torch.Tensor, " nnz"],
                                 Float[torch.Tensor, " nnz"]]:
        """``(rows, cols, values)`` of every stored edge, row-major: ``values[e]`` is the direct
        effect of node ``cols[e]`` on node ``rows[e]``. ``cols`` and ``values`` are views of the
        adjacency; ``rows`` (int32) is expanded from its row offsets.

        Example:
            >>> targets, sources, weights = graph.edge_list()  # doctest: +SKIP
        """
        return edge_list(self.adjacency)

    def target_weights(self) -> Float[torch.Tensor, " n_targets"]:
        return torch.tensor([t.weight for t in self.targets], dtype=torch.float64)

    # ---- analysis (graph/influence.py, prune.py, restrict.py, scores.py, queries.py, plot.py) --
    def influence(self) -> Float[torch.Tensor, " n_nodes"]:
        """Influence of every node on the targets: ``w (A' + A'^2 + ...)``, A' = row-normalised |A|."""
        from .influence import node_influence

        return node_influence(self)

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Graph:
        """The smallest node and edge sets carrying these shares of influence (circuit-tracer's
        rules, see :mod:`tl_circuits.graph.prune`); tokens and targets are always kept."""
        from .prune import prune

        return prune(self, node_threshold, edge_threshold)

    @property
    def is_pruned(self) -> bool:
        return "pruning" in self.settings

    def restrict(
        self,
        keep: Int[torch.Tensor, " k"] | Bool[torch.Tensor, " n_nodes"],
        *,
        entry_mask: Bool[torch.Tensor, " nnz"] | None = None,
        settings_update: dict[str, Any] | None = None,
    ) -> Graph:
        """A new graph with the nodes ``keep`` (ids or a bool mask) and the edges among them, in
        any node order (see :func:`tl_circuits.graph.restrict.restrict`).

        Example:
            >>> sub = graph.restrict(graph.indices("token"))  # doctest: +SKIP
        """
        from .restrict import restrict

        return restrict(self, keep, entry_mask=entry_mask, settings_update=settings_update)

    def scores(self, keep_features: Int[torch.Tensor, " k"] | None = None) -> dict[str, float]:
        """``{'replacement', 'completeness'}`` (see :mod:`tl_circuits.graph.scores`).

        A pruned graph returns the scores computed when it was pruned (dropped features folded
        into their error nodes); ``keep_features`` computes that fold for any set of feature ids.
        """
        from .scores import graph_scores

        if keep_features is None and self.is_pruned:
            return dict(self.settings["pruning"]["scores"])
        return graph_scores(self, keep_features)

    def top_nodes(self, k: int = 10, kinds: tuple[NodeKind | str, ...] = ("feature",)) -> list[Any]:
        """The ``k`` nodes of ``kinds`` with the largest influence: ``RankedNode(id, node, influence)``."""
        from .queries import top_nodes

        return top_nodes(self, k, kinds)

    def strongest_path(self, source: Any, target: Any, *, via_features: bool = False) -> Any:
        """``Path(nodes, score)``: the path maximising the product of normalised edge weights
        (``via_features``: through features only, at least one)."""
        from .queries import strongest_path

        return strongest_path(self, source, target, via_features=via_features)

    def subgraph(self, node_ids: Any, hops: int = 1) -> Graph:
        """These nodes, every node within ``hops`` edges of them, and all edges among them."""
        from .queries import subgraph

        return subgraph(self, node_ids, hops)

    def head_loadings(self, source: int, target: int) -> tuple[list[tuple[int, int, float]], float]:
        """The heads carrying edge ``source -> target`` (adjacency indices) as
        :func:`tl_circuits.head_loadings` stored them: ``([(layer, head, weight), ...], rest)``,
        largest first, ``rest`` the part no listed head carries. KeyError if not computed.

        Example:
            >>> tl_circuits.head_loadings(model, transcoders, graph)  # doctest: +SKIP
            >>> heads, rest = graph.head_loadings(12, 40)  # doctest: +SKIP
        """
        nodes = self.nodes
        want = (list(nodes[source]), list(nodes[target]))
        for entry in self.settings.get("head_loadings", []):
            if (entry["source"], entry["target"]) == want:
                return [(int(la), int(h), float(w)) for la, h, w in entry["heads"]], float(entry["rest"])
        raise KeyError(f"no head loadings stored for edge {source} -> {target}; compute them with "
                       "tl_circuits.head_loadings(model, transcoders, graph) (edges between positions only)")

    def add_supernode(self, name: str, node_ids: Any, *, replace: bool = False) -> None:
        """Group nodes under ``name``; saved with the graph, usable by ``tl_circuits.intervene``."""
        from .queries import add_supernode

        add_supernode(self, name, node_ids, replace=replace)

    def plot(self, path: str | os.PathLike[str], **kwargs: Any) -> None:
        """Draw the (pruned) graph to a PNG or SVG file; see :func:`tl_circuits.graph.plot.plot_graph`."""
        from .plot import plot_graph

        plot_graph(self, path, **kwargs)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the graph to one safetensors file (tensors + JSON header), atomically."""
        from .io import save_graph

        save_graph(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Graph:
        """Read a graph written by :meth:`save`; never runs code from the file."""
        from .io import load_graph

        return load_graph(path)

    def __repr__(self) -> str:
        counts = ", ".join(f"{int(kind_mask(self.node_kind, k).sum())} {k.label}s" for k in NodeKind)
        return f"Graph({counts}, prompt={self.prompt!r})"
