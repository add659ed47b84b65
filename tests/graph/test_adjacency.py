"""The adjacency is held as CSR with int32 indices; files of format 1 (COO or dense) still load,
and every analysis gives what it gave on the COO adjacency of format 1."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import tl_circuits as tc
from tests.graph import reference as ref
from tests.graph.conftest import five_node_graph
from tl_circuits.errors import FileFormatError
from tl_circuits.graph.adjacency import edge_list, to_csr


def _graphs(tiny_graph, tiny_budget_graph):
    return [ref.random_graph(s) for s in range(3)] + [five_node_graph(), tiny_graph, tiny_budget_graph]


def _write_version_1(g: tc.Graph, path, *, dense: bool = False) -> None:
    """``g`` written as tl_circuits 0.2.0 before CSR wrote graphs: format 1, sparse COO (int64
    indices, coalesced) or a dense adjacency."""
    coo = g.adjacency.to_sparse_coo().coalesce()
    tensors = {"node_kind": g.node_kind, "node_layer": g.node_layer, "node_position": g.node_position,
               "node_index": g.node_index, "activations": g.activations,
               "target_vectors": g.target_vectors, "rows_computed": g.rows_computed}
    if dense:
        tensors["adjacency"] = g.adjacency.to_dense()
    else:
        tensors["adjacency_indices"], tensors["adjacency_values"] = coo.indices(), coo.values()
    header = {"format_version": 1, "library_version": "0.2.0", "prompt": g.prompt, "tokens": g.tokens,
              "str_tokens": g.str_tokens, "targets": [t._asdict() for t in g.targets],
              "settings": g.settings, "n_nodes": g.n_nodes, "supernodes": g.supernodes}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={"tl_circuits": json.dumps(header)})


def test_graphs_hold_csr_with_int32_indices_whatever_they_are_given(tiny_graph):
    dense = tiny_graph.adjacency.to_dense()
    assert tiny_graph.adjacency.layout == torch.sparse_csr
    assert tiny_graph.adjacency.crow_indices().dtype == torch.int32
    assert tiny_graph.adjacency.col_indices().dtype == torch.int32
    for given in (dense, dense.to_sparse(), dense.to_sparse_csr()):  # int64 CSR from torch
        csr = to_csr(given)
        assert csr.layout == torch.sparse_csr and csr.col_indices().dtype == torch.int32
        assert torch.equal(csr.to_dense(), dense)
        assert csr._nnz() == int((dense != 0).sum())
    rows, cols, vals = tiny_graph.edge_list()
    assert torch.equal(dense[rows.long(), cols.long()], vals)
    assert vals.data_ptr() == tiny_graph.adjacency.values().data_ptr()  # a view, not a copy
    key = rows.long() * dense.shape[1] + cols.long()
    assert bool((key[1:] > key[:-1]).all())  # row-major, unique: a coalesced COO's order


def test_stored_zeros_stay_stored_and_are_not_edges():
    g = five_node_graph()
    coo = torch.sparse_coo_tensor(torch.tensor([[1, 4, 4], [0, 1, 2]]), torch.tensor([3.0, 0.0, -1.0]),
                                  (5, 5), dtype=torch.float64)
    h = tc.Graph.from_tables(kind=g.node_kind, layer=g.node_layer, position=g.node_position,
                             index=g.node_index, adjacency=coo, activations=g.activations,
                             targets=g.targets, target_vectors=g.target_vectors, prompt=None,
                             tokens=g.tokens, str_tokens=g.str_tokens, settings={})
    assert h.adjacency._nnz() == 3
    assert [t.tolist() for t in edge_list(h.adjacency)] == [[1, 4, 4], [0, 1, 2], [3.0, 0.0, -1.0]]
    pruned = h.prune(1.0, 1.0)
    assert pruned.settings["pruning"]["n_edges_full"] == 2  # the stored zero is no edge
    assert pruned.adjacency._nnz() > 0 and bool((pruned.adjacency.values() != 0).all())


def test_round_trip_writes_format_2_csr_and_is_exact(tmp_path, tiny_budget_graph):
    g = tiny_budget_graph
    path = tmp_path / "g.safetensors"
    g.save(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys, header = set(f.keys()), json.loads(f.metadata()["tl_circuits"])
    assert header["format_version"] == 2
    assert {"adjacency_crow", "adjacency_col", "adjacency_values"} <= keys
    assert not {"adjacency_indices", "adjacency"} & keys
    h = tc.Graph.load(path)
    for name in ("crow_indices", "col_indices", "values"):
        a, b = getattr(g.adjacency, name)(), getattr(h.adjacency, name)()
        assert a.dtype == b.dtype and torch.equal(a, b), name


@pytest.mark.parametrize("dense", [False, True])
def test_format_1_files_load_and_analyse_as_before(tmp_path, tiny_graph, tiny_budget_graph, dense):
    for i, g in enumerate(_graphs(tiny_graph, tiny_budget_graph)):
        path = tmp_path / f"old{i}.safetensors"
        _write_version_1(g, path, dense=dense)
        h = tc.Graph.load(path)
        assert h.adjacency.layout == torch.sparse_csr and h.adjacency.col_indices().dtype == torch.int32
        assert torch.equal(h.adjacency.to_dense(), g.adjacency.to_dense())
        assert torch.equal(h.influence(), g.influence())
        assert h.scores() == g.scores()
        p, q = g.prune(0.7, 0.95), h.prune(0.7, 0.95)
        assert p.nodes == q.nodes and torch.equal(p.adjacency.to_dense(), q.adjacency.to_dense())
        assert p.settings["pruning"] == q.settings["pruning"]


def test_analyses_agree_with_the_coo_and_dense_references(tiny_graph, tiny_budget_graph):
    """Influence, pruning and scores on CSR: the dense references (circuit-tracer's rules) and a
    COO edge list read the way format 1's analyses read it (coalesced int64 indices)."""
    from tl_circuits.graph.influence import influence_from_edges, row_normalize_, target_seed

    for g in _graphs(tiny_graph, tiny_budget_graph):
        coo = g.adjacency.to_sparse_coo().coalesce()
        rows, cols = coo.indices()
        vals = row_normalize_(rows, coo.values().abs().double(), g.n_nodes)
        assert torch.equal(g.influence(), influence_from_edges(rows, cols, vals, target_seed(g)))
        for node_t, edge_t in ((0.8, 0.98), (0.5, 0.9)):
            node_mask, edge_mask = ref.prune_dense(g, node_t, edge_t)
            pruned = g.prune(node_t, edge_t)
            kept = node_mask.nonzero().flatten()
            assert pruned.nodes == [g.nodes[i] for i in kept.tolist()]
            want = torch.where(edge_mask, g.adjacency.to_dense(), 0)[kept][:, kept]
            assert torch.equal(pruned.adjacency.to_dense(), want)
        assert g.scores() == pytest.approx(dict(zip(("replacement", "completeness"),
                                                    ref.scores_dense(g), strict=True)), abs=1e-12)


def test_corrupt_csr_files_are_refused(tmp_path):
    g = five_node_graph()
    path = tmp_path / "g.safetensors"
    g.save(path)
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    for name, bad in (("adjacency_col", tensors["adjacency_col"].flip(0)),  # unsorted rows
                      ("adjacency_col", tensors["adjacency_col"] + 10),  # out of range
                      ("adjacency_crow", tensors["adjacency_crow"].to(torch.float32))):
        save_file({**tensors, name: bad.contiguous()}, str(path), metadata=metadata)
        with pytest.raises(FileFormatError, match="invalid adjacency"):
            tc.Graph.load(path)


def test_a_graph_deep_copies_and_pickles(tiny_graph):
    import copy
    import pickle

    for twin in (copy.deepcopy(tiny_graph), pickle.loads(pickle.dumps(tiny_graph))):
        assert twin.adjacency.layout == torch.sparse_csr
        assert twin.adjacency.values().data_ptr() != tiny_graph.adjacency.values().data_ptr()
        assert torch.equal(twin.adjacency.to_dense(), tiny_graph.adjacency.to_dense())
        assert twin.nodes == tiny_graph.nodes and twin.settings == tiny_graph.settings
        assert twin.settings is not tiny_graph.settings


def test_the_csr_adjacency_does_not_keep_what_it_was_made_from_alive():
    """``values()`` of a sparse tensor is a view holding the tensor (and its int64 indices)."""
    import gc
    import weakref

    g = five_node_graph()
    for make in (g.adjacency.to_sparse_coo, lambda: g.adjacency.to_dense().to_sparse_csr()):  # int64
        given = make()
        ref = weakref.ref(given)
        h = tc.Graph.from_tables(kind=g.node_kind, layer=g.node_layer, position=g.node_position,
                                 index=g.node_index, adjacency=given, activations=g.activations,
                                 targets=g.targets, target_vectors=g.target_vectors, prompt=None,
                                 tokens=g.tokens, str_tokens=g.str_tokens, settings={})
        del given
        gc.collect()
        assert ref() is None
        assert torch.equal(h.adjacency.to_dense(), g.adjacency.to_dense())
