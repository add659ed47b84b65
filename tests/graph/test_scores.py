"""Replacement and completeness scores: hand-computed values and a dense reference."""

from __future__ import annotations

import pytest
import torch

from tests.graph import reference as ref
from tests.graph.conftest import five_node_graph


def test_five_node_graph_by_hand():
    # Row T: |2|,|-1|,|1| -> f1 .5, err .25, tok .25;  row f1: f0 .75, err .25;  row f0: tok 1.
    # Influence: f1 .5, err .25 + .5*.25 = .375, f0 .5*.75 = .375, tok .25 + .375 = .625.
    g = five_node_graph()
    assert torch.allclose(g.influence(), torch.tensor([0.375, 0.5, 0.375, 0.625, 0.0], dtype=torch.float64))
    scores = g.scores()
    assert scores["replacement"] == pytest.approx(0.625 / (0.625 + 0.375), abs=1e-12)
    # completeness: non-error shares T .75, f1 .75, others 1; weights infl + w = .375,.5,.375,.625,1
    want = (0.375 + 0.5 * 0.75 + 0.375 + 0.625 + 1.0 * 0.75) / (0.375 + 0.5 + 0.375 + 0.625 + 1.0)
    assert scores["completeness"] == pytest.approx(want, abs=1e-12)


def test_five_node_graph_with_f0_folded_into_its_error_node():
    # f0 folds into err (L0, pos 0): f1 <- err 1 + 3; rows T: .5/.25/.25, f1: err 1.
    # Influence: f1 .5, err .25 + .5 = .75, tok .25.
    g = five_node_graph()
    scores = g.scores(keep_features=torch.tensor([1]))
    assert scores["replacement"] == pytest.approx(0.25, abs=1e-12)
    assert scores["completeness"] == pytest.approx((0.75 + 0.25 + 0.75) / 2.5, abs=1e-12)


def test_folding_without_an_error_node_makes_a_virtual_one():
    g = five_node_graph()
    g.node_position[0] = 3  # f0 now has no error node at (0, 3): a virtual one takes its place
    scores = g.scores(keep_features=torch.tensor([1]))
    # f1 <- virtual err 3 (.75), err 1 (.25): err influence .25 + .5 = .75 in total, tok .25.
    assert scores["replacement"] == pytest.approx(0.25, abs=1e-12)


def test_full_and_pruned_scores_match_dense_reference(tiny_graph, tiny_budget_graph):
    for g in [tiny_graph, tiny_budget_graph, ref.random_graph(7)]:
        full = g.scores()
        want = ref.scores_dense(g)
        assert (full["replacement"], full["completeness"]) == pytest.approx(want, abs=1e-12)
        assert 0.05 < full["replacement"] < 0.95
        pruned = g.prune(0.6, 0.95)
        kept_old = [i for i, m in enumerate(_kept_mask(g, pruned).tolist()) if m and g.node_kind[i] == 0]
        want_pruned = ref.scores_dense(g, keep_features=kept_old)
        got = pruned.scores()
        assert (got["replacement"], got["completeness"]) == pytest.approx(want_pruned, abs=1e-12)
        assert got["replacement"] < full["replacement"]


def _kept_mask(full, pruned):
    keys = {n for n in pruned.nodes}
    return torch.tensor([n in keys for n in full.nodes])


def test_scores_survive_save_and_load(tiny_graph, tmp_path):
    pruned = tiny_graph.prune()
    pruned.save(tmp_path / "p.safetensors")
    from tl_circuits import Graph

    loaded = Graph.load(tmp_path / "p.safetensors")
    assert loaded.is_pruned and loaded.scores() == pruned.scores()


def test_chunked_edge_loops_match_the_dense_reference(monkeypatch, tiny_graph, tiny_budget_graph):
    # Big graphs are walked in chunks of edges; chunks of 7 split rows mid-way and leave rows
    # longer than a chunk, so both boundary cases of the row-aligned folding run here.
    import tl_circuits.graph.influence as influence
    import tl_circuits.graph.scores as scores

    whole = {id(g): g.prune(0.6, 0.95) for g in (tiny_graph, tiny_budget_graph)}
    monkeypatch.setattr(influence, "CHUNK", 7)
    monkeypatch.setattr(scores, "CHUNK", 7)
    for g in (tiny_graph, tiny_budget_graph):
        assert int(g.adjacency.crow_indices().diff().max()) > 7
        full = g.scores()
        assert (full["replacement"], full["completeness"]) == pytest.approx(ref.scores_dense(g), abs=1e-12)
        pruned = g.prune(0.6, 0.95)
        assert pruned.nodes == whole[id(g)].nodes
        assert torch.equal(pruned.adjacency.crow_indices(), whole[id(g)].adjacency.crow_indices())
        assert torch.equal(pruned.adjacency.col_indices(), whole[id(g)].adjacency.col_indices())
        kept = [i for i, m in enumerate(_kept_mask(g, pruned).tolist()) if m and g.node_kind[i] == 0]
        got = pruned.scores()
        want = ref.scores_dense(g, keep_features=kept)
        assert (got["replacement"], got["completeness"]) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("chunk_rows", [1, 3, 256])
def test_influence_from_a_partial_row_block_matches_the_dense_series(chunk_rows):
    """Attribution re-ranks features from the rows computed so far, read in chunks of rows (no
    copy of the row block): the result is the series w (A' + A'^2 + ...) on the adjacency that
    holds only those rows, whatever the chunking."""
    from tl_circuits.graph.influence import influence_from_rows

    graph = ref.random_graph(seed=5, n_layers=4, n_pos=5)
    dense = graph.adjacency.to_dense()
    w = ref.weights(graph)
    computed = graph.rows_computed
    part = computed[(computed % 3 != 0) | (graph.node_kind[computed] == 3)]  # targets and 2/3 of the rest
    assert 3 < part.numel() < computed.numel()
    partial = torch.zeros_like(dense)
    partial[part] = dense[part]
    want = ref.influence(ref.normalize(partial), w)
    got = influence_from_rows(dense[part], part, w[part], chunk_rows=chunk_rows)
    assert want.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
