"""Host-agnostic brute-force edges (after tests/core/reference.py), through ``Host.hooks`` only.

Frozen replacement model: every freeze site is *replaced* by its clean-run value, each MLP output
is its clean value plus ``skip(x_live) - skip(x_clean)``; perturb one source, re-run, read targets.
"""

from __future__ import annotations

import torch

from tl_circuits.hosts import as_host


def _clean(host, tokens, transcoders):
    names = set(host.freeze_hook_names()) | {host.embed_hook(), host.resid_final_hook()}
    names |= {tc.hook_name for tc in transcoders} | {host.mlp_out_hook(la) for la in range(host.n_layers)}
    clean = {}

    def grab(name):
        return lambda x: clean.__setitem__(name, x[0].detach().clone())

    with torch.no_grad(), host.hooks([(n, grab(n)) for n in sorted(names)]):
        host.forward(tokens[None])
    return clean


def _frozen_run(host, tokens, transcoders, clean, adds):
    live = {}
    by_layer = {tc.layer: tc for tc in transcoders}

    def put(name):
        return lambda x: clean[name][None].clone()

    def record(layer):
        return lambda x: live.__setitem__(layer, x[0])

    def added(name, base):
        out = base.clone()
        for (n, pos), vec in adds.items():
            if n == name:
                out[pos] += vec
        return out

    def mlp_out(layer):
        name = host.mlp_out_hook(layer)

        def hook(x):
            out = clean[name].clone()
            tc = by_layer.get(layer)
            if tc is not None and tc.W_skip is not None:
                out = out + tc.skip(live[layer]) - tc.skip(clean[tc.hook_name])
            return added(name, out)[None]
        return hook

    embed = host.embed_hook()
    hooks = [(n, put(n)) for n in host.freeze_hook_names()]
    hooks += [(embed, lambda x: added(embed, x[0])[None])]
    hooks += [(tc.hook_name, record(tc.layer)) for tc in transcoders]
    hooks += [(host.mlp_out_hook(la), mlp_out(la)) for la in range(host.n_layers)]
    hooks += [(host.resid_final_hook(), lambda x: live.__setitem__("final", x[0]))]
    with torch.no_grad(), host.hooks(hooks):
        host.forward(tokens[None])
    return live


def brute_force_rows(model, transcoders, graph):
    """Every computed row of ``graph``, recomputed column by column by perturbation."""
    host = as_host(model)
    tokens = torch.tensor(graph.tokens)
    clean = _clean(host, tokens, transcoders)
    embed, sources = host.embed_hook(), {}
    for col, node in enumerate(graph.nodes):
        if node.kind == "feature":
            tc = transcoders[node.layer]
            act = tc.encode(clean[tc.hook_name][node.position])[node.index]
            sources[col] = {(host.mlp_out_hook(node.layer), node.position): act * tc.W_dec[node.index]}
        elif node.kind == "error":
            name = host.mlp_out_hook(node.layer)
            x = clean[name][node.position]
            if node.layer in transcoders:
                tc = transcoders[node.layer]
                x = x - tc(clean[tc.hook_name][node.position])
            sources[col] = {(name, node.position): x}
        elif node.kind == "token":
            adds = {(embed, node.position): clean[embed][node.position]}
            if node.position == 0 and graph.settings["has_bos"]:
                for la in range(host.n_layers):
                    adds[(host.mlp_out_hook(la), 0)] = clean[host.mlp_out_hook(la)][0]
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

    base = reads(_frozen_run(host, tokens, transcoders, clean, {}))
    expected = torch.zeros(len(graph.rows_computed), graph.n_nodes, dtype=base.dtype)
    for col, adds in sources.items():
        expected[:, col] = reads(_frozen_run(host, tokens, transcoders, clean, adds)) - base
    return expected
