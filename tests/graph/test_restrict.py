"""Graph.restrict, pruning, scores and queries on graphs whose nodes are not in the canonical order."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.graph import reference as ref
from tests.graph.conftest import five_node_graph
from tests.graph.reference import permuted
from tl_circuits.graph.influence import coalesced


def content(g: tc.Graph):
    """What a graph says, independent of its node order: activations by feature node, edges by
    (target node, source node), computed rows and supernodes as node sets."""
    nodes = g.nodes
    feats = g.indices("feature").tolist()
    adj = coalesced(g.adjacency)
    return (
        sorted(nodes),
        {nodes[i]: float(a) for i, a in zip(feats, g.activations.tolist())},
        {(nodes[r], nodes[c]): float(w) for (r, c), w in zip(adj.indices().T.tolist(), adj.values().tolist())},
        {nodes[i] for i in g.rows_computed.tolist()},
        {k: {nodes[i] for i in v} for k, v in g.supernodes.items()},
        g.targets,
    )


def test_restrict_with_a_token_before_the_features():
    # five-node graph reordered: tok, f1, err, T, f0  (features are not first)
    g = permuted(five_node_graph(), torch.tensor([3, 1, 2, 4, 0]))
    assert [n.kind for n in g.nodes] == ["token", "feature", "error", "target", "feature"]
    assert g.activations.tolist() == [0.5, 1.5]  # f1, f0 in node order
    g.add_supernode("fs", [1, 4])
    sub = g.restrict(torch.tensor([4, 0, 3]))  # f0, tok, T (any order)
    assert [(n.kind, n.index) for n in sub.nodes] == [("token", 11), ("target", 0), ("feature", 5)]
    assert sub.activations.tolist() == [1.5]  # f0's, not f1's
    assert sub.adjacency.to_dense().tolist() == [[0, 0, 0], [1.0, 0, 0], [4.0, 0, 0]]
    assert sub.rows_computed.tolist() == [1, 2]  # T and f0 had rows
    assert sub.supernodes == {"fs": [2]}
    assert sub.targets == g.targets and sub.settings == g.settings
    assert g.n_nodes == 5 and g.activations.tolist() == [0.5, 1.5]  # the input is unchanged


def test_restrict_commutes_with_reordering_nodes():
    gen = torch.Generator().manual_seed(0)
    for seed in range(3):
        g = ref.random_graph(seed)
        g.add_supernode("some", torch.randperm(g.n_nodes, generator=gen)[:6].tolist())
        order = torch.randperm(g.n_nodes, generator=gen)
        h = permuted(g, order)
        assert content(h) == content(g)
        keep = torch.randperm(g.n_nodes, generator=gen)[: g.n_nodes // 2]
        where = {nd: i for i, nd in enumerate(h.nodes)}
        new_id = torch.tensor([where[nd] for nd in g.nodes])
        assert content(h.restrict(new_id[keep])) == content(g.restrict(keep))


def test_restrict_keep_forms_and_errors():
    g = five_node_graph()
    mask = torch.tensor([True, False, False, True, True])
    assert content(g.restrict(mask)) == content(g.restrict(torch.tensor([4, 0, 3, 0])))
    with pytest.raises(tc.ConfigError, match=r"node ids to keep must lie in 0..4"):
        g.restrict(torch.tensor([1, 5]))
    with pytest.raises(tc.ConfigError, match="one bool per node"):
        g.restrict(torch.ones(3, dtype=torch.bool))
    with pytest.raises(tc.ConfigError, match="one bool per stored adjacency entry"):
        g.restrict(torch.tensor([0, 1]), entry_mask=torch.ones(2, dtype=torch.bool))


def test_prune_scores_and_queries_do_not_depend_on_node_order(tiny_graph):
    gen = torch.Generator().manual_seed(1)
    for g in (tiny_graph, ref.random_graph(2)):
        order = torch.randperm(g.n_nodes, generator=gen)
        h = permuted(g, order)
        old_id = torch.tensor([g.nodes.index(nd) for nd in h.nodes])
        assert torch.allclose(h.influence(), g.influence()[old_id], rtol=1e-12, atol=1e-15)
        assert h.scores() == pytest.approx(g.scores(), abs=1e-12)
        for thresholds in ((0.8, 0.98), (0.5, 0.9)):
            pg, ph = g.prune(*thresholds), h.prune(*thresholds)
            assert content(ph) == content(pg)
            assert ph.scores() == pytest.approx(pg.scores(), abs=1e-12)
        assert [h.nodes[t.id] for t in h.top_nodes(5)] == [g.nodes[t.id] for t in g.top_nodes(5)]
        assert content(h.subgraph([int(h.indices("target")[0])], hops=1)) == content(
            g.subgraph([int(g.indices("target")[0])], hops=1))
