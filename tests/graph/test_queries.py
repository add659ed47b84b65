"""Top nodes, strongest path, sub-graphs, supernodes (with save/load) and plotting."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import tl_circuits as tc
from tests.graph import reference as ref
from tests.graph.conftest import five_node_graph


def test_top_nodes_are_the_most_influential_features(tiny_graph):
    top = tiny_graph.top_nodes(5)
    infl = tiny_graph.influence()
    feats = tiny_graph.indices("feature")
    want = feats[infl[feats].argsort(descending=True)[:5]]
    assert [t.id for t in top] == want.tolist()
    assert all(t.node.kind == "feature" for t in top)
    assert top[0].influence == pytest.approx(float(infl[want[0]]))
    assert [t.id for t in tiny_graph.top_nodes(2, kinds=("token", "error"))][0] in (
        tiny_graph.indices("token").tolist() + tiny_graph.indices("error").tolist())
    with pytest.raises(tc.ConfigError, match="unknown node kinds"):
        tiny_graph.top_nodes(3, kinds=("neuron",))


def test_strongest_path_by_hand():
    g = five_node_graph()
    # tok -> T direct: .25; tok -> f0 -> f1 -> T: 1 * .75 * .5 = .375
    path = g.strongest_path(3, 4)
    assert path.nodes == [3, 0, 1, 4]
    assert path.score == pytest.approx(0.375)
    assert g.strongest_path(("error", 0, 0, -1), ("target", 2, 0, 0)).score == pytest.approx(0.25)
    with pytest.raises(tc.ConfigError, match="no path from node 4"):
        g.strongest_path(4, 3)
    with pytest.raises(tc.ConfigError, match="node id 9 does not exist"):
        g.strongest_path(9, 4)


def _all_paths(a, src, dst):
    """Every path src -> ... -> dst by brute force (edges s -> t where a[t, s] != 0)."""
    out = []

    def walk(path):
        if path[-1] == dst:
            out.append(list(path))
            return
        for t in (a[:, path[-1]] != 0).nonzero().flatten().tolist():
            walk(path + [t])

    walk([src])
    return out


def test_strongest_path_matches_brute_force_on_random_graphs():
    for seed in range(3):
        g = ref.random_graph(seed, n_layers=3, n_pos=3, per_cell=2, density=0.4)
        an = ref.normalize(g.adjacency.to_dense().double())
        for src, dst in itertools.product(g.indices("token")[:2].tolist(), g.indices("target")[:2].tolist()):
            paths = _all_paths(an, src, dst)
            if not paths:
                continue
            score = max(math.prod(float(an[b, a]) for a, b in itertools.pairwise(p)) for p in paths)
            got = g.strongest_path(src, dst)
            assert got.score == pytest.approx(score, rel=1e-9)
            assert math.prod(float(an[b, a]) for a, b in itertools.pairwise(got.nodes)) == pytest.approx(score, rel=1e-9)


def test_subgraph_hops():
    g = five_node_graph()
    assert [n.kind for n in g.subgraph([0], hops=0).nodes] == ["feature"]
    one = g.subgraph([0], hops=1)
    assert [(n.kind, n.index) for n in one.nodes] == [("feature", 5), ("feature", 7), ("token", 11)]
    assert one.adjacency.to_dense().tolist() == [[0, 0, 4.0], [3.0, 0, 0], [0, 0, 0]]
    two = g.subgraph([0], hops=2)
    assert two.n_nodes == 5 and torch.equal(two.adjacency.to_dense(), g.adjacency.to_dense())
    with pytest.raises(tc.ConfigError, match="hops must be 0 or more"):
        g.subgraph([0], hops=-1)


def test_supernodes_round_trip_and_follow_pruning(tiny_graph, tmp_path):
    g = tc.Graph.load(_saved(tiny_graph, tmp_path))
    top = [t.id for t in g.top_nodes(3)]
    g.add_supernode("top3", top)
    g.add_supernode("first", [0, ("feature",) + tuple(g.nodes[1][1:])])
    with pytest.raises(tc.ConfigError, match="already exists"):
        g.add_supernode("top3", [1])
    with pytest.raises(tc.ConfigError, match="does not exist"):
        g.add_supernode("bad", [g.n_nodes])
    g.save(tmp_path / "s.safetensors")
    loaded = tc.Graph.load(tmp_path / "s.safetensors")
    assert loaded.supernodes == {"top3": sorted(top), "first": [0, 1]}
    pruned = loaded.prune()
    members = [pruned.nodes[i] for i in pruned.supernodes["top3"]]
    assert members == [loaded.nodes[i] for i in sorted(top) if loaded.nodes[i] in set(pruned.nodes)]
    assert len(members) >= 1


def test_files_without_supernodes_still_load(tiny_graph, tmp_path):
    """A format-version-1 file written before supernodes existed."""
    path = _saved(tiny_graph, tmp_path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    header = json.loads(meta["tl_circuits"])
    header.pop("supernodes")
    save_file(load_file(str(path)), str(path), metadata={"tl_circuits": json.dumps(header)})
    assert tc.Graph.load(path).supernodes == {}


def _saved(graph, tmp_path):
    path = tmp_path / "g.safetensors"
    graph.save(path)
    return path


def test_plot_writes_png_and_svg(tiny_graph, tmp_path):
    tiny_graph.plot(tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tiny_graph.prune(0.5, 0.9).plot(tmp_path / "g.svg", max_edges=50)
    assert b"<svg" in (tmp_path / "g.svg").read_bytes()[:2000]
    with pytest.raises(tc.ConfigError, match=r"\.png or \.svg"):
        tiny_graph.plot(tmp_path / "g.jpg")
    assert not (tmp_path / "g.jpg").exists()


def test_strongest_path_via_features_matches_brute_force_over_feature_only_paths():
    for seed in range(3):
        g = ref.random_graph(seed, n_layers=3, n_pos=3, per_cell=2, density=0.4)
        an = ref.normalize(g.adjacency.to_dense().double())
        feature = set(g.indices("feature").tolist())
        for src, dst in itertools.product(g.indices("token")[:2].tolist(), g.indices("target")[:2].tolist()):
            paths = [p for p in _all_paths(an, src, dst) if len(p) > 2 and set(p[1:-1]) <= feature]
            if not paths:
                continue
            score = max(math.prod(float(an[b, a]) for a, b in itertools.pairwise(p)) for p in paths)
            got = g.strongest_path(src, dst, via_features=True)
            assert got.score == pytest.approx(score, rel=1e-9)
            assert len(got.nodes) > 2 and set(got.nodes[1:-1]) <= feature
            assert got.score <= g.strongest_path(src, dst).score + 1e-12
