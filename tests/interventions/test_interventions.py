"""Interventions: exact reproduction, predicted effects, generation, and clear errors."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import FAMILIES, tiny_model, tiny_set

PROMPT = [3, 17, 9, 41, 5, 22, 7, 8]


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("llama", seed=1)
    transcoders = tiny_set("jumprelu_skip", seed=2)
    graph = tc.attribute(model, transcoders, PROMPT, progress=False)
    return model, transcoders, graph


@pytest.mark.parametrize("family,constrained,freeze", [
    (FAMILIES[0], None, True), (FAMILIES[1], None, False), (FAMILIES[2], (0, 1, 2), True),
    (FAMILIES[1], (1,), False),
])
def test_same_value_reproduces_the_model_exactly(family, constrained, freeze):
    model = tiny_model(family, seed=5)
    transcoders = tiny_set("topk_skip", layers=(0, 2), seed=6)
    with torch.no_grad():
        want = model(torch.tensor(PROMPT)[None])[0]
    clean = tc.intervene(model, transcoders, PROMPT, [])
    a = clean.activations
    nz = a[0][4].nonzero()[0, 0].item()
    edits = [(0, 4, nz, float(a[0][4, nz])), tc.Intervention(2, -1, 3, 1.0, "scale"),
             {"layer": 2, "position": 2, "feature": 5, "value": float(a[2][2, 5])}]
    out = tc.intervene(model, transcoders, PROMPT, edits, constrained_layers=constrained,
                       freeze_attention=freeze)
    assert float((clean.logits - want).abs().max()) < 1e-12
    assert float((out.logits - want).abs().max()) < 1e-12
    assert torch.equal(out.activations[0][4], a[0][4])


def test_zeroing_a_feature_moves_the_top_logit_by_its_edge(setup):
    model, transcoders, graph = setup
    top_target = int(graph.indices("target")[0])
    row = graph.adjacency.to_dense()[top_target]
    feats = graph.indices("feature")
    s = int(feats[row[feats].abs().argmax()])
    edge = float(row[s])
    assert abs(edge) > 0.1
    node = graph.nodes[s]
    vector = graph.target_vectors[0]
    everything = range(model.cfg.n_layers)
    base = tc.intervene(model, transcoders, PROMPT, [], constrained_layers=everything)
    out = tc.intervene(model, transcoders, PROMPT, [(node, 0.0)], constrained_layers=everything)
    moved = float(vector @ (out.resid_final[-1] - base.resid_final[-1]))
    assert moved == pytest.approx(-edge, abs=1e-10)
    # halving it moves the read-out by half the edge
    half = tc.intervene(model, transcoders, PROMPT, [{"node": node, "value": 0.5, "mode": "scale"}],
                        constrained_layers=everything)
    assert float(vector @ (half.resid_final[-1] - base.resid_final[-1])) == pytest.approx(-edge / 2, abs=1e-10)
    # constrained layers keep their clean activations except the intervened feature
    assert out.activations[node.layer][node.position, node.index] == 0
    changed = (out.activations[2] != base.activations[2]).sum()
    assert int(changed) == (1 if node.layer == 2 else 0)
    open_loop = tc.intervene(model, transcoders, PROMPT, [(node, 0.0)])
    if node.layer < 2:
        assert not torch.equal(open_loop.activations[2], base.activations[2])


def test_check_graph_constrained_agrees_and_open_loop_correlates(setup):
    model, transcoders, graph = setup
    report = tc.check_graph(model, transcoders, graph, top=20, batch_size=32)
    assert len(report.node_ids) == 20 and report.predicted.shape == (20, len(graph.targets))
    assert report.predicted.abs().max() > 0.05
    assert report.max_abs_error < 1e-4
    assert torch.allclose(report.constrained, report.predicted, atol=1e-10)
    assert 0.2 < report.pearson_open_loop <= 1.0
    assert "Pearson" in str(report)
    with pytest.raises(tc.ConfigError, match="full graph"):
        tc.check_graph(model, transcoders, graph.prune())
    with pytest.raises(tc.ConfigError, match="differ from the ones the graph was built with"):
        tc.check_graph(model, tiny_set("jumprelu_skip", seed=9), graph, top=3)


def test_supernode_intervention_equals_its_members(setup):
    model, transcoders, graph = setup
    top = [t.id for t in graph.top_nodes(3)]
    graph.add_supernode("top3", top, replace=True)
    by_name = tc.intervene(model, transcoders, PROMPT, [("top3", 0.0)], graph=graph)
    by_dict = tc.intervene(model, transcoders, PROMPT, [{"supernode": "top3", "value": 0.0}], graph=graph)
    explicit = tc.intervene(model, transcoders, PROMPT, [(graph.nodes[i], 0.0) for i in top])
    assert torch.equal(by_name.logits, explicit.logits) and torch.equal(by_dict.logits, explicit.logits)
    base = tc.intervene(model, transcoders, PROMPT, [])
    assert float((by_name.logits - base.logits).abs().max()) > 1e-3


def _greedy(model, tokens, n):
    seq = list(tokens)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor(seq)[None])[0, -1].argmax()))
    return seq


def test_generate(setup):
    model, transcoders, _ = setup
    assert tc.generate(model, transcoders, PROMPT, 4) == _greedy(model, PROMPT, 4)
    steered = tc.generate(model, transcoders, PROMPT, 4, interventions=[(2, None, 3, 40.0)])
    assert steered[: len(PROMPT)] == PROMPT and len(steered) == len(PROMPT) + 4
    # the first new token is what intervene predicts at the last prompt position
    first = tc.intervene(model, transcoders, PROMPT, [(2, len(PROMPT) - 1, 3, 40.0)])
    assert steered[len(PROMPT)] == int(first.logits[-1].argmax())
    assert steered != _greedy(model, PROMPT, 4)


@pytest.mark.parametrize("item,message", [
    ((7, 0, 1, 0.0), "no transcoder at layer 7"),
    ((1, 99, 1, 0.0), "position 99 does not exist"),
    ((1, 2, 999, 0.0), "feature 999 does not exist at layer 1"),
    ((1, None, 1, 0.0), "position None"),
    ((1, 2, 1, 0.0, "add"), "mode must be 'set' or 'scale'"),
    ((tc.Node("token", -1, 2, 9), 0.0), "cannot intervene on a token node"),
    ((tc.Node("error", 1, 2, -1), 0.0), "cannot intervene on a error node"),
    (("nope", 0.0), "pass graph="),
    ({"layer": 1, "feature": 2}, "lacks"),
    ("x", "supernode 'x'"),
    (3.5, "cannot read intervention"),
])
def test_bad_interventions_raise_config_error(setup, item, message):
    model, transcoders, _ = setup
    with pytest.raises(tc.ConfigError, match=message):
        tc.intervene(model, transcoders, PROMPT, [item])


def test_bad_arguments(setup):
    model, transcoders, graph = setup
    with pytest.raises(tc.ConfigError, match="has no supernode 'ghost'"):
        tc.intervene(model, transcoders, PROMPT, [("ghost", 0.0)], graph=graph)
    with pytest.raises(tc.ConfigError, match=r"constrained_layers \[5\] do not exist"):
        tc.intervene(model, transcoders, PROMPT, [], constrained_layers=[5])
    with pytest.raises(tc.ConfigError, match="max_new_tokens"):
        tc.generate(model, transcoders, PROMPT, -1)
