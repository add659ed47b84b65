"""Graphs: nodes and sparse adjacency, influence, file I/O."""

from .graph import KIND_NAMES, Graph, Node, NodeKind, TargetInfo

__all__ = ["KIND_NAMES", "Graph", "Node", "NodeKind", "TargetInfo"]

from .queries import Path, RankedNode  # noqa: E402

__all__ += ["Path", "RankedNode"]
