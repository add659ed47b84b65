"""Host-agnostic brute-force edges (after tests/core/reference.py), through ``Host.hooks`` only.

Frozen replacement model: every freeze site is *replaced* by its clean-run value, each MLP output
is its clean value plus ``skip(x_live) - skip(x_clean)``; perturb one source, re-run, read targets.
All perturbations run in one batched forward pass: batch row 0 is unperturbed, row ``1 + i``
perturbs the ``i``-th source column alone (rows never interact: the freezes hold every pattern and
norm scale at its clean value), so one pass replaces hundreds of re-runs.
"""

from __future__ import annotations

import torch

from tl_circuits.hosts import as_host

#: (site name, position) -> vector added there
Adds = dict[tuple[str, int], torch.Tensor]


def _clean(host, tokens, transcoders):
    """Every site's clean value, batch dimension kept (size 1, or flattened into the first dim)."""
    names = set(host.freeze_hook_names()) | {host.embed_hook(), host.resid_final_hook()}
    names |= {tc.hook_name for tc in transcoders} | {host.mlp_out_hook(la) for la in range(host.n_layers)}
    clean = {}

    def grab(name):
        return lambda x: clean.__setitem__(name, x.detach().clone())

    with torch.no_grad(), host.hooks([(n, grab(n)) for n in sorted(names)]):
        host.forward(tokens[None])
    return clean


def _frozen_run(host, tokens, transcoders, clean, rows: list[Adds], extra=()):
    """One forward pass of ``len(rows)`` copies of the frozen model, row ``b`` perturbed by ``rows[b]``
    (``extra``: more hooks, after these, e.g. to read queries and keys)."""
    live = {}
    batch = len(rows)
    by_layer = {tc.layer: tc for tc in transcoders}
    adds_at: dict[str, list[tuple[int, int, torch.Tensor]]] = {}
    for b, adds in enumerate(rows):
        for (name, pos), vec in adds.items():
            adds_at.setdefault(name, []).append((b, pos, vec))

    def repeat(value):
        # batch-major, so also right for sites whose batch is flattened with other dimensions
        # (HookedTransformer's Qwen3 q/k norms: [batch * pos * head, 1])
        return value.repeat(batch, *([1] * (value.dim() - 1)))

    def added(name, out):
        for b, pos, vec in adds_at.get(name, []):
            out[b, pos] += vec
        return out

    def put(name):
        return lambda x: repeat(clean[name])

    def record(layer):
        return lambda x: live.__setitem__(layer, x)

    def mlp_out(layer):
        name = host.mlp_out_hook(layer)

        def hook(x):
            out = repeat(clean[name])
            tc = by_layer.get(layer)
            if tc is not None and tc.W_skip is not None:
                out = out + tc.skip(live[layer]) - tc.skip(clean[tc.hook_name][0])
            return added(name, out)
        return hook

    embed = host.embed_hook()
    hooks = [(n, put(n)) for n in host.freeze_hook_names()]
    hooks += [(embed, lambda x: added(embed, x.clone()))]
    hooks += [(tc.hook_name, record(tc.layer)) for tc in transcoders]
    hooks += [(host.mlp_out_hook(la), mlp_out(la)) for la in range(host.n_layers)]
    hooks += [(host.resid_final_hook(), lambda x: live.__setitem__("final", x))]
    with torch.no_grad(), host.hooks([*hooks, *extra]):
        host.forward(tokens[None].expand(batch, -1))
    return live


def source_adds(host, transcoders, nodes, full, *, has_bos) -> dict[int, Adds]:
    """What each feature, error and token node of ``nodes`` writes, from scratch: {column: adds}."""
    clean = {name: value[0] for name, value in full.items()}
    embed, sources = host.embed_hook(), {}
    for col, node in enumerate(nodes):
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
            if node.position == 0 and has_bos:
                for la in range(host.n_layers):
                    adds[(host.mlp_out_hook(la), 0)] = clean[host.mlp_out_hook(la)][0]
            sources[col] = adds
    return sources


def brute_force_rows(model, transcoders, graph):
    """Every computed row of ``graph``, recomputed column by column by perturbation."""
    host = as_host(model)
    tokens = torch.tensor(graph.tokens)
    full = _clean(host, tokens, transcoders)
    sources = source_adds(host, transcoders, graph.nodes, full, has_bos=graph.settings["has_bos"])

    def reads(live):
        """``[rows_computed, batch]``: each computed row's read-out in every batch row."""
        out = []
        for row in graph.rows_computed.tolist():
            node = graph.nodes[row]
            if node.kind == "target":
                final = live["final"][:, node.position]
                out.append(final @ graph.target_vectors[node.index].to(final))
            else:
                tc = transcoders[node.layer]
                out.append(live[node.layer][:, node.position] @ tc.W_enc[:, node.index])
        return torch.stack(out)

    cols = list(sources)
    read = reads(_frozen_run(host, tokens, transcoders, full, [{}] + [sources[c] for c in cols]))
    expected = torch.zeros(len(graph.rows_computed), graph.n_nodes, dtype=read.dtype)
    expected[:, cols] = read[:, 1:] - read[:, :1]
    return expected
