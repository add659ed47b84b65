"""What explaining attention starts from: the model, the prompt (or a graph's), checked; node ids.

A graph passed in must come from this model and these transcoders: the number of layers, d_model
and transcoder layers must match, and after the forward pass the graph's feature activations and
target probabilities must be the model's (:func:`check_graph_run`), else ConfigError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int

from ..attribution.layout import NodeLayout
from ..errors import ConfigError
from ..graph import Graph, NodeKind
from ..hosts.base import Host
from ..replacement import ReplacementState, prepare, read_prompt
from ..transcoders import Transcoders
from .sites import AttentionSites, attention_sites


@dataclass
class AttentionInputs:
    host: Host
    transcoders: Transcoders
    sites: AttentionSites
    tokens: Int[torch.Tensor, " pos"]
    has_bos: bool
    graph: Graph | None


def read_inputs(model: Any, transcoders: Any, prompt_or_graph: Any, *, prepend_bos: bool = True) -> AttentionInputs:
    """The host, a cast copy of the transcoders, the attention sites and the prompt's tokens (a
    graph's own tokens when a :class:`Graph` is given)."""
    host, transcoders = prepare(model, transcoders)
    sites = attention_sites(host)
    if isinstance(prompt_or_graph, Graph):
        graph = prompt_or_graph
        found = {"n_layers": graph.settings.get("n_layers"), "d_model": int(graph.target_vectors.shape[-1]),
                 "transcoder_layers": graph.settings.get("transcoder_layers")}
        wanted = {"n_layers": host.n_layers, "d_model": host.d_model,
                  "transcoder_layers": list(transcoders.layers)}
        if found != wanted:
            raise ConfigError(
                f"this graph was made with another model or transcoders ({found}; this model and "
                f"these transcoders have {wanted}): pass the model and transcoders it was built with"
            )
        tokens = torch.tensor(graph.tokens, dtype=torch.long)
        d_vocab = host.W_U.shape[1]
        if tokens.numel() == 0 or int(tokens.max()) >= d_vocab:
            raise ConfigError(f"this graph's tokens do not fit the model's vocabulary of {d_vocab}: "
                              "it was made with another model")
        return AttentionInputs(host, transcoders, sites, tokens, bool(graph.settings.get("has_bos")), graph)
    encoded = read_prompt(host, prompt_or_graph, prepend_bos=prepend_bos)
    tokens = encoded.tokens
    has_bos = host.bos_token_id is not None and int(tokens[0]) == host.bos_token_id
    return AttentionInputs(host, transcoders, sites, tokens, has_bos, None)


def check_graph_run(graph: Graph, state: ReplacementState, *, rtol: float = 1e-3) -> None:
    """ConfigError unless the graph's feature activations and target probabilities are those of
    this forward pass (same model, same transcoders)."""
    feats = graph.indices(NodeKind.FEATURE)
    if feats.numel():
        layer, pos = graph.node_layer[feats], graph.node_position[feats]
        index = graph.node_index[feats]
        found = torch.stack([state.acts[int(la)][int(p), int(i)].detach().double().cpu()
                             if int(la) in state.acts else torch.tensor(0.0, dtype=torch.float64)
                             for la, p, i in zip(layer, pos, index)])
        stored = graph.activations.double()
        if found.shape != stored.shape or not torch.allclose(found, stored, rtol=rtol, atol=1e-5 * float(stored.abs().max())):
            raise ConfigError(
                "the graph's feature activations differ from this model's with these transcoders: "
                "the graph was made with another model or transcoders; pass the ones it was built with"
            )
    probs = torch.softmax(state.logits[0, -1].detach().double(), -1).cpu()
    for t in graph.targets:
        if t.kind == "logit" and len(t.token_ids) == 1:
            p = float(probs[t.token_ids[0]])
            if abs(p - t.probability) > rtol * max(t.probability, 1e-3) + 1e-6:
                raise ConfigError(
                    f"the graph gives target {t.label!r} probability {t.probability:.4g}, this model "
                    f"{p:.4g}: the graph was made with another model; pass the one it was built with"
                )


def node_ids(layout: NodeLayout) -> list[str]:
    """The viewer's node id of every feature, error and token node of ``layout``, in its order
    (``{layer}_{feature}_{pos}``, ``{layer}_-1_{pos}``, ``E_{token}_{pos}``)."""
    ids = [f"{la}_{ix}_{p}" for la, ix, p in zip(layout.feat_layer.tolist(), layout.feat_idx.tolist(),
                                                  layout.feat_pos.tolist())]
    ids += [f"{la}_-1_{p}" for la, p in zip(layout.err_layer.tolist(), layout.err_pos.tolist())]
    ids += [f"E_{t}_{p}" for p, t in enumerate(layout.tokens.tolist())]
    return ids


def check_head(sites: AttentionSites, n_layers: int, layer: int, head: int) -> None:
    """ConfigError for a layer or head the model does not have."""
    if not 0 <= layer < n_layers:
        raise ConfigError(f"layer {layer} does not exist: the model has layers 0..{n_layers - 1}")
    if not 0 <= head < sites.n_heads:
        raise ConfigError(f"head {head} does not exist: the model has heads 0..{sites.n_heads - 1} per layer")


def check_positions(n_pos: int, query_pos: int, key_pos: int) -> None:
    """ConfigError for a position outside the prompt, or a key after the query (masked)."""
    for name, p in (("query_pos", query_pos), ("key_pos", key_pos)):
        if not 0 <= p < n_pos:
            raise ConfigError(f"{name}={p} is outside the prompt's positions 0..{n_pos - 1}")
    if key_pos > query_pos:
        raise ConfigError(
            f"key_pos={key_pos} is after query_pos={query_pos}: causal attention masks it (the "
            "score is not used); give a key position at or before the query position"
        )
