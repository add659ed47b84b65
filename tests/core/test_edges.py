"""Every edge of every computed row equals an independent brute-force recomputation (float64)."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.reference import brute_force_rows
from tests.core.tiny import ARCHS, FAMILIES, tiny_model, tiny_set, tiny_transcoder

PROMPT = [3, 17, 9, 41, 5, 22]



def _rows(graph):
    return graph.adjacency.to_dense()[graph.rows_computed]


def assert_edges_match(model, transcoders, graph):
    got, expected = _rows(graph), brute_force_rows(model, transcoders, graph)
    scale = expected.abs().max()
    assert scale > 0
    err = (got - expected).abs()
    assert float(err.max() / scale) <= 1e-6, f"max relative edge error {float(err.max() / scale):.3g}"
    big = expected.abs() > 1e-3 * scale
    assert float((err[big] / expected[big].abs()).max()) <= 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_every_edge_matches_brute_force_per_family(family, backward):
    model = tiny_model(family)
    transcoders = tiny_set("jumprelu_skip")
    graph = tc.attribute(model, transcoders, PROMPT, batch_size=7, progress=False)
    assert graph.n_features > 20
    assert_edges_match(model, transcoders, graph)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_edge_matches_brute_force_per_transcoder_type(arch, backward):
    model = tiny_model("llama", seed=1)
    transcoders = tiny_set(arch, seed=2)
    graph = tc.attribute(model, transcoders, PROMPT, batch_size=16, progress=False)
    assert_edges_match(model, transcoders, graph)


def test_partial_coverage_and_other_input_hook():
    """Layer 1 has no transcoder (its MLP is one error node per position); inputs at resid_mid."""
    model = tiny_model("gpt2", seed=3)
    transcoders = tc.TranscoderSet([
        tiny_transcoder(la, "relu_skip", hook_in="blocks.{l}.hook_resid_mid") for la in (0, 2)
    ])
    graph = tc.attribute(model, transcoders, PROMPT, progress=False)
    assert set(graph.node_layer[graph.indices("feature")].tolist()) == {0, 2}
    assert set(graph.node_layer[graph.indices("error")].tolist()) == {0, 1, 2}
    assert_edges_match(model, transcoders, graph)


def test_bos_position_has_no_features_and_is_folded_into_its_token():
    model = tiny_model("llama", tokenizer=True, seed=4)
    transcoders = tiny_set("relu")
    graph = tc.attribute(model, transcoders, "w3 w17 w9 Paris w5", progress=False)
    assert graph.tokens[0] == 0 and graph.settings["has_bos"]
    feature_and_error = torch.cat([graph.indices("feature"), graph.indices("error")])
    assert graph.node_position[feature_and_error].min() == 1
    assert_edges_match(model, transcoders, graph)


def test_nothing_is_missing_preactivation_is_sum_of_edges_plus_bias():
    """Without model or decoder biases, a feature's pre-activation is exactly its incoming edges
    plus its encoder bias: every contribution is some node's edge."""
    model = tiny_model("llama", biases=False, tokenizer=True, seed=5)
    transcoders = tiny_set("jumprelu", b_dec=False)
    graph = tc.attribute(model, transcoders, "w1 w2 Paris w3 London", progress=False)
    _, cache = model.run_with_cache(torch.tensor(graph.tokens)[None])
    rows = _rows(graph)
    checked = 0
    for r, node_id in enumerate(graph.rows_computed.tolist()):
        node = graph.nodes[node_id]
        if node.kind != "feature":
            continue
        t = transcoders[node.layer]
        pre = t.pre_activation(cache[t.hook_name][0, node.position])[node.index]
        total = rows[r].sum() + t.b_enc[node.index]
        assert torch.allclose(total, pre, rtol=1e-9, atol=1e-10), (node, float(total), float(pre))
        checked += 1
    assert checked == graph.n_features > 10


def test_targets_default_custom_and_logit_difference():
    model = tiny_model("gpt2", tokenizer=True, seed=6)
    transcoders = tiny_set("relu")
    prompt = "w4 w8 w15 w16"
    graph = tc.attribute(model, transcoders, prompt, max_n_logits=3, desired_logit_prob=0.99,
                         progress=False)
    logits = model(torch.tensor(graph.tokens)[None])[0, -1].double()
    probs = logits.softmax(-1)
    assert [t.token_ids[0] for t in graph.targets] == probs.topk(3).indices.tolist()
    assert [t.probability for t in graph.targets] == pytest.approx(probs.topk(3).values.tolist())
    custom = tc.attribute(model, transcoders, prompt, targets=[" Paris".strip(), ("Paris", "London"), 7,
                                                               torch.ones(16, dtype=torch.float64)],
                          progress=False)
    assert [t.kind for t in custom.targets] == ["logit", "logit_diff", "logit", "direction"]
    W_U = model.W_U
    assert torch.allclose(custom.target_vectors[1], W_U[:, 48] - W_U[:, 49])
    assert_edges_match(model, transcoders, custom)


def test_max_feature_nodes_keeps_the_most_influential_rows():
    """One layer: features reach the targets only directly, so a feature's influence is known
    exactly from the target rows, and the kept rows must be the top ones by it."""
    model = tiny_model("llama", n_layers=1, seed=7)
    transcoders = tiny_set("relu", layers=(0,), d_sae=64)
    full = tc.attribute(model, transcoders, PROMPT, progress=False)
    n_feat = full.n_features
    assert n_feat > 30
    adj = full.adjacency.to_dense().abs()
    targets = full.indices("target")
    norm = adj[targets] / adj[targets].sum(1, keepdim=True)
    influence = (full.target_weights() @ norm.double())[: n_feat]
    k = 12
    part = tc.attribute(model, transcoders, PROMPT, max_feature_nodes=k, batch_size=5, progress=False)
    kept = part.rows_computed[part.rows_computed < n_feat]
    assert len(kept) == k
    assert set(kept.tolist()) == set(influence.topk(k).indices.tolist())
    # The rows that were computed are exact rows of the full graph.
    assert torch.allclose(part.adjacency.to_dense()[kept], full.adjacency.to_dense()[kept])


def test_max_feature_nodes_multi_layer_prefers_influential_features():
    model = tiny_model("gpt2", seed=8)
    transcoders = tiny_set("relu")
    full = tc.attribute(model, transcoders, PROMPT, progress=False)
    from tl_circuits.graph.influence import influence_from_rows

    rows = full.adjacency.to_dense()[full.rows_computed]
    seed = torch.zeros(len(rows), dtype=torch.float64)
    is_target = full.node_kind[full.rows_computed] == 3
    seed[is_target] = full.target_weights()
    infl = influence_from_rows(rows, full.rows_computed, seed)[: full.n_features]
    k = full.n_features // 4
    part = tc.attribute(model, transcoders, PROMPT, max_feature_nodes=k, batch_size=4, progress=False)
    kept = part.rows_computed[part.rows_computed < full.n_features]
    # The kept quarter carries far more influence than a random quarter would.
    assert infl[kept].sum() > 2.0 * infl.sum() * k / full.n_features


def test_feature_pool_keeps_the_top_direct_features_and_folds_the_rest_exactly():
    """Under a budget, only ``feature_pool`` features stay nodes: the ones with the largest direct
    influence on the targets. The others fold into the error node at their layer and position,
    so every edge is still exact (the brute-force error vectors carry the folded features) and
    each target row sums to the same total as in the full graph."""
    model = tiny_model("llama", seed=9)
    transcoders = tiny_set("jumprelu_skip", seed=3)
    full = tc.attribute(model, transcoders, PROMPT, progress=False)
    pooled = tc.attribute(model, transcoders, PROMPT, max_feature_nodes=6, feature_pool=15,
                          batch_size=4, progress=False)
    assert full.settings["feature_pool"] is None
    assert pooled.settings["feature_pool"] == 15 == pooled.n_features
    assert pooled.settings["n_active_features"] == full.n_features > 40
    # The pool: top 15 features by direct influence (target rows of the full graph).
    dense = full.adjacency.to_dense()
    rows = dense[full.indices("target")].abs()
    direct = (full.target_weights() @ (rows / rows.sum(1, keepdim=True)).double())[: full.n_features]
    want = {full.nodes[i] for i in direct.topk(15).indices.tolist()}
    assert {pooled.nodes[i] for i in pooled.indices("feature").tolist()} == want
    assert_edges_match(model, transcoders, pooled)
    # Nothing lost: a target row's total is the same with 15 or all features as nodes.
    a = dense[full.indices("target")].sum(1)
    b = pooled.adjacency.to_dense()[pooled.indices("target")].sum(1)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_feature_pool_must_be_positive():
    model = tiny_model("llama", seed=9)
    with pytest.raises(tc.ConfigError, match="feature_pool must be at least 1"):
        tc.attribute(model, tiny_set("relu"), PROMPT, max_feature_nodes=2, feature_pool=0,
                     progress=False)
