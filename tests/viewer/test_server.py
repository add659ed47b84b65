"""Server safety: localhost only, no files outside static/, refused saves leave annotations intact."""

from __future__ import annotations

import hashlib
import http.client
import json
import re

import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from tl_circuits.viewer.server import MAX_SAVE_BYTES, STATIC_DIR, create_app, sidecar_path  # noqa: E402

from .conftest import EVIL, serve_in_thread  # noqa: E402

GOOD = {"version": 1, "labels": {"E_3_1": "first word"}, "pinnedIds": ["E_3_1"],
        "supernodes": [["start", "E_3_1", "E_0_0"]]}


@pytest.fixture()
def graph_copy(graph_file, tmp_path):
    path = tmp_path / graph_file.name
    path.write_bytes(graph_file.read_bytes())
    return path


@pytest.fixture()
def client(graph_copy, dashboards):
    return TestClient(create_app(graph_copy, dashboards=dashboards), base_url="http://127.0.0.1")


def test_pages_and_api(client, graph_copy):
    r = client.get("/")
    assert r.status_code == 200 and "default-src 'none'" in r.headers["content-security-policy"]
    assert '<script src="/static/app.js">' in r.text and "https://" not in r.text
    d3 = client.get("/static/vendor/d3.min.js")
    assert d3.text.startswith("// https://d3js.org v7")
    # the vendored file is the npm package's, as recorded beside it (static/vendor/README.md)
    recorded = (STATIC_DIR / "vendor" / "README.md").read_text()
    assert hashlib.sha256(d3.content).hexdigest() in recorded and "| `d3` | 7.9.2 | ISC" in recorded
    for script in re.findall(r'<script src="(/static/[^"]+)"', r.text):  # every script is served
        assert client.get(script).status_code == 200, script
    g = client.get("/api/graph").json()
    assert g["metadata"]["slug"] == "paris"
    f = next(n for n in g["nodes"] if n["feature_type"] == "cross layer transcoder")
    d = client.get(f"/api/feature/{f['layer']}/{f['feature_index']}").json()
    assert d["index"] == f["feature_index"] and d["examples_quantiles"][0]["examples"]
    assert client.get("/api/feature/9/0").status_code == 404
    assert client.get("/api/info").json()["annotations_file"] == "paris.annotations.json"
    assert client.get("/api/annotations").json()["supernodes"] == []
    assert client.get("/", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding


def test_save_reload_and_refusals(client, graph_copy):
    side = sidecar_path(graph_copy)
    assert client.put("/api/annotations", json=GOOD).status_code == 200
    saved = side.read_bytes()
    assert json.loads(saved) == GOOD and client.get("/api/annotations").json() == GOOD
    bad_bodies = [
        (b"{not json", 422),
        (json.dumps({**GOOD, "supernodes": [["lonely"]]}).encode(), 422),
        (json.dumps({**GOOD, "extra": 1}).encode(), 422),
        (b"\xff\xfe", 422),
    ]
    for body, code in bad_bodies:
        r = client.put("/api/annotations", content=body, headers={"content-type": "application/json"})
        assert r.status_code == code, body
        assert side.read_bytes() == saved
    r = client.post("/api/annotations", content=json.dumps(GOOD), headers={"content-type": "text/plain"})
    assert r.status_code == 415
    huge = b'{"version": 1, "notes": "' + b"x" * (100 * 1024 * 1024) + b'"}'
    r = client.put("/api/annotations", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413
    # no Content-Length (chunked): the stream is cut at the limit
    chunks = (b"x" * (1024 * 1024) for _ in range(MAX_SAVE_BYTES // (1024 * 1024) + 2))
    r = client.put("/api/annotations", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert side.read_bytes() == saved
    assert not [p for p in side.parent.iterdir() if ".tmp-" in p.name]
    exported = client.get("/api/export.json").json()
    assert exported["qParams"]["supernodes"] == GOOD["supernodes"]
    assert next(n for n in exported["nodes"] if n["node_id"] == "E_3_1")["clerp"] == "first word"


def test_evil_token_is_data_not_markup(evil_graph_file, tmp_path):
    client = TestClient(create_app(evil_graph_file, annotations_path=tmp_path / "a.json"),
                        base_url="http://127.0.0.1")
    g = client.get("/api/graph")
    assert g.headers["content-type"] == "application/json" and g.json()["metadata"]["prompt_tokens"][1] == EVIL
    html = client.get("/api/export.html").text
    assert EVIL not in html and "<img" not in html
    data = html.split('<script type="application/json" id="tlc-data">')[1].split("</script>")[0]
    assert json.loads(data)["graph"]["metadata"]["prompt_tokens"][1] == EVIL


@pytest.fixture()
def live_server(graph_copy, dashboards):
    with serve_in_thread(create_app(graph_copy, dashboards=dashboards)) as port:
        yield port


@pytest.mark.parametrize("path", [
    "/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fserver.py",
    "/static/%2e%2e%2f%2e%2e%2f_atomic.py", "/../../etc/passwd", "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/static//etc/passwd",
    "/static/..\\server.py",
])
def test_path_traversal_refused(live_server, path):
    """Raw requests (no client-side normalisation of dot segments) get nothing outside static/."""
    conn = http.client.HTTPConnection("127.0.0.1", live_server, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    assert r.status in (400, 404), (path, r.status)
    assert b"root:" not in body and b"import" not in body


def test_intervention_endpoint_matches_intervene(graph, graph_copy, model, transcoders):
    import torch

    import tl_circuits

    if not hasattr(tl_circuits, "intervene"):
        pytest.skip("tl_circuits.intervene is not available in this checkout")
    plain = TestClient(create_app(graph_copy), base_url="http://127.0.0.1")
    assert plain.get("/api/info").json()["can_intervene"] is False
    assert plain.post("/api/intervene", json={"settings": []}).status_code == 404
    client = TestClient(create_app(graph_copy, model=model, transcoders=transcoders), base_url="http://127.0.0.1")
    assert client.get("/api/info").json()["can_intervene"] is True
    node = next(n for n in client.get("/api/graph").json()["nodes"] if n["feature_type"] == "cross layer transcoder")
    setting = {"layer": int(node["layer"]), "position": node["ctx_idx"], "feature": node["feature_index"], "value": 5.0}
    top = client.post("/api/intervene", json={"settings": [setting]}).json()["top"]
    tokens = torch.tensor(graph.tokens)
    expected = torch.softmax(tl_circuits.intervene(model, transcoders, tokens, [tuple(setting.values())]).logits[-1], -1)
    clean = torch.softmax(model(tokens[None])[0, -1].double(), -1)
    assert [t["token_id"] for t in top] == expected.topk(10).indices.tolist()
    for t in top:
        assert t["prob"] == pytest.approx(float(expected[t["token_id"]]), abs=1e-9)
        assert t["clean_prob"] == pytest.approx(float(clean[t["token_id"]]), abs=1e-9)
    assert max(abs(t["prob"] - t["clean_prob"]) for t in top) > 1e-4  # the edit changed something
    bad = client.post("/api/intervene", json={"settings": [{**setting, "layer": 99}]})
    assert bad.status_code == 422


def test_exported_json_and_graph_supernodes_seed_the_annotations(graph, tmp_path):
    import copy

    from tl_circuits.viewer import export_graph

    g = copy.deepcopy(graph)
    feats = g.indices("feature")[:2].tolist()
    if hasattr(g, "add_supernode"):  # graph-side supernodes (another module) travel to the viewer
        g.add_supernode("from graph", feats)
    ann = {"labels": {}, "pinnedIds": ["E_0_0"], "supernodes": [["tokens", "E_0_0", "E_3_1"]]}
    path = export_graph(g, tmp_path / "g.json", node_threshold=1.0, edge_threshold=1.0, annotations=ann)
    client = TestClient(create_app(path), base_url="http://127.0.0.1")
    got = client.get("/api/annotations").json()
    assert got["pinnedIds"] == ["E_0_0"] and got["supernodes"][0] == ["tokens", "E_0_0", "E_3_1"]
    if hasattr(g, "add_supernode"):
        ids = [f"{n.layer}_{n.index}_{n.position}" for n in (g.nodes[i] for i in feats)]
        assert got["supernodes"][1] == ["from graph", *ids]
    assert not sidecar_path(path).exists()
