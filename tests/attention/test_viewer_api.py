"""The viewer's /api/heads and /api/qk: from the graph file when stored, computed when the server
holds the model, clear 400 / 404 otherwise."""

from __future__ import annotations

import pytest

import tl_circuits as tc
from tests.attention.conftest import PROMPT

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from tl_circuits.viewer.server import create_app  # noqa: E402


def _crossing(data):
    return [lk for lk in data["links"] if lk["source"].split("_")[-1] != lk["target"].split("_")[-1]]


def test_stored_entries_are_served_without_a_model(models, tmp_path):
    model, transcoders, _ = models("gemma2", "tl")
    graph = tc.attribute(model, transcoders, PROMPT, progress=False, head_loadings=True)
    path = tmp_path / "g.safetensors"
    graph.save(path)
    client = TestClient(create_app(path), base_url="http://127.0.0.1")
    data = client.get("/api/graph").json()
    # The server shows the whole graph; attribution stored the heads of the default pruned view.
    link = max((lk for lk in _crossing(data) if "heads" in lk), key=lambda lk: abs(lk["weight"]))
    bare = next(lk for lk in _crossing(data) if "heads" not in lk)
    r = client.get("/api/heads", params={"source": bare["source"], "target": bare["target"]})
    assert r.status_code == 404 and "--model" in r.json()["error"]
    r = client.get("/api/heads", params={"source": link["source"], "target": link["target"]})
    assert r.status_code == 200 and r.json() == {"heads": link["heads"], "heads_rest": link["heads_rest"]}
    entry = data["qk"][0]
    r = client.get("/api/qk", params={"layer": entry["layer"], "head": entry["head"],
                                      "query": entry["query_pos"], "key": entry["key_pos"]})
    assert r.status_code == 200 and r.json() == entry
    missing = client.get("/api/qk", params={"layer": 0, "head": 0, "query": 1, "key": 0})
    assert missing.status_code == 404 and "--model" in missing.json()["error"]
    assert client.get("/api/qk", params={"layer": "x", "head": 0, "query": 1, "key": 0}).status_code == 400
    assert client.get("/api/heads", params={"source": "E_1_0", "target": "nope"}).status_code == 404


def test_entries_are_computed_when_the_server_holds_the_model(models, tmp_path):
    model, transcoders, _ = models("qwen2", "hf")
    graph = tc.attribute(model, transcoders, PROMPT, progress=False)
    path = tmp_path / "g.safetensors"
    graph.save(path)
    client = TestClient(create_app(path, model=model, transcoders=transcoders), base_url="http://127.0.0.1")
    data = client.get("/api/graph").json()
    assert "qk" not in data and not any("heads" in lk for lk in data["links"])
    link = max(_crossing(data), key=lambda lk: abs(lk["weight"]))
    got = client.get("/api/heads", params={"source": link["source"], "target": link["target"]}).json()
    assert 1 <= len(got["heads"]) <= 8
    assert sum(h["weight"] for h in got["heads"]) + got["heads_rest"] == pytest.approx(link["weight"])
    from tl_circuits.viewer.attention_api import node_index

    s, t = node_index(graph, link["source"]), node_index(graph, link["target"])
    want = tc.head_loadings(model, transcoders, graph, [(s, t)], store=False, progress=False).top(0)
    assert [(h["layer"], h["head"], h["weight"]) for h in got["heads"]] == want
    r = client.get("/api/qk", params={"layer": 2, "head": 1, "query": 6, "key": 3})
    want_qk = tc.explain_attention(model, transcoders, PROMPT, 2, 1, 6, 3).to_json()
    assert r.status_code == 200 and r.json() == want_qk
    bad = client.get("/api/qk", params={"layer": 2, "head": 1, "query": 3, "key": 6})
    assert bad.status_code == 400 and "causal attention masks it" in bad.json()["error"]
