"""Neuronpedia-style export: schema, node-id conventions, edge weights, pruning (the graph's own,
once), feature files."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tests.graph.reference import permuted
from tl_circuits.errors import ConfigError, FileFormatError
from tl_circuits.graph import NodeKind
from tl_circuits.viewer import export_graph, graph_to_json, validate
from tl_circuits.viewer.__main__ import main
from tl_circuits.viewer.export import cantor, node_scores


def test_full_export_matches_the_graph(graph):
    data = graph_to_json(graph, slug="paris", node_threshold=1.0, edge_threshold=1.0)
    validate(data, "graph")
    md = data["metadata"]
    assert md["slug"] == "paris" and md["prompt"] == graph.prompt and md["prompt_tokens"] == graph.str_tokens
    assert data["qParams"] == {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    by_id = {n["node_id"]: n for n in data["nodes"]}
    assert len(by_id) == len(data["nodes"])
    n_layers = graph.settings["n_layers"]
    for node in data["nodes"]:
        t = node["feature_type"]
        if t == "cross layer transcoder":
            la, ix, pos = map(int, node["node_id"].split("_"))
            assert (node["layer"], node["feature"], node["ctx_idx"]) == (str(la), cantor(la, ix), pos)
            assert node["jsNodeId"] == f"{la}_{ix}-0" and node["feature_index"] == ix
            i = graph.node_index_of("feature", la, pos, ix)
            assert node["activation"] == pytest.approx(float(graph.activations[i]))
        elif t == "embedding":
            assert re.fullmatch(r"E_\d+_\d+", node["node_id"]) and node["layer"] == "E"
            tok, pos = map(int, node["node_id"][2:].split("_"))
            assert graph.tokens[pos] == tok and node["jsNodeId"] == f"E_{tok}-{pos}"
        elif t == "logit":
            assert node["layer"] == str(n_layers + 1) and node["ctx_idx"] == len(graph.str_tokens) - 1
            assert node["clerp"].startswith('Output "')
        else:
            assert node["node_id"].split("_")[1] == "-1" and node["feature"] == -1
    # every target and token is present, with the first target marked
    assert sum(n["feature_type"] == "logit" for n in data["nodes"]) == len(graph.targets)
    assert sum(n["is_target_logit"] for n in data["nodes"]) == 1
    assert sum(n["feature_type"] == "embedding" for n in data["nodes"]) == len(graph.str_tokens)
    # link weights are the adjacency entries (row = target, column = source)
    index = {}
    for i, nd in enumerate(graph.nodes):
        if nd.kind == "feature":
            index[f"{nd.layer}_{nd.index}_{nd.position}"] = i
        elif nd.kind == "error":
            index[f"{nd.layer}_-1_{nd.position}"] = i
        elif nd.kind == "token":
            index[f"E_{nd.index}_{nd.position}"] = i
    for t_i, t in zip(graph.indices("target").tolist(), graph.targets):
        index[f"{n_layers + 1}_{t.token_ids[0]}_{len(graph.str_tokens) - 1}"] = t_i
    dense = graph.adjacency.to_dense()
    assert len(data["links"]) == int((dense != 0).sum()) - _edges_of_dropped(graph, data, index)
    for link in data["links"][:: max(1, len(data["links"]) // 200)]:
        assert link["weight"] == pytest.approx(float(dense[index[link["target"]], index[link["source"]]]))


def _edges_of_dropped(graph, data, index):
    kept = {index[n["node_id"]] for n in data["nodes"]}
    dense = graph.adjacency.to_dense() != 0
    dropped = [i for i in range(graph.n_nodes) if i not in kept]
    return int(dense[dropped].sum() + dense[:, dropped].sum() - dense[dropped][:, dropped].sum())


def test_pruning_is_monotone_and_cumulative(graph):
    counts = []
    for t in (0.3, 0.6, 0.9, 1.0):
        data = graph_to_json(graph, node_threshold=t, edge_threshold=1.0)
        inner = [n for n in data["nodes"] if n["feature_type"] in ("cross layer transcoder", "mlp reconstruction error")]
        counts.append(len(inner))
        # kept nodes are the most influential ones: cumulative share stays within the threshold
        # except for the one node that crosses it
        assert sum(n["influence"] > t + 1e-9 for n in inner) <= 1
    assert counts == sorted(counts) and counts[0] < counts[-1]
    e_counts = [len(graph_to_json(graph, node_threshold=1.0, edge_threshold=t)["links"]) for t in (0.5, 0.9, 1.0)]
    assert e_counts == sorted(e_counts) and e_counts[0] < e_counts[-1]
    with pytest.deprecated_call(match="use graph.influence"):
        scores = node_scores(graph)
    targets = graph.indices("target")
    assert float(scores[targets].sum()) == pytest.approx(float(graph.target_weights().sum()))
    with pytest.raises(ConfigError, match="node_threshold must be in"):
        graph_to_json(graph, node_threshold=0.0)


def test_annotations_and_schema_rejection(graph):
    data = graph_to_json(graph, node_threshold=1.0, edge_threshold=1.0)
    fid = next(n["node_id"] for n in data["nodes"] if n["feature_type"] == "cross layer transcoder")
    ann = {"labels": {fid: "says a capital"}, "pinnedIds": [fid], "supernodes": [["capitals", fid]]}
    out = graph_to_json(graph, node_threshold=1.0, edge_threshold=1.0, annotations=ann)
    assert next(n for n in out["nodes"] if n["node_id"] == fid)["clerp"] == "says a capital"
    assert out["qParams"]["pinnedIds"] == [fid] and out["qParams"]["supernodes"] == [["capitals", fid]]
    del data["metadata"]["slug"]
    with pytest.raises(FileFormatError, match="'slug' is a required property"):
        validate(data, "graph")
    with pytest.raises(FileFormatError, match="at nodes/0/node_id"):
        validate({**out, "nodes": [{**out["nodes"][0], "node_id": "<b>"}]}, "graph")


def test_export_writes_graph_and_feature_files(graph, graph_file, dashboards, tmp_path):
    path = export_graph(graph_file, tmp_path / "paris.json", dashboards=dashboards, node_threshold=0.9)
    data = json.loads(path.read_text())
    validate(data, "graph")
    features = [n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"]
    files = sorted(p.name for p in (tmp_path / "paris_features").iterdir())
    assert files == sorted({f"{n['layer']}_{n['feature_index']}.json" for n in features})
    n = features[0]
    saved = json.loads((tmp_path / "paris_features" / f"{n['layer']}_{n['feature_index']}.json").read_text())
    assert saved == json.loads(json.dumps(dashboards.feature(int(n["layer"]), n["feature_index"])))


def test_cli_export_json_and_html(graph_file, dashboards, tmp_path):
    assert main(["export", str(graph_file), str(tmp_path / "g.json")]) == 0
    validate(json.loads((tmp_path / "g.json").read_text()), "graph")
    assert main(["export", str(graph_file), str(tmp_path / "g.html"), "--dashboards", str(dashboards.path)]) == 0
    html = (tmp_path / "g.html").read_text()
    assert 'id="tlc-data"' in html and "d3js.org v7" in html and "/static/" not in html
    assert main(["export", str(tmp_path / "missing.tlc"), str(tmp_path / "x.json")]) == 2


def _links(data):
    return {(lk["source"], lk["target"]): lk["weight"] for lk in data["links"]}


def test_json_of_a_graph_is_the_json_of_its_pruned_graph(graph):
    for nt, et in ((0.8, 0.98), (0.5, 0.9), (1.0, 1.0)):
        pruned = graph.prune(nt, et)
        data = graph_to_json(graph, node_threshold=nt, edge_threshold=et)
        assert data == graph_to_json(pruned, node_threshold=nt, edge_threshold=et)
        assert len(data["nodes"]) == pruned.n_nodes
        assert len(data["links"]) == int((pruned.adjacency.to_dense() != 0).sum())
        assert (data["metadata"]["node_threshold"], data["metadata"]["edge_threshold"]) == (nt, et)


def test_exporting_a_pruned_graph_keeps_exactly_its_nodes_and_edges(graph, tmp_path):
    pruned = graph.prune(0.5, 0.9)
    data = graph_to_json(pruned)  # the default thresholds (0.8, 0.98) do not prune it again
    assert data == graph_to_json(pruned, node_threshold=0.3, edge_threshold=0.5)
    assert (data["metadata"]["node_threshold"], data["metadata"]["edge_threshold"]) == (0.5, 0.9)
    ids = [n["node_id"] for n in data["nodes"]]
    assert len(ids) == len(set(ids)) == pruned.n_nodes
    assert [n["feature_type"] for n in data["nodes"]] == [
        ("cross layer transcoder", "mlp reconstruction error", "embedding", "logit")[k]
        for k in pruned.node_kind.tolist()]
    dense = pruned.adjacency.to_dense()
    want = {(ids[c], ids[r]): float(dense[r, c]) for r, c in (dense != 0).nonzero().tolist()}
    assert _links(data) == want
    acts = [n["activation"] for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert acts == pytest.approx(pruned.activations.tolist())
    # the command line (tl-circuits export / python -m tl_circuits.viewer export) on a pruned file
    pruned.save(tmp_path / "pruned.tlc")
    assert main(["export", str(tmp_path / "pruned.tlc"), str(tmp_path / "p.json")]) == 0
    assert json.loads((tmp_path / "p.json").read_text()) == json.loads(json.dumps({**data, "metadata": {
        **data["metadata"], "slug": "p"}}))


def test_influence_is_the_cumulative_share_on_the_threshold_scale(graph):
    pruned = graph.prune(0.8, 0.98)
    data = graph_to_json(pruned)
    influence = pruned.influence()
    inner = [i for i, k in enumerate(pruned.node_kind.tolist()) if k in (NodeKind.FEATURE, NodeKind.ERROR)]
    order = sorted(inner, key=lambda i: -float(influence[i]))
    total = float(influence[inner].sum())
    want, running = {}, 0.0
    for i in order:
        running += float(influence[i])
        want[i] = 0.8 * running / total
    got = {i: n["influence"] for i, n in enumerate(data["nodes"])}
    assert [got[i] for i in inner] == pytest.approx([want[i] for i in inner], rel=1e-9)
    assert max(got[i] for i in inner) == pytest.approx(0.8)  # the viewer's slider at 0.8 shows all
    for i in pruned.indices("token").tolist():
        assert got[i] == 0.0
    for t, i in enumerate(pruned.indices("target").tolist()):
        assert got[i] == pruned.targets[t].weight


def test_max_feature_nodes_keeps_the_most_influential_features(graph):
    full = graph_to_json(graph, node_threshold=1.0, edge_threshold=1.0)
    data = graph_to_json(graph, node_threshold=1.0, edge_threshold=1.0, max_feature_nodes=5)
    pruned = graph.prune(1.0, 1.0)
    feats = pruned.indices("feature")
    top = feats[pruned.influence()[feats].argsort(descending=True)[:5]]
    top_ids = {f"{n.layer}_{n.index}_{n.position}" for n in (pruned.nodes[i] for i in top.tolist())}
    assert {n["node_id"] for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"} == top_ids
    others = [n["node_id"] for n in full["nodes"] if n["feature_type"] != "cross layer transcoder"]
    assert [n["node_id"] for n in data["nodes"] if n["feature_type"] != "cross layer transcoder"] == others
    assert set(_links(data)) <= set(_links(full)) and len(data["links"]) < len(full["links"])
    with pytest.raises(ConfigError, match="max_feature_nodes must be 0 or more"):
        graph_to_json(graph, max_feature_nodes=-1)


def test_export_does_not_depend_on_node_order(graph):
    gen = torch.Generator().manual_seed(0)
    shuffled = permuted(graph, torch.randperm(graph.n_nodes, generator=gen))
    assert bool((shuffled.node_kind[1:] < shuffled.node_kind[:-1]).any())  # not in the usual order
    for nt, et in ((0.8, 0.98), (1.0, 1.0)):
        a = graph_to_json(graph, node_threshold=nt, edge_threshold=et)
        b = graph_to_json(shuffled, node_threshold=nt, edge_threshold=et)
        by_id = {n["node_id"]: n for n in b["nodes"]}
        assert len(by_id) == len(a["nodes"])
        for n in a["nodes"]:
            assert by_id[n["node_id"]] == {**n, "influence": pytest.approx(n["influence"], rel=1e-9)}
        assert _links(b) == _links(a)
