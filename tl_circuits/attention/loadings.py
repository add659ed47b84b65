"""Head loadings: each cross-position edge split into the parts carried by each attention head.

In the frozen replacement model an edge ``A[t, s]`` is a sum over paths from source ``s`` (at
position ``p_s``) to target ``t`` (at ``p_t != p_s``). Only attention moves information between
positions, and causal attention only forward, so a path that leaves ``p_t`` never returns: every
path from ``s`` to ``t`` *enters* ``p_t`` exactly once, through one head ``(l, h)`` attending from
``p_t`` to some key position ``i != p_t``. Grouping the paths by that head is exact and additive:

    A[t, s] = sum_{l, h} L_{l,h}[t, s]
    L_{l,h}[t, s] = sum_{i != p_t} P_{l,h}[p_t, i] < g_{t,l,h}, dv_{s,l,h}[i] >

with ``P`` the frozen pattern, ``g_{t,l,h} = d h_t / d z_{l,h}[p_t]`` the gradient of the
target's read-out at the head's mixed value (its output before ``W_O``) at ``p_t``, and
``dv_{s,l,h}[i]`` what source ``s`` adds to the head's value vector at ``i`` (its forward-mode
derivative along ``v_s``). Zeroing ``P_{l,h}[p_t, i]`` for every ``i != p_t`` in the frozen model
removes exactly the paths of ``L_{l,h}[t, s]``, so the edge drops by exactly the loading: that is
the brute-force check (tests/attention). Cost: one backward pass per target and one forward-mode
pass per ``batch`` sources, about what the graph's own rows cost.

Sources are the graph's nodes with their write vectors as in the graph; for a graph built under a
feature pool, an error node's edge also holds the folded features, which this does not include
(``rest`` then shows the difference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..graph import Graph, NodeKind
from ..hosts.base import HookFn
from ..replacement import ReplacementState, replacement_hooks, run_replacement
from .inputs import AttentionInputs, check_graph_run, read_inputs


@dataclass
class HeadLoadings:
    """Per-head parts of graph edges: ``loadings[e, layer, head]`` for edge ``e`` from graph node
    ``sources[e]`` to ``targets[e]`` (adjacency indices); ``edges[e]`` is the graph's weight and
    ``rest[e] = edges[e] - loadings[e].sum()`` (zero up to round-off, see the module docs)."""

    sources: Int[torch.Tensor, " e"]
    targets: Int[torch.Tensor, " e"]
    loadings: Float[torch.Tensor, "e n_layers n_heads"]
    edges: Float[torch.Tensor, " e"]

    @property
    def rest(self) -> Float[torch.Tensor, " e"]:
        return self.edges - self.loadings.sum((1, 2))

    def top(self, e: int, k: int = 8) -> list[tuple[int, int, float]]:
        """The ``k`` heads of edge ``e`` with the largest |loading|: (layer, head, loading)."""
        flat = self.loadings[e].flatten()
        order = flat.abs().argsort(descending=True)[:k]
        n_heads = self.loadings.shape[2]
        return [(int(j) // n_heads, int(j) % n_heads, float(flat[j])) for j in order if flat[j] != 0]


def head_loadings(
    model: Any, transcoders: Any, graph: Graph, edges: Sequence[tuple[int, int]] | None = None, *,
    max_edges: int | None = 2000, top: int = 8, store: bool = True, batch_size: int = 16,
    progress: bool = True,
) -> HeadLoadings:
    """The heads that carry ``graph``'s cross-position edges (see the module docs for the split).

    Args:
        model, transcoders: the ones ``graph`` was built with (checked).
        edges: (source, target) adjacency indices; default: every stored edge whose ends sit at
            different positions, the ``max_edges`` largest by |weight|.
        top: with ``store``, the heads per edge kept in ``graph.settings["head_loadings"]``
            (read back with :meth:`Graph.head_loadings`; the viewer export lists them).
        batch_size: sources per forward-mode pass.

    Example:
        >>> loads = tc.head_loadings(model, transcoders, graph.prune())  # doctest: +SKIP
        >>> loads.top(0)  # [(layer, head, part of the edge), ...]  # doctest: +SKIP
    """
    inp = read_inputs(model, transcoders, graph)
    src, tgt = _edges(graph, edges, max_edges)
    weights = _weights(graph, src, tgt)
    z_cap: dict[int, torch.Tensor] = {}
    p_cap: dict[int, torch.Tensor] = {}
    n_layers = inp.host.n_layers
    hooks = [(inp.sites.z(la), _keep(z_cap, la)) for la in range(n_layers)]
    hooks += [(inp.sites.pattern(la), _keep(p_cap, la, detach=True)) for la in range(n_layers)]
    state = run_replacement(inp.host, inp.transcoders, inp.tokens, extra=hooks)
    check_graph_run(graph, state)
    pattern = torch.stack([p_cap[la][0] for la in range(n_layers)]).double().cpu()  # L H q k
    n_heads = pattern.shape[1]
    t_nodes = tgt.unique()
    grads = _target_grads(inp, graph, state, z_cap, t_nodes, batch_size)  # n_t L H d
    t_row = {int(t): r for r, t in enumerate(t_nodes.tolist())}
    s_nodes = src.unique()
    out = torch.zeros(src.numel(), n_layers, n_heads, dtype=torch.float64)
    bar = tqdm(total=s_nodes.numel(), desc="head loadings", unit="source", disable=not progress)
    for lo in range(0, s_nodes.numel(), batch_size):
        chunk = s_nodes[lo : lo + batch_size]
        tangents = _value_tangents(inp, graph, state, chunk.tolist())  # B L pos Hkv d
        rep = n_heads // tangents.shape[3]
        tv = tangents.repeat_interleave(rep, dim=3)  # B L pos H d
        for b, s in enumerate(chunk.tolist()):
            es = (src == s).nonzero().flatten()
            rows = torch.tensor([t_row[int(t)] for t in tgt[es].tolist()], dtype=torch.long)
            p_t = graph.node_position[tgt[es]]
            w = pattern[:, :, p_t].permute(2, 0, 1, 3).clone()  # e L H k
            w[torch.arange(es.numel()), :, :, p_t] = 0.0  # only keys other than the target's position
            out[es] = torch.einsum("elhi,elhd,lihd->elh", w, grads[rows], tv[b])
        bar.update(chunk.numel())
    bar.close()
    result = HeadLoadings(src, tgt, out, weights)
    if store:
        store_loadings(graph, result, top)
    return result


def store_loadings(graph: Graph, loads: HeadLoadings, top: int) -> None:
    """Keep each edge's ``top`` heads and the rest in ``graph.settings["head_loadings"]``, nodes
    named by (kind, layer, position, index) so the entries survive pruning and restriction."""
    nodes = graph.nodes
    entries = []
    for e in range(loads.sources.numel()):
        heads = loads.top(e, top)
        s, t = nodes[int(loads.sources[e])], nodes[int(loads.targets[e])]
        entries.append({"source": [s.kind, s.layer, s.position, s.index],
                        "target": [t.kind, t.layer, t.position, t.index],
                        "heads": [[la, h, w] for la, h, w in heads],
                        "rest": float(loads.edges[e]) - sum(w for _, _, w in heads)})
    graph.settings["head_loadings"] = entries


def _edges(graph: Graph, edges: Sequence[tuple[int, int]] | None,
           max_edges: int | None) -> tuple[Int[torch.Tensor, " e"], Int[torch.Tensor, " e"]]:
    if edges is not None:
        pairs = torch.tensor([[int(s), int(t)] for s, t in edges], dtype=torch.long).reshape(-1, 2)
        src, tgt = pairs[:, 0], pairs[:, 1]
        if pairs.numel() and (int(pairs.min()) < 0 or int(pairs.max()) >= graph.n_nodes):
            raise ConfigError(f"edge node ids must lie in 0..{graph.n_nodes - 1} (adjacency indices)")
        bad = graph.node_position[src] == graph.node_position[tgt]
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ConfigError(f"edge ({int(src[i])}, {int(tgt[i])}) joins two nodes at one position; "
                              "head loadings split edges between positions")
        kinds = graph.node_kind[src]
        if bool((kinds == int(NodeKind.TARGET)).any()) or bool((graph.node_kind[tgt] == int(NodeKind.TOKEN)).any()):
            raise ConfigError("an edge's source must be a feature, error or token node and its target a "
                              "feature or target node")
        return src, tgt
    tgt, src, w = graph.edge_list()
    tgt, src = tgt.long(), src.long()
    keep = (graph.node_position[src] != graph.node_position[tgt]) & (w != 0)
    src, tgt, w = src[keep], tgt[keep], w[keep]
    if max_edges is not None and w.numel() > max_edges:
        order = w.abs().argsort(descending=True)[:max_edges]
        src, tgt = src[order], tgt[order]
    return src, tgt


def _weights(graph: Graph, src: torch.Tensor, tgt: torch.Tensor) -> Float[torch.Tensor, " e"]:
    """The graph's weights of the edges ``src -> tgt`` (0 where none is stored)."""
    rows, cols, values = graph.edge_list()
    key = rows.long() * graph.n_nodes + cols  # sorted: the adjacency is row-major
    want = tgt * graph.n_nodes + src
    if key.numel() == 0:
        return torch.zeros(want.numel(), dtype=torch.float64)
    at = torch.searchsorted(key, want).clamp(max=key.numel() - 1)
    return torch.where(key[at] == want, values[at].double(), 0.0)


def _target_grads(inp: AttentionInputs, graph: Graph, state: ReplacementState,
                  z: dict[int, torch.Tensor], targets: torch.Tensor,
                  batch: int) -> Float[torch.Tensor, "n_t n_layers n_heads d_head"]:
    """``d h_t / d z_{l,h}[p_t]`` for each target node, in chunks of vmapped backward passes."""
    layers = sorted(z)
    shape = z[layers[0]].shape  # 1 pos H d
    out = torch.zeros(targets.numel(), len(layers), shape[2], shape[3], dtype=torch.float64)
    for lo in range(0, targets.numel(), batch):
        chunk = targets[lo : lo + batch].tolist()
        outputs, seeds = [], []
        for site in sorted({_site(graph, t) for t in chunk}, key=lambda s: -1 if s is None else s):
            tensor = state.resid_final if site is None else state.x_in[site]
            assert tensor is not None
            seed = tensor.new_zeros(len(chunk), *tensor.shape)
            for b, t in enumerate(chunk):
                if _site(graph, t) == site:
                    seed[b, 0, int(graph.node_position[t])] = _read_vector(inp, graph, t).to(seed)
            outputs.append(tensor)
            seeds.append(seed)
        grads = torch.autograd.grad(outputs, [z[la] for la in layers], seeds, retain_graph=True,
                                    allow_unused=True, is_grads_batched=True)
        pos = graph.node_position[torch.tensor(chunk)]
        for i, g in enumerate(grads):
            if g is not None:
                out[lo : lo + len(chunk), i] = g[torch.arange(len(chunk)), 0, pos].double().cpu()
    return out


def _site(graph: Graph, t: int) -> int | None:
    """Where target node ``t`` reads: its layer's transcoder input, or the final residual (None)."""
    return None if int(graph.node_kind[t]) == int(NodeKind.TARGET) else int(graph.node_layer[t])


def _read_vector(inp: AttentionInputs, graph: Graph, t: int) -> Float[torch.Tensor, " d"]:
    if int(graph.node_kind[t]) == int(NodeKind.TARGET):
        return graph.target_vectors[int(graph.node_index[t])]
    layer, idx = int(graph.node_layer[t]), int(graph.node_index[t])
    return inp.transcoders.encoder_rows(layer, torch.tensor([idx]))[0]


def _value_tangents(inp: AttentionInputs, graph: Graph, clean: ReplacementState,
                    sources: list[int]) -> Float[torch.Tensor, "b n_layers pos n_kv d_head"]:
    """What each source adds to every layer's value vectors: one forward-mode pass of the frozen
    model over ``len(sources)`` copies of the prompt, copy ``b`` carrying source ``b``'s write."""
    host, n_b, n_pos = inp.host, len(sources), int(inp.tokens.numel())
    adds: dict[str, torch.Tensor] = {}

    def tangent(site: str) -> torch.Tensor:
        if site not in adds:
            adds[site] = torch.zeros(n_b, n_pos, host.d_model, dtype=host.dtype, device=host.device)
        return adds[site]

    for b, s in enumerate(sources):
        kind, layer = int(graph.node_kind[s]), int(graph.node_layer[s])
        pos, idx = int(graph.node_position[s]), int(graph.node_index[s])
        if kind == int(NodeKind.FEATURE):
            act = clean.acts[layer][pos, idx]
            for out, vec in inp.transcoders.decoder_vectors(layer, torch.tensor([idx])).items():
                tangent(host.mlp_out_hook(out))[b, pos] += act * vec[0]
        elif kind == int(NodeKind.ERROR):
            tangent(host.mlp_out_hook(layer))[b, pos] += clean.errors[layer][pos]
        elif kind == int(NodeKind.TOKEN):
            assert clean.embed is not None
            tangent(host.embed_hook())[b, pos] += clean.embed[0, pos].detach()
            if pos == 0 and inp.has_bos:
                for m in range(host.n_layers):
                    tangent(host.mlp_out_hook(m))[b, 0] += clean.mlp_out[m][0]
    values: dict[int, torch.Tensor] = {}
    hooks: list[tuple[str, HookFn]] = [(site, _add_tangent(t)) for site, t in adds.items()]
    hooks += [(inp.sites.v(la), _keep_tangent(values, la)) for la in range(host.n_layers)]
    state = ReplacementState(logits=torch.empty(0, 0, 0))
    tokens = inp.tokens.to(host.device)[None].expand(n_b, -1)
    with torch.no_grad(), fwAD.dual_level(), replacement_hooks(host, inp.transcoders, state, extra=hooks):
        host.forward(tokens)
    return torch.stack([values[la] for la in range(host.n_layers)], 1).double().cpu()


def _add_tangent(t: torch.Tensor) -> HookFn:
    def hook(x: torch.Tensor) -> torch.Tensor:
        return x + fwAD.make_dual(torch.zeros_like(t), t)

    return hook


def _keep_tangent(into: dict[int, torch.Tensor], layer: int) -> HookFn:
    def hook(x: torch.Tensor) -> None:
        primal, tangent = fwAD.unpack_dual(x)
        into[layer] = torch.zeros_like(primal) if tangent is None else tangent.detach()

    return hook


def _keep(into: dict[int, torch.Tensor], layer: int, *, detach: bool = False) -> HookFn:
    def hook(x: torch.Tensor) -> None:
        into[layer] = x.detach() if detach else x

    return hook
