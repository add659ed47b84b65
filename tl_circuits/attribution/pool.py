"""The feature pool of a budgeted graph: which active features stay nodes, the rest fold into errors.

Under ``max_feature_nodes`` only a few thousand features get rows, but every active feature is a
column of every row (a source), and a long prompt has millions of them (SmolLM2, k=32, 2,048
tokens: about 2M). Keeping them all would make the row block rows x millions. So, once the target
rows are known, the ``feature_pool`` features with the largest direct influence on the targets
stay nodes (the budget's rows are chosen among them) and every other active feature folds into
the error node at each layer and position it writes: that error node's vector becomes the MLP
output minus what the pool's features write there. The graph stays exact (every edge is still
the direct effect of one node's vector, which the brute-force tests check); only the split of the
folded features' share between "feature" and "error" is given up, as for features pruned away.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int

from ..graph.influence import influence_from_rows
from ..transcoders import Transcoders
from .layout import NodeLayout

#: Features decoded at once while folding (bounds the transient ``chunk x d_model`` block).
_CHUNK = 4096


def pool_size(feature_pool: int | None, budget: int) -> int:
    """Features kept as nodes: ``feature_pool``, or by default eight times the row budget (at
    least 8,192), never fewer than the budget."""
    size = max(8 * budget, 8192) if feature_pool is None else feature_pool
    return max(size, budget)


def choose_pool(
    target_rows: Float[torch.Tensor, "n_targets n_nodes"],
    target_nodes: Int[torch.Tensor, " n_targets"],
    weights: Float[torch.Tensor, " n_targets"],
    n_features: int,
    size: int,
) -> Int[torch.Tensor, " size"]:
    """Feature ids (sorted) of the ``size`` features with the largest influence on the targets
    through their direct edges; ties broken towards lower ids so the choice is reproducible."""
    influence = influence_from_rows(target_rows, target_nodes, weights)[:n_features].cpu()
    return torch.sort(influence.topk(size).indices).values


def fold_features(
    layout: NodeLayout,
    transcoders: Transcoders,
    errors: dict[int, Float[torch.Tensor, "pos d_model"]],
    keep: Int[torch.Tensor, " k"],
) -> tuple[NodeLayout, dict[int, Float[torch.Tensor, "pos d_model"]]]:
    """The layout with only the ``keep`` features, and error vectors that carry the others."""
    dropped = torch.ones(layout.n_features, dtype=torch.bool)
    dropped[keep] = False
    folded = {m: e.detach().clone() for m, e in errors.items()}
    ids = dropped.nonzero().flatten()
    for lo in range(0, ids.numel(), _CHUNK):
        chunk = ids[lo : lo + _CHUNK]
        layers, pos = layout.feat_layer[chunk], layout.feat_pos[chunk]
        for layer in layers.unique().tolist():
            here = layers == layer
            idx = layout.feat_idx[chunk[here]].to(layout.feat_act.device)
            act = layout.feat_act[chunk[here]]
            for out, vec in transcoders.decoder_vectors(layer, idx).items():
                target = folded[out]
                target.index_add_(0, pos[here].to(target.device), (vec * act[:, None]).to(target.dtype))
    return layout.subset(keep), folded
