"""Node layout of a graph: which nodes exist and where each sits in the adjacency order.

Order (the node schema, :mod:`tl_circuits.graph.nodes`): features (layer, position, index) |
errors (layer, position) | tokens (position) | targets.
The BOS position (when the prompt starts with one) carries no feature or error node: its residual
stream is the same for every prompt (it attends only to itself) and models use it as an attention
sink, so its features would dominate every graph while saying nothing about the prompt. What the
MLPs write there is folded into the BOS token node, which keeps the graph exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from ..graph.nodes import NodeKind
from ..replacement import ReplacementState


@dataclass
class NodeLayout:
    """Tables of the nodes, in adjacency order. ``start`` is the first non-BOS position."""

    feat_layer: Int[torch.Tensor, " n_features"]
    feat_pos: Int[torch.Tensor, " n_features"]
    feat_idx: Int[torch.Tensor, " n_features"]
    feat_act: Float[torch.Tensor, " n_features"]
    err_layer: Int[torch.Tensor, " n_errors"]
    err_pos: Int[torch.Tensor, " n_errors"]
    tokens: Int[torch.Tensor, " pos"]
    n_targets: int
    start: int
    n_layers: int

    @property
    def n_features(self) -> int:
        return int(self.feat_layer.numel())

    @property
    def n_errors(self) -> int:
        return int(self.err_layer.numel())

    @property
    def n_pos(self) -> int:
        return int(self.tokens.numel())

    @property
    def error_offset(self) -> int:
        return self.n_features

    @property
    def token_offset(self) -> int:
        return self.n_features + self.n_errors

    @property
    def target_offset(self) -> int:
        return self.token_offset + self.n_pos

    @property
    def n_nodes(self) -> int:
        return self.target_offset + self.n_targets

    def feature_slice(self, layer: int) -> slice:
        """Columns of the features of ``layer`` (contiguous, since features sort by layer)."""
        lo = int(torch.searchsorted(self.feat_layer, layer, right=False))
        hi = int(torch.searchsorted(self.feat_layer, layer, right=True))
        return slice(lo, hi)

    def error_slice(self, layer: int) -> slice:
        per = self.n_pos - self.start
        lo = self.error_offset + layer * per
        return slice(lo, lo + per)

    def subset(self, keep: Int[torch.Tensor, " k"]) -> NodeLayout:
        """The same layout with only the features ``keep`` (sorted ids, so the order holds)."""
        return NodeLayout(
            feat_layer=self.feat_layer[keep], feat_pos=self.feat_pos[keep],
            feat_idx=self.feat_idx[keep], feat_act=self.feat_act[keep.to(self.feat_act.device)],
            err_layer=self.err_layer, err_pos=self.err_pos, tokens=self.tokens,
            n_targets=self.n_targets, start=self.start, n_layers=self.n_layers,
        )

    def node_tables(self) -> dict[str, torch.Tensor]:
        """kind, layer, position, index for every node (index: feature id, token id, target #)."""
        n_layers = self.n_layers
        pos = torch.arange(self.n_pos)
        kind = torch.cat([
            torch.full((n,), int(k), dtype=torch.int8)
            for n, k in ((self.n_features, NodeKind.FEATURE), (self.n_errors, NodeKind.ERROR),
                         (self.n_pos, NodeKind.TOKEN), (self.n_targets, NodeKind.TARGET))
        ])
        layer = torch.cat([
            self.feat_layer, self.err_layer, torch.full((self.n_pos,), -1),
            torch.full((self.n_targets,), n_layers),
        ])
        position = torch.cat([
            self.feat_pos, self.err_pos, pos, torch.full((self.n_targets,), self.n_pos - 1),
        ])
        index = torch.cat([
            self.feat_idx, torch.full((self.n_errors,), -1), self.tokens.cpu(),
            torch.arange(self.n_targets),
        ])
        return {"kind": kind, "layer": layer.long(), "position": position.long(),
                "index": index.long()}


def build_layout(
    state: ReplacementState, tokens: Int[torch.Tensor, " pos"], n_layers: int, *,
    has_bos: bool, n_targets: int,
) -> NodeLayout:
    """Active features and error nodes of one forward pass of the replacement model."""
    start = 1 if has_bos else 0
    n_pos = int(tokens.numel())
    layers, poss, idxs, acts = [], [], [], []
    for layer in sorted(state.acts):
        a = state.acts[layer]
        a = torch.cat([torch.zeros_like(a[:start]), a[start:]])
        nz = a.nonzero()
        layers.append(torch.full((nz.shape[0],), layer, dtype=torch.long))
        poss.append(nz[:, 0].cpu())
        idxs.append(nz[:, 1].cpu())
        acts.append(a[nz[:, 0], nz[:, 1]].detach())
    empty = torch.zeros(0, dtype=torch.long)
    err_pos = torch.arange(start, n_pos).repeat(n_layers)
    err_layer = torch.arange(n_layers).repeat_interleave(n_pos - start)
    return NodeLayout(
        feat_layer=torch.cat(layers) if layers else empty,
        feat_pos=torch.cat(poss) if poss else empty,
        feat_idx=torch.cat(idxs) if idxs else empty,
        feat_act=torch.cat(acts) if acts else torch.zeros(0),
        err_layer=err_layer, err_pos=err_pos, tokens=tokens.cpu(), n_targets=n_targets,
        start=start, n_layers=n_layers,
    )
