"""Influence and pruning agree with a dense port of circuit-tracer's prune_graph, on sparse data."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.graph import reference as ref
from tl_circuits.graph.influence import influence_from_edges, normalized_edges
from tl_circuits.graph.prune import cumulative_cut, prune_masks

THRESHOLDS = [(0.8, 0.98), (0.5, 0.9), (0.95, 0.995), (0.3, 0.7)]


def _graphs(request_graphs):
    return [ref.random_graph(s) for s in range(4)] + request_graphs


def _edge_set(rows, cols):
    return set(zip(rows.tolist(), cols.tolist()))


def test_influence_matches_dense_series(tiny_graph, tiny_budget_graph):
    for g in _graphs([tiny_graph, tiny_budget_graph]):
        dense = ref.influence(ref.normalize(g.adjacency.to_dense().double()), ref.weights(g))
        got = g.influence()
        assert dense.abs().max() > 0.01
        assert torch.allclose(got, dense, rtol=1e-10, atol=1e-14)


def test_cumulative_cut_matches_find_threshold():
    gen = torch.Generator().manual_seed(0)
    for share in (0.1, 0.5, 0.8, 0.98, 0.999):
        v = torch.rand(500, generator=gen, dtype=torch.float64) ** 4
        v[torch.rand(500, generator=gen) < 0.6] = 0
        want = float(ref.find_threshold(v, share))
        assert want > 0
        assert cumulative_cut(v[v > 0], v.numel(), share) == want
        assert cumulative_cut(v, v.numel(), share) == want  # zeros are skipped, not counted


@pytest.mark.parametrize("node_threshold,edge_threshold", THRESHOLDS)
def test_prune_matches_dense_reference(tiny_graph, tiny_budget_graph, node_threshold, edge_threshold):
    for g in _graphs([tiny_graph, tiny_budget_graph]):
        node_ref, edge_ref = ref.prune_dense(g, node_threshold, edge_threshold)
        result = prune_masks(g, node_threshold, edge_threshold)
        assert torch.equal(result.node_mask, node_ref)
        got_edges = _edge_set(result.edge_rows[result.edge_mask], result.edge_cols[result.edge_mask])
        want_edges = _edge_set(*edge_ref.nonzero().T)
        assert got_edges == want_edges
        assert 0 < len(got_edges) < int((g.adjacency.to_dense() != 0).sum())


def test_pruned_graph_tables_and_edges(tiny_graph):
    pruned = tiny_graph.prune(0.8, 0.98)
    result = prune_masks(tiny_graph, 0.8, 0.98)
    kept = result.node_mask.nonzero().flatten()
    assert pruned.n_nodes == kept.numel() < tiny_graph.n_nodes
    assert torch.equal(pruned.node_layer, tiny_graph.node_layer[kept])
    assert torch.equal(pruned.activations, tiny_graph.activations[kept[kept < tiny_graph.n_features]])
    # tokens and targets always kept; every kept feature has an edge in and an edge out
    assert len(pruned.indices("token")) == len(tiny_graph.tokens)
    assert pruned.targets == tiny_graph.targets
    a = pruned.adjacency.to_dense()
    feats = pruned.indices("feature")
    assert bool((a[:, feats] != 0).any(0).all()) and bool((a[feats] != 0).any(1).all())
    # kept edges keep their original weights
    full = tiny_graph.adjacency.to_dense()
    assert torch.equal(a[a != 0], full[kept][:, kept][a != 0])
    assert int((a != 0).sum()) == int(result.edge_mask.sum())
    assert pruned.is_pruned and not tiny_graph.is_pruned


def test_prune_is_sparse_on_a_graph_too_big_to_densify():
    """200k nodes: a dense N x N float64 matrix would need 320 GB."""
    gen = torch.Generator().manual_seed(0)
    n_feat, n_tok = 199_990, 8
    n = n_feat + n_tok + 2
    layer = torch.randint(0, 20, (n_feat,), generator=gen)
    nnz = 1_000_000
    rows = torch.randint(0, n_feat, (nnz,), generator=gen)
    cols = torch.randint(0, n_feat, (nnz,), generator=gen)
    ok = layer[cols] < layer[rows]
    rows, cols = rows[ok], cols[ok]
    extra_r = torch.cat([torch.full((5000,), n - 2), torch.full((5000,), n - 1), torch.randint(0, n_feat, (20000,), generator=gen)])
    extra_c = torch.cat([torch.randint(0, n_feat, (10000,), generator=gen), torch.randint(n_feat, n_feat + n_tok, (20000,), generator=gen)])
    idx = torch.stack([torch.cat([rows, extra_r]), torch.cat([cols, extra_c])])
    adj = torch.sparse_coo_tensor(idx, torch.randn(idx.shape[1], generator=gen, dtype=torch.float64), (n, n)).coalesce()
    g = tc.Graph.from_tables(
        kind=torch.cat([torch.zeros(n_feat), torch.full((n_tok,), 2), torch.full((2,), 3)]).to(torch.int8),
        layer=torch.cat([layer, torch.full((n_tok,), -1), torch.full((2,), 20)]),
        position=torch.cat([torch.randint(0, n_tok, (n_feat,), generator=gen), torch.arange(n_tok), torch.full((2,), n_tok - 1)]),
        index=torch.cat([torch.arange(n - 2), torch.arange(2)]), adjacency=adj, activations=torch.ones(n_feat, dtype=torch.float64),
        targets=[tc.TargetInfo("a", "logit", (0,), 0.7, 0.7), tc.TargetInfo("b", "logit", (1,), 0.3, 0.3)],
        target_vectors=torch.zeros(2, 4), prompt=None, tokens=list(range(n_tok)),
        str_tokens=[str(i) for i in range(n_tok)], settings={},
    )
    pruned = g.prune(0.8, 0.98)
    assert n_tok + 2 < pruned.n_nodes < n // 2


def test_bad_thresholds_raise(tiny_graph):
    with pytest.raises(tc.ConfigError, match="node_threshold must be between 0 and 1"):
        tiny_graph.prune(node_threshold=1.5)
    with pytest.raises(tc.ConfigError, match="edge_threshold"):
        tiny_graph.prune(edge_threshold=-0.1)


def test_influence_helpers_on_five_nodes():
    from tests.graph.conftest import five_node_graph

    g = five_node_graph()
    rows, cols, vals = normalized_edges(g.adjacency)
    seed = torch.tensor([0, 0, 0, 0, 1.0], dtype=torch.float64)
    got = influence_from_edges(rows, cols, vals, seed)
    assert torch.allclose(got, torch.tensor([0.375, 0.5, 0.375, 0.625, 0.0], dtype=torch.float64))
