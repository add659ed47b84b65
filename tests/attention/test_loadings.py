"""Head loadings: they sum to each edge, zeroing one head's attention from the target's position
to the other positions in the frozen model removes exactly its loading (brute force), they are
stored with the graph, survive pruning and saving, and reach the viewer JSON."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.attention.conftest import CASES, PROMPT
from tests.attention.reference import ablated_edges
from tl_circuits.errors import ConfigError
from tl_circuits.hosts import as_host
from tl_circuits.viewer.export import graph_to_json, validate


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_loadings_sum_to_every_cross_position_edge(models, family, kind):
    model, transcoders, _ = models(family, kind)
    graph = tc.attribute(model, transcoders, PROMPT, progress=False)
    loads = tc.head_loadings(model, transcoders, graph, max_edges=400, progress=False)
    n = loads.sources.numel()
    assert n == min(400, _n_cross(graph)) and n > 100
    assert (graph.node_position[loads.sources] != graph.node_position[loads.targets]).all()
    scale = float(loads.edges.abs().max())
    assert float(loads.rest.abs().max()) <= 1e-6 * scale
    # Heads at or after the target's layer carry nothing of a feature target's edges.
    feat = graph.node_kind[loads.targets] == int(tc.NodeKind.FEATURE)
    for e in feat.nonzero().flatten()[:50].tolist():
        assert float(loads.loadings[e, int(graph.node_layer[loads.targets[e]]) + 1 :].abs().sum()) == 0


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_zeroing_a_heads_cross_position_attention_removes_exactly_its_loading(models, family, kind):
    model, transcoders, _ = models(family, kind)
    host = as_host(model)
    graph = tc.attribute(model, transcoders, PROMPT, progress=False)
    t, s, w = graph.edge_list()
    w = torch.where(graph.node_position[s] != graph.node_position[t], w, 0.0)
    top = w.abs().argsort(descending=True)[:3]
    edges = list(zip(s[top].tolist(), t[top].tolist()))
    loads = tc.head_loadings(model, transcoders, graph, edges, progress=False)
    tokens = torch.tensor(PROMPT)
    order = [0, 1, 2]
    full = ablated_edges(host, tokens, transcoders, graph, edges)
    torch.testing.assert_close(full, loads.edges[order].to(full), rtol=1e-9, atol=1e-12)
    for la, h in {(la, h) for e in order for la, h, _ in loads.top(e, 2)} | {(0, 1)}:
        change = ablated_edges(host, tokens, transcoders, graph, edges, ablate=(la, h)) - full
        want = -loads.loadings[order, la, h].to(change)
        torch.testing.assert_close(change, want, rtol=1e-7, atol=1e-9 * float(full.abs().max()))


def test_loadings_are_stored_pruned_saved_and_exported(models, tmp_path):
    model, transcoders, _ = models("llama", "hf")
    graph = tc.attribute(model, transcoders, PROMPT, progress=False, head_loadings=True)
    entries = graph.settings["head_loadings"]
    assert entries and graph.settings["qk"]
    pruned = graph.prune()
    path = tmp_path / "g.safetensors"
    pruned.save(path)
    loaded = tc.Graph.load(path)
    data = graph_to_json(loaded)
    validate(data, "graph")
    crossing = [lk for lk in data["links"] if lk["source"].split("_")[-1] != lk["target"].split("_")[-1]]
    with_heads = [lk for lk in crossing if "heads" in lk]
    assert with_heads and len(with_heads) == len(crossing)
    assert not [lk for lk in data["links"] if "heads" in lk and lk not in crossing]
    for lk in with_heads:
        assert 1 <= len(lk["heads"]) <= 8
        weights = [abs(h["weight"]) for h in lk["heads"]]
        assert weights == sorted(weights, reverse=True)
        assert sum(h["weight"] for h in lk["heads"]) + lk["heads_rest"] == pytest.approx(lk["weight"], rel=1e-9)
    # Graph.head_loadings reads the stored split; the listed heads match a fresh computation.
    s, t = _first_cross_edge(loaded)
    heads, rest = loaded.head_loadings(s, t)
    fresh = tc.head_loadings(model, transcoders, loaded, [(s, t)], store=False, progress=False)
    assert heads == fresh.top(0, 8)
    assert rest == pytest.approx(float(fresh.edges[0]) - sum(w for _, _, w in heads), abs=1e-12)
    assert data["qk"] == graph.settings["qk"]
    for entry in data["qk"]:
        total = sum(p["term"] for p in entry["pairs"]) + sum(entry["other"].values())
        assert total == pytest.approx(entry["score"], rel=1e-9, abs=1e-12)
        assert entry["key_pos"] < entry["query_pos"]


def test_bad_edges_are_refused(models):
    model, transcoders, _ = models("llama", "hf")
    graph = tc.attribute(model, transcoders, PROMPT, progress=False)
    feats = graph.indices("feature")
    same = [int(i) for i in feats if int(graph.node_position[i]) == int(graph.node_position[feats[0]])][:2]
    with pytest.raises(ConfigError, match="one position"):
        tc.head_loadings(model, transcoders, graph, [(same[0], same[1])], progress=False)
    with pytest.raises(ConfigError, match="adjacency indices"):
        tc.head_loadings(model, transcoders, graph, [(0, graph.n_nodes)], progress=False)
    with pytest.raises(KeyError, match="compute them with tl_circuits.head_loadings"):
        graph.head_loadings(*_first_cross_edge(graph))
    other, _, _ = models("qwen3", "hf")
    with pytest.raises(ConfigError, match="another model"):
        tc.head_loadings(other, transcoders, graph, progress=False)


def _n_cross(graph):
    t, s, w = graph.edge_list()
    return int(((graph.node_position[s] != graph.node_position[t]) & (w != 0)).sum())


def _first_cross_edge(graph):
    t, s, w = graph.edge_list()
    e = ((graph.node_position[s] != graph.node_position[t]) & (w != 0)).nonzero()[0, 0]
    return int(s[e]), int(t[e])
