"""Graphs round-trip exactly through one safetensors file, written atomically, without pickle."""

from __future__ import annotations

import torch

import tl_circuits as tc
from tests.core.tiny import tiny_model, tiny_set


def test_round_trip_is_exact(tmp_path):
    model = tiny_model("gpt2", tokenizer=True)
    g = tc.attribute(model, tiny_set("topk_skip"), "w1 Paris w3 w4", targets=[("Paris", "London"), 7],
                     progress=False)
    path = tmp_path / "graph.safetensors"
    g.save(path)
    h = tc.Graph.load(path)
    for name in ("node_kind", "node_layer", "node_position", "node_index", "activations",
                 "target_vectors", "rows_computed"):
        assert torch.equal(getattr(g, name), getattr(h, name)), name
    assert torch.equal(g.adjacency.to_dense(), h.adjacency.to_dense())
    assert (g.prompt, g.tokens, g.str_tokens, g.targets, g.settings) == (
        h.prompt, h.tokens, h.str_tokens, h.targets, h.settings)
    assert g.nodes == h.nodes and g.nodes[0].kind == "feature"
    assert h.str_tokens[:2] == ["<bos>", "w1"]
    assert [p.name for p in tmp_path.iterdir()] == ["graph.safetensors"]


def test_interrupted_save_leaves_previous_file(tmp_path, monkeypatch):
    model = tiny_model("llama")
    g = tc.attribute(model, tiny_set("relu"), [1, 2, 3], progress=False)
    path = tmp_path / "graph.safetensors"
    g.save(path)
    before = path.read_bytes()

    import tl_circuits.graph.io as gio

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gio, "save_file", interrupted)
    try:
        g.save(path)
    except KeyboardInterrupt:
        pass
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["graph.safetensors"]


def test_sparse_adjacency_is_sorted_and_equal_to_the_dense_rows():
    from tl_circuits.attribution.attribute import _sparse_adjacency

    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(7, 11, generator=gen) * (torch.rand(7, 11, generator=gen) > 0.4)
    nodes = torch.tensor([9, 2, 10, 0, 5, 3, 7])
    adj = _sparse_adjacency(rows, nodes, 11, chunk=3)
    dense = torch.zeros(11, 11)
    dense[nodes] = rows
    assert torch.equal(adj.to_dense(), dense)
    assert adj._nnz() == int((rows != 0).sum())
    assert adj.layout == torch.sparse_csr and adj.col_indices().dtype == torch.int32
    torch._validate_sparse_csr_tensor_args(adj.crow_indices(), adj.col_indices(), adj.values(), (11, 11))
