"""The node schema of an attribution graph: the kinds of node and the order they come in.

Every graph (and every row block the engine fills) lists its nodes in one order, which the
adjacency's rows and columns follow:

    features (layer, position, feature index) | errors (layer, position) | tokens (position) | targets

- a **feature** node is one active transcoder feature at one position (``index`` = feature id);
- an **error** node is what the transcoders miss of one MLP output at one position
  (``index`` = -1), or the whole MLP output of a layer without a transcoder;
- a **token** node is the input embedding at one position (``layer`` = -1, ``index`` = token id);
- a **target** node is one read-out of the final residual at the last position, e.g. a logit
  (``layer`` = n_layers, ``index`` = its number among the targets).

Node kinds are stored as ``int8`` codes (``NodeKind`` values) in graph files; the names
(``"feature"``, ...) are what users pass and see. Code compares kinds through this enum only.

The order is a contract of the graphs :func:`tl_circuits.attribute` builds (the engine's row
blocks rely on it); what reads a ``Graph`` relies only on two weaker rules, so hand-built graphs
and sub-graphs may list their nodes in any order:

- ``Graph.activations[r]`` belongs to the ``r``-th feature node in node order
  (:func:`feature_rank`);
- ``Graph.targets[t]`` (and ``target_vectors[t]``) belongs to the ``t``-th target node in node
  order, whose ``index`` is ``t``.
"""

from __future__ import annotations

from enum import IntEnum

import torch
from jaxtyping import Bool, Int

from ..errors import ConfigError


class NodeKind(IntEnum):
    """The kind of a graph node; its value is the code stored in ``Graph.node_kind``."""

    FEATURE = 0
    ERROR = 1
    TOKEN = 2
    TARGET = 3

    @property
    def label(self) -> str:
        """The user-facing name: ``"feature"``, ``"error"``, ``"token"`` or ``"target"``."""
        return self.name.lower()

    @classmethod
    def parse(cls, kind: str | int | NodeKind) -> NodeKind:
        """A kind from its name or code; ConfigError naming the valid ones otherwise.

        Example:
            >>> NodeKind.parse("error"), NodeKind.parse(3).label
            (<NodeKind.ERROR: 1>, 'target')
        """
        if isinstance(kind, str):
            try:
                return cls[kind.upper()]
            except KeyError:
                pass
        elif isinstance(kind, int) and not isinstance(kind, bool):
            try:
                return cls(kind)
            except ValueError:
                pass
        raise ConfigError(f"unknown node kind {kind!r}; use one of {list(KIND_NAMES)}")


#: Node kind names in code order (``KIND_NAMES[NodeKind.TOKEN] == "token"``).
KIND_NAMES: tuple[str, ...] = tuple(k.label for k in NodeKind)


def kind_mask(node_kind: Int[torch.Tensor, " n"], *kinds: NodeKind | str) -> Bool[torch.Tensor, " n"]:
    """Which entries of a ``node_kind`` table are of any of ``kinds``.

    Example:
        >>> kind_mask(torch.tensor([0, 1, 2, 3]), NodeKind.TOKEN, "target").tolist()
        [False, False, True, True]
    """
    mask = torch.zeros(node_kind.shape, dtype=torch.bool, device=node_kind.device)
    for kind in kinds:
        mask |= node_kind == int(NodeKind.parse(kind))
    return mask


def feature_rank(node_kind: Int[torch.Tensor, " n"]) -> Int[torch.Tensor, " n"]:
    """Each node's number among the feature nodes (its entry of ``Graph.activations``); -1 for
    nodes of other kinds.

    Example:
        >>> feature_rank(torch.tensor([2, 0, 1, 0, 3])).tolist()
        [-1, 0, -1, 1, -1]
    """
    is_feature = node_kind == int(NodeKind.FEATURE)
    rank = torch.cumsum(is_feature.long(), 0) - 1
    return torch.where(is_feature, rank, torch.full_like(rank, -1))
