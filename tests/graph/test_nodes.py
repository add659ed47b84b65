"""The node schema: NodeKind everywhere a kind is named, checked on load, old names deprecated."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import tl_circuits as tc
from tests.graph.conftest import five_node_graph
from tl_circuits.graph import KIND_NAMES, NodeKind
from tl_circuits.graph.nodes import feature_rank, kind_mask


def test_kinds_by_enum_or_name():
    g = five_node_graph()
    for kind in NodeKind:
        assert torch.equal(g.indices(kind), g.indices(kind.label))
    assert g.indices(NodeKind.FEATURE).tolist() == [0, 1] and g.indices("target").tolist() == [4]
    assert g.node_index_of(NodeKind.ERROR, 0, 0) == g.node_index_of("error", 0, 0) == 2
    with pytest.raises(KeyError, match="no feature node at layer 3"):
        g.node_index_of(NodeKind.FEATURE, 3, 0, 5)
    with pytest.raises(tc.ConfigError, match="unknown node kind 'neuron'"):
        g.indices("neuron")
    assert [t.id for t in g.top_nodes(2, kinds=(NodeKind.TOKEN, "error"))] == [3, 2]  # .625, .375
    assert repr(g) == "Graph(2 features, 1 errors, 1 tokens, 1 targets, prompt='x')"
    assert KIND_NAMES == ("feature", "error", "token", "target") == tuple(n.kind for n in g.nodes[1:])


def test_feature_rank_and_kind_mask():
    kinds = torch.tensor([NodeKind.TOKEN, NodeKind.FEATURE, NodeKind.ERROR, NodeKind.FEATURE], dtype=torch.int8)
    assert feature_rank(kinds).tolist() == [-1, 0, -1, 1]
    assert kind_mask(kinds, "error", NodeKind.TOKEN).tolist() == [True, False, True, False]


def test_attributed_graphs_follow_the_node_order(tiny_graph):
    kinds = tiny_graph.node_kind
    assert kinds.dtype == torch.int8 and bool((kinds[1:] >= kinds[:-1]).all())
    assert [int((kinds == k).sum()) > 0 for k in NodeKind] == [True] * 4
    assert tiny_graph.activations.numel() == tiny_graph.n_features


def _rewrite(path, **tensors):
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    save_file({**load_file(str(path)), **tensors}, str(path), metadata=meta)


def test_load_refuses_unknown_kind_codes_and_short_tables(tmp_path):
    path = tmp_path / "g.safetensors"
    g = five_node_graph()
    g.save(path)
    _rewrite(path, node_kind=torch.tensor([0, 0, 1, 2, 7], dtype=torch.int8))
    with pytest.raises(tc.FileFormatError, match=r"node kind codes \[7\] that are not node kinds"):
        tc.Graph.load(path)
    _rewrite(path, node_kind=torch.zeros(5))
    with pytest.raises(tc.FileFormatError, match="torch.float32"):
        tc.Graph.load(path)
    g.save(path)
    _rewrite(path, node_layer=torch.zeros(4, dtype=torch.long))
    with pytest.raises(tc.FileFormatError, match="node tables of shapes"):
        tc.Graph.load(path)
    g.save(path)
    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["tl_circuits"])["n_nodes"] == 5
    assert tc.Graph.load(path).nodes == g.nodes


def test_moved_names_still_work_with_a_deprecation_warning():
    from tl_circuits.graph import influence, prune, queries

    g = five_node_graph()
    with pytest.deprecated_call(match="moved to tl_circuits.graph.nodes.NodeKind.TOKEN"):
        assert prune.TOKEN == NodeKind.TOKEN == 2
    with pytest.deprecated_call(match="graph.influence.node_influence"):
        assert torch.equal(prune.node_influence(g), influence.node_influence(g))
    assert prune.target_seed is influence.target_seed
    with pytest.deprecated_call(match="graph.restrict"):
        sub = queries.restrict(g, torch.tensor([0, 3]))
    assert sub.nodes == g.restrict(torch.tensor([0, 3])).nodes
    with pytest.raises(AttributeError, match="no attribute 'FEATURES'"):
        _ = prune.FEATURES
