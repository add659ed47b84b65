"""Brute force for attention explanations, independent of tl_circuits.attention: perturb sources in
the frozen replacement model (tests/hosts/reference.py), read queries, keys and target read-outs."""

from __future__ import annotations

import torch

from tests.hosts.reference import _clean, _frozen_run, source_adds
from tl_circuits.graph import Node


def parse_id(node_id: str) -> Node:
    """The graph node of a viewer node id (feature, error or token)."""
    a, b, c = node_id.split("_")
    if a == "E":
        return Node("token", -1, int(c), int(b))
    if b == "-1":
        return Node("error", int(a), int(c), -1)
    return Node("feature", int(a), int(c), int(b))


def combine(*adds):
    out = {}
    for a, scale in adds:
        for key, vec in a.items():
            out[key] = out.get(key, 0) + scale * vec
    return out


def score_scale(host, layer):
    """The model's own score scale and soft-cap (from its config / attention module)."""
    model = getattr(host, "model", None)
    if model is not None and hasattr(model, "cfg"):
        cap = model.cfg.attn_scores_soft_cap
        return 1.0 / model.blocks[layer].attn.attn_scale, (cap if cap > 0 else None)
    from tl_circuits.hosts.hf_modules import module_at

    attn = module_at(host.sites.layers[layer], host.sites.sites.attn)
    cap = getattr(host.sites.config, "attn_logit_softcapping", None)
    return float(attn.scaling), cap


def frozen_scores(host, tokens, transcoders, rows, layer, head, q, k, *, rotary=True):
    """Pre-softmax scores of (layer, head, q -> k) in each perturbed copy of the frozen model."""
    full = _clean(host, tokens, transcoders)
    names = {s: f"blocks.{layer}.attn.hook_{'rot_' if rotary else ''}{s}" for s in "qk"}
    got = {}

    def keep(name):
        return lambda x: got.__setitem__(name, x)

    extra = [(n, keep(n)) for n in names.values()]
    _frozen_run(host, tokens, transcoders, full, rows, extra=extra)
    qv, kv = got[names["q"]], got[names["k"]]
    kvh = head // (qv.shape[2] // kv.shape[2])
    scale, _ = score_scale(host, layer)
    return scale * (qv[:, q, head] * kv[:, k, kvh]).sum(-1)


def ablated_edges(host, tokens, transcoders, graph, edges, ablate=None):
    """The edges (source, target) in the frozen model, with, if given, ``ablate = (layer, head)``:
    that head's attention from each target's position to every other position set to zero."""
    full = _clean(host, tokens, transcoders)
    nodes = graph.nodes
    adds = source_adds(host, transcoders, [nodes[s] for s, _ in edges], full,
                       has_bos=graph.settings["has_bos"])
    out = []
    for e, (_, t) in enumerate(edges):
        clean = dict(full)
        if ablate is not None:
            la, h = ablate
            name = f"blocks.{la}.attn.hook_pattern"
            p = clean[name].clone()
            pt = nodes[t].position
            keep = p[:, h, pt, pt].clone()
            p[:, h, pt, :] = 0.0
            p[:, h, pt, pt] = keep
            clean[name] = p
        live = _frozen_run(host, tokens, transcoders, clean, [{}, adds[e]])
        node = nodes[t]
        if node.kind == "target":
            final = live["final"][:, node.position]
            read = final @ graph.target_vectors[node.index].to(final)
        else:
            tc = transcoders[node.layer]
            read = live[node.layer][:, node.position] @ tc.W_enc[:, node.index]
        out.append(read[1] - read[0])
    return torch.stack(out)
