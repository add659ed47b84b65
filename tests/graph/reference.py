"""Dense reference implementations, written from circuit-tracer's definitions (circuit_tracer/graph.py:
compute_node_influence, compute_edge_influence, prune_graph, compute_graph_scores), plus random
layered graphs to run them on, and the same graph with its nodes in another order."""

from __future__ import annotations

import torch

from tl_circuits import Graph, TargetInfo
from tl_circuits.graph import NodeKind
from tl_circuits.graph.influence import coalesced
from tl_circuits.graph.nodes import feature_rank


def normalize(a):
    a = a.abs()
    return a / a.sum(dim=1, keepdim=True).clamp(min=1e-10)


def influence(a_norm, w):
    current = w @ a_norm
    total = current.clone()
    while current.any():
        current = current @ a_norm
        total += current
    return total


def find_threshold(scores, share):
    s = torch.sort(scores, descending=True).values
    cum = torch.cumsum(s, 0) / s.sum()
    i = min(int(torch.searchsorted(cum, torch.tensor([share], dtype=cum.dtype)).item()), len(cum) - 1)
    return s[i]


def weights(graph):
    w = torch.zeros(graph.n_nodes, dtype=torch.float64)
    w[graph.indices("target")] = graph.target_weights()
    return w


def prune_dense(graph, node_threshold, edge_threshold):
    a = graph.adjacency.to_dense().double()
    kind = graph.node_kind.long()
    w = weights(graph)
    infl = influence(normalize(a), w)
    node_mask = infl >= find_threshold(infl, node_threshold)
    node_mask |= kind >= 2
    pruned = a.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    pn = normalize(pruned)
    scores = pn * (influence(pn, w) + w)[:, None]
    edge_mask = scores >= find_threshold(scores.flatten(), edge_threshold)
    fe, feat = kind <= 1, kind == 0
    old = node_mask.clone()
    node_mask[fe] &= edge_mask[:, fe].any(0)
    node_mask[feat] &= edge_mask[feat].any(1)
    while not torch.equal(node_mask, old):
        old = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask[fe] &= edge_mask[:, fe].any(0)
        node_mask[feat] &= edge_mask[feat].any(1)
    edge_mask &= a != 0
    return node_mask, edge_mask


def scores_dense(graph, keep_features=None):
    a = graph.adjacency.to_dense().double().clone()
    kind = graph.node_kind.long()
    w = weights(graph)
    if keep_features is not None:
        for i in (kind == 0).nonzero().flatten().tolist():
            if i in set(keep_features):
                continue
            err = graph.node_index_of("error", int(graph.node_layer[i]), int(graph.node_position[i]))
            a[:, err] += a[:, i]
            a[i] = 0
            a[:, i] = 0
    an = normalize(a)
    infl = influence(an, w)
    tok, err = infl[kind == 2].sum(), infl[kind == 1].sum()
    non_error = 1 - an[:, kind == 1].sum(-1)
    out = infl + w
    return float(tok / (tok + err)), float((non_error * out).sum() / out.sum())


def random_graph(seed, n_layers=3, n_pos=4, per_cell=3, density=0.5):
    """A layered random graph: features at (layer, pos) read from lower layers at positions <= pos."""
    gen = torch.Generator().manual_seed(seed)
    feats = [(la, p, i) for la in range(n_layers) for p in range(n_pos) for i in range(per_cell)
             if torch.rand(1, generator=gen).item() < 0.8]
    errs = [(la, p) for la in range(n_layers) for p in range(n_pos)]
    n_t = 3
    kind = [0] * len(feats) + [1] * len(errs) + [2] * n_pos + [3] * n_t
    layer = [f[0] for f in feats] + [e[0] for e in errs] + [-1] * n_pos + [n_layers] * n_t
    pos = [f[1] for f in feats] + [e[1] for e in errs] + list(range(n_pos)) + [n_pos - 1] * n_t
    index = [f[2] for f in feats] + [-1] * len(errs) + list(range(n_pos)) + list(range(n_t))
    n = len(kind)
    a = torch.zeros(n, n, dtype=torch.float64)
    for t in range(n):
        if kind[t] not in (0, 3):
            continue
        for s in range(n):
            if kind[s] == 3 or layer[s] >= layer[t] or pos[s] > pos[t]:
                continue
            if torch.rand(1, generator=gen).item() < density:
                a[t, s] = torch.randn(1, generator=gen).item() * torch.rand(1, generator=gen).item() ** 3
    probs = torch.softmax(torch.randn(n_t, generator=gen, dtype=torch.float64), 0).tolist()
    return Graph.from_tables(
        kind=torch.tensor(kind, dtype=torch.int8), layer=torch.tensor(layer), position=torch.tensor(pos),
        index=torch.tensor(index), adjacency=a.to_sparse(),
        activations=torch.rand(len(feats), generator=gen, dtype=torch.float64),
        targets=[TargetInfo(f"t{i}", "logit", (i,), p, p) for i, p in enumerate(probs)],
        target_vectors=torch.zeros(n_t, 4, dtype=torch.float64), prompt=None,
        tokens=list(range(n_pos)), str_tokens=[f"w{i}" for i in range(n_pos)],
        settings={"n_layers": n_layers},
        rows_computed=torch.tensor([i for i, k in enumerate(kind) if k in (0, 3)]),
    )


def permuted(g: Graph, order: torch.Tensor) -> Graph:
    """``g`` with node ``order[i]`` moved to position ``i``; activations follow their features.
    Targets keep their relative order, so target numbers (and Node records) stay the same."""
    order = torch.as_tensor(order).long()
    is_target = g.node_kind[order] == NodeKind.TARGET
    order = order.clone()
    order[is_target] = order[is_target].sort().values
    n = g.n_nodes
    new_id = torch.empty(n, dtype=torch.long)
    new_id[order] = torch.arange(n)
    adj = coalesced(g.adjacency)
    rows, cols = adj.indices()
    kind = g.node_kind[order]
    return Graph.from_tables(
        kind=kind, layer=g.node_layer[order], position=g.node_position[order], index=g.node_index[order],
        adjacency=torch.sparse_coo_tensor(torch.stack([new_id[rows], new_id[cols]]), adj.values(), (n, n),
                                          check_invariants=True).coalesce(),
        activations=g.activations[feature_rank(g.node_kind)[order[kind == NodeKind.FEATURE]]],
        targets=list(g.targets), target_vectors=g.target_vectors, prompt=g.prompt, tokens=list(g.tokens),
        str_tokens=list(g.str_tokens), settings=dict(g.settings),
        rows_computed=new_id[g.rows_computed.long()].sort().values,
        supernodes={k: sorted(int(new_id[m]) for m in v) for k, v in g.supernodes.items()},
    )
