"""Brute-force edges, independent of tl_circuits' engine: perturb one source node in the frozen
replacement model (TransformerLens hooks written here from scratch), re-run, read every target.

Frozen replacement model: attention patterns and norm scales are *replaced* by their clean-run
values, each MLP output is its clean value plus ``skip(x_live) - skip(x_clean)``. It is affine in
what is added at any write site, so in float64 the change of a read-out when a source's vector is
added equals the edge exactly (up to round-off).
"""

from __future__ import annotations

import torch


def _clean_cache(model, tokens):
    def names(n):
        return n.endswith(("hook_pattern", "hook_scale", "hook_mlp_out")) or n in (
            "blocks.0.hook_resid_pre", "unembed.hook_in") or "hook_normalized" in n or "resid" in n

    _, cache = model.run_with_cache(tokens[None], names_filter=names)
    return {k: v[0] for k, v in cache.items()}


def frozen_run(model, tokens, transcoders, clean, adds):
    """Run the frozen replacement model with ``adds[(hook, pos)] = vector`` added; return the live
    transcoder inputs and the final residual."""
    live = {}

    def put(name):
        def hook(x, hook):
            return clean[name][None].clone()
        return hook

    def record(layer):
        def hook(x, hook):
            live[layer] = x[0]
            return x
        return hook

    def mlp_out(layer):
        name = f"blocks.{layer}.hook_mlp_out"

        def hook(x, hook):
            out = clean[name].clone()
            if layer in transcoders and transcoders[layer].W_skip is not None:
                tc = transcoders[layer]
                out = out + tc.skip(live[layer]) - tc.skip(clean[tc.hook_name])
            return out[None]
        return hook

    def add(name):
        def hook(x, hook):
            x = x.clone()
            for (n, pos), vec in adds.items():
                if n == name:
                    x[0, pos] += vec
            return x
        return hook

    fwd = [(n, put(n)) for n in clean if n.endswith(("hook_pattern", "hook_scale"))]
    fwd += [(tc.hook_name, record(tc.layer)) for tc in transcoders]
    fwd += [(f"blocks.{la}.hook_mlp_out", mlp_out(la)) for la in range(model.cfg.n_layers)]
    fwd += [(n, add(n)) for n in {n for n, _ in adds}]

    def final(x, hook):
        live["final"] = x[0]

    fwd.append(("unembed.hook_in", final))
    with torch.no_grad():
        model.run_with_hooks(tokens[None], fwd_hooks=fwd)
    return live


def brute_force_rows(model, transcoders, graph):
    """Every computed row of ``graph``, recomputed column by column by perturbation."""
    tokens = torch.tensor(graph.tokens)
    clean = _clean_cache(model, tokens)
    # Each source's write vector and site, from scratch.
    sources = {}
    nodes = set(graph.nodes)
    for col, node in enumerate(graph.nodes):
        if node.kind == "feature":
            tc = transcoders[node.layer]
            act = tc.encode(clean[tc.hook_name][node.position])[node.index]
            sources[col] = {(f"blocks.{node.layer}.hook_mlp_out", node.position): act * tc.W_dec[node.index]}
        elif node.kind == "error":
            name = f"blocks.{node.layer}.hook_mlp_out"
            x = clean[name][node.position]
            if node.layer in transcoders:
                tc = transcoders[node.layer]
                x = x - tc(clean[tc.hook_name][node.position])
                # Active features that are not nodes (outside a feature pool) fold in here.
                acts = tc.encode(clean[tc.hook_name][node.position])
                for i in acts.nonzero().flatten().tolist():
                    if ("feature", node.layer, node.position, i) not in nodes:
                        x = x + acts[i] * tc.W_dec[i]
            sources[col] = {(name, node.position): x}
        elif node.kind == "token":
            adds = {("blocks.0.hook_resid_pre", node.position): clean["blocks.0.hook_resid_pre"][node.position]}
            if node.position == 0 and graph.settings["has_bos"]:
                for la in range(model.cfg.n_layers):
                    name = f"blocks.{la}.hook_mlp_out"
                    adds[(name, 0)] = clean[name][0]
            sources[col] = adds

    def reads(live):
        out = []
        for row in graph.rows_computed.tolist():
            node = graph.nodes[row]
            if node.kind == "target":
                out.append(graph.target_vectors[node.index].to(live["final"]) @ live["final"][node.position])
            else:
                tc = transcoders[node.layer]
                out.append(tc.W_enc[:, node.index] @ live[node.layer][node.position])
        return torch.stack(out)

    base = reads(frozen_run(model, tokens, transcoders, clean, {}))
    expected = torch.zeros(len(graph.rows_computed), graph.n_nodes, dtype=base.dtype)
    for col, adds in sources.items():
        expected[:, col] = reads(frozen_run(model, tokens, transcoders, clean, adds)) - base
    return expected
