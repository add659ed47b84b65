"""Steering from the page (POST /api/steer): the answer equals tl_circuits.intervene and
tl_circuits.generate run directly; bad values and unknown features get a clear 4xx; a request
arriving while another runs is refused, never run at the same time on the same model."""

from __future__ import annotations

import threading

import pytest
import torch

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

import tl_circuits  # noqa: E402
from tl_circuits.viewer.server import create_app  # noqa: E402
from tl_circuits.viewer.steering import Steering  # noqa: E402


@pytest.fixture()
def client(graph_file, model, transcoders, tmp_path):
    return TestClient(create_app(graph_file, model=model, transcoders=transcoders,
                                 annotations_path=tmp_path / "a.json"), base_url="http://127.0.0.1")


def features(client):
    return [n for n in client.get("/api/graph").json()["nodes"] if n["feature_type"] == "cross layer transcoder"]


@pytest.mark.parametrize("constrained", [False, True])
def test_steer_matches_intervene_and_generate(client, graph, model, transcoders, constrained):
    a, b = features(client)[:2]
    body = {"interventions": [{"node_id": a["node_id"], "value": 6.0, "mode": "set"},
                              {"node_id": b["node_id"], "value": 0.0, "mode": "scale"}],
            "constrained": constrained, "generate": 4}
    r = client.post("/api/steer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    edits = [(int(a["layer"]), a["ctx_idx"], a["feature_index"], 6.0, "set"),
             (int(b["layer"]), b["ctx_idx"], b["feature_index"], 0.0, "scale")]
    tokens = torch.tensor(graph.tokens)
    layers = range(model.cfg.n_layers) if constrained else None
    expected = torch.softmax(tl_circuits.intervene(model, transcoders, tokens, edits,
                                                   constrained_layers=layers).logits[-1].double(), -1)
    clean = torch.softmax(model(tokens[None])[0, -1].double(), -1)
    assert [t["token_id"] for t in out["top"]] == expected.topk(10).indices.tolist()
    for t in out["top"]:
        assert t["prob"] == pytest.approx(float(expected[t["token_id"]]), abs=1e-9)
        assert t["clean_prob"] == pytest.approx(float(clean[t["token_id"]]), abs=1e-9)
    assert [t["token_id"] for t in out["clean_top"]] == clean.topk(10).indices.tolist()
    steered = tl_circuits.generate(model, transcoders, tokens, 4, interventions=edits, constrained_layers=layers)
    plain = tl_circuits.generate(model, transcoders, tokens, 4)
    host_strings = model.to_str_tokens(torch.tensor(steered[len(tokens):]))
    assert out["completion"]["steered"] == "".join(host_strings)
    assert out["completion"]["clean"] == "".join(model.to_str_tokens(torch.tensor(plain[len(tokens):])))
    assert out["positions"] == sorted({a["ctx_idx"], b["ctx_idx"]})
    assert out["n_prompt_tokens"] == len(graph.tokens) and out["n_interventions"] == 2
    assert out["constrained"] is constrained


@pytest.mark.parametrize(("change", "message"), [
    ({"value": "abc"}, "must be a finite number, got 'abc'"),
    ({"value": None}, "must be a finite number"),
    ({"value": True}, "must be a finite number"),
    ({"node_id": "0_99999_1"}, "is not a feature of this graph"),
    ({"node_id": "E_3_1"}, "is not a feature of this graph"),
    ({"mode": "add"}, "mode for"),
])
def test_bad_interventions_are_refused_clearly(client, change, message):
    f = features(client)[0]
    item = {"node_id": f["node_id"], "value": 1.0, "mode": "set", **change}
    r = client.post("/api/steer", json={"interventions": [item]})
    assert r.status_code == 422 and message in r.json()["error"], r.text


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"interventions": []}, 422, "select at least one feature"),
    ({"interventions": "x"}, 422, "non-empty list"),
    ([1, 2], 422, "JSON object"),
    ({"interventions": [{"node_id": "?", "value": 1}], "generate": -1}, 422, "not a feature"),
])
def test_bad_requests(client, body, status, message):
    r = client.post("/api/steer", json=body)
    assert r.status_code == status and message in r.json()["error"]


def test_bad_bodies_and_no_model(client, graph_file, tmp_path):
    f = features(client)[0]
    assert client.post("/api/steer", content=b"{oops", headers={"content-type": "application/json"}).status_code == 422
    assert client.post("/api/steer", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
    r = client.post("/api/steer", json={"interventions": [{"node_id": f["node_id"], "value": 1}], "generate": 999})
    assert r.status_code == 422 and "'generate'" in r.json()["error"]
    plain = TestClient(create_app(graph_file, annotations_path=tmp_path / "b.json"), base_url="http://127.0.0.1")
    assert plain.get("/api/info").json()["can_steer"] is False
    r = plain.post("/api/steer", json={"interventions": []})
    assert r.status_code == 404 and "--model" in r.json()["error"]


def test_one_request_at_a_time(client, monkeypatch):
    f = features(client)[0]
    body = {"interventions": [{"node_id": f["node_id"], "value": 2.0}], "generate": 0}
    assert client.post("/api/steer", json=body).status_code == 200  # warm the clean cache
    started, release = threading.Event(), threading.Event()
    running, most = [0], [0]
    original = Steering.probabilities

    def slow(self, *args):
        running[0] += 1
        most[0] = max(most[0], running[0])
        started.set()
        release.wait(10)
        try:
            return original(self, *args)
        finally:
            running[0] -= 1

    monkeypatch.setattr(Steering, "probabilities", slow)
    first = []
    t = threading.Thread(target=lambda: first.append(client.post("/api/steer", json=body)))
    t.start()
    assert started.wait(10)
    second = client.post("/api/steer", json=body)
    assert second.status_code == 429 and "another steering request is running" in second.json()["error"]
    release.set()
    t.join(20)
    assert first[0].status_code == 200 and most[0] == 1
    assert client.post("/api/steer", json=body).status_code == 200  # free again
