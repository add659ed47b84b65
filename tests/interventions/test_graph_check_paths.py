"""check_graph's path prediction: exact on a tiny model where no feature switches on or off,
checked against the open-loop measurement and an independent dense computation."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_model, tiny_set
from tl_circuits.graph_check import path_effects

PROMPT = [3, 17, 9, 41, 5, 22, 7, 8]


@pytest.fixture(scope="module")
def always_on():
    """ReLU transcoders whose encoder bias keeps every feature active on every token, and whose
    small decoders keep every intervention's downstream change below that margin (so no feature
    switches off), every feature row computed."""
    model = tiny_model("llama", seed=1)
    transcoders = tiny_set("relu", seed=2)
    for t in transcoders:
        t.b_enc.data += 6.0
        t.W_dec.data *= 0.05
    graph = tc.attribute(model, transcoders, PROMPT, progress=False)
    return model, transcoders, graph


def test_path_prediction_equals_the_open_loop_measurement(always_on):
    model, transcoders, graph = always_on
    rows = graph.rows_computed
    assert int((rows < graph.n_features).sum()) == graph.n_features == 3 * 24 * len(PROMPT)
    report = tc.check_graph(model, transcoders, graph, top=12, batch_size=6)
    assert report.switched == [0] * 12  # the assumption holds
    assert report.path_predicted is not None
    scale = float(report.open_loop.abs().max())
    assert scale > 1e-2
    # Later features respond: the direct edge alone misses part of the effect ...
    assert float((report.predicted - report.open_loop).abs().max()) > 1e-3 * scale
    # ... and the sum over the graph's paths is the measured open-loop effect.
    assert torch.allclose(report.path_predicted, report.open_loop, rtol=0, atol=1e-9 * scale)
    assert report.pearson_path == pytest.approx(1.0, abs=1e-12)
    assert report.pearson_path_per_target == pytest.approx([1.0] * len(graph.targets), abs=1e-9)
    assert len(report.pearson_direct_per_target) == len(graph.targets)
    assert "paths 1.000" in str(report)


def _dense_path_effects(graph, sources):
    """Independent: delta = A_ff diag(1/a) delta + (-a_s e_s), solved densely (rows of features
    without a computed row are 0 in A); targets change by A_tf diag(1/a) delta."""
    n_f = graph.n_features
    A = graph.adjacency.to_dense().to(torch.float64)
    act = graph.activations.to(torch.float64)
    M = A[:n_f, :n_f] / act[None, :]
    delta0 = torch.zeros(n_f, len(sources), dtype=torch.float64)
    for j, s in enumerate(sources):
        delta0[s, j] = -act[s]
    delta = torch.linalg.solve(torch.eye(n_f, dtype=torch.float64) - M, delta0)
    targets = graph.indices("target")
    return (A[targets][:, :n_f] / act[None, :] @ delta).T


def test_path_effects_equal_a_dense_solve(always_on):
    _, _, graph = always_on
    sources = [r.id for r in graph.top_nodes(5)]
    assert torch.allclose(path_effects(graph, sources), _dense_path_effects(graph, sources),
                          rtol=0, atol=1e-10)


def test_features_without_rows_and_switching_features_are_left_out_and_reported(always_on):
    model, _, _ = always_on
    transcoders = tiny_set("jumprelu_skip", seed=2)
    graph = tc.attribute(model, transcoders, PROMPT, max_feature_nodes=10, progress=False)
    rows = graph.rows_computed
    assert int((rows < graph.n_features).sum()) == 10 < graph.n_features
    report = tc.check_graph(model, transcoders, graph, top=8, batch_size=8)
    assert len(report.switched) == 8 and all(n >= 0 for n in report.switched)
    assert any(n > 0 for n in report.switched)  # zeroing a feature turns others on or off here
    # Paths run through the 10 computed rows only (the others count as unchanged).
    assert torch.allclose(report.path_predicted, _dense_path_effects(graph, report.node_ids),
                          rtol=0, atol=1e-10)
    assert -1.0 <= report.pearson_path <= 1.0
