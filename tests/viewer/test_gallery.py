"""A folder of graphs: listed with prompt, top output, scores and date; a corrupt file is listed
as unreadable while the others work; an empty folder answers with a clear message and the server
stays up; graphs written while serving appear; the URL is announced only once the server listens.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from tl_circuits.errors import ConfigError  # noqa: E402
from tl_circuits.viewer.server import create_app, serve  # noqa: E402

from .conftest import OTHER_PROMPTS, PROMPT, write_gallery  # noqa: E402


@pytest.fixture()
def folder(graph, other_graphs, tmp_path):
    return write_gallery(tmp_path, (graph, *other_graphs), third="c.tlc")


def test_folder_listing_switching_and_a_corrupt_file(folder, graph, other_graphs):
    client = TestClient(create_app(folder), base_url="http://127.0.0.1")
    listing = client.get("/api/graphs").json()
    by_id = {g["id"]: g for g in listing["graphs"]}
    assert sorted(by_id) == ["a.safetensors", "b.safetensors", "broken.safetensors", "c.tlc"]
    assert "unreadable" in by_id["broken.safetensors"]["error"]
    for gid, g, prompt in zip(("a.safetensors", "b.safetensors", "c.tlc"), (graph, *other_graphs),
                              (PROMPT, *OTHER_PROMPTS)):
        item = by_id[gid]
        assert item["error"] is None and item["prompt"] == prompt and item["date"].startswith("20")
        assert item["top_output"] == g.targets[0].label
        assert item["top_prob"] == pytest.approx(g.targets[0].probability)
        data = client.get("/api/graph", params={"graph": gid}).json()
        assert data["metadata"]["prompt"] == prompt and data["id"] == gid
        assert set(data["metadata"]["scores"]) == {"replacement", "completeness"}
    # after a graph was opened, its scores are listed
    scores = {g["id"]: g["scores"] for g in client.get("/api/graphs").json()["graphs"]}
    assert 0 <= scores["a.safetensors"]["replacement"] <= 1
    bad = client.get("/api/graph", params={"graph": "broken.safetensors"})
    assert bad.status_code == 422 and "cannot be shown" in bad.json()["error"]
    assert client.get("/api/graph", params={"graph": "nope.safetensors"}).status_code == 404
    for sneaky in ("../a.safetensors", str(folder / "a.safetensors"), "/etc/passwd"):  # ids, never paths
        assert client.get("/api/graph", params={"graph": sneaky}).status_code == 404
    assert client.get("/api/graph").json()["id"] == "a.safetensors"  # default: the first readable
    # each graph keeps its own annotations beside it
    ann = {"version": 1, "labels": {"E_0_0": "bos"}, "pinnedIds": [], "supernodes": []}
    assert client.put("/api/annotations", params={"graph": "b.safetensors"}, json=ann).status_code == 200
    assert (folder / "b.annotations.json").is_file() and not (folder / "a.annotations.json").exists()
    assert client.get("/api/annotations", params={"graph": "b.safetensors"}).json() == ann
    assert client.get("/api/graphs").json()["graphs"][1]["id"] == "b.safetensors"  # sidecars are not graphs


def test_empty_folder_then_a_graph_appears(graph, tmp_path):
    client = TestClient(create_app(tmp_path), base_url="http://127.0.0.1")
    listing = client.get("/api/graphs").json()
    assert listing["graphs"] == [] and f"No graphs in {tmp_path}" in listing["message"]
    r = client.get("/api/graph")
    assert r.status_code == 404 and "No graphs in" in r.json()["error"]
    assert client.get("/").status_code == 200
    graph.save(tmp_path / "new.safetensors")
    assert [g["id"] for g in client.get("/api/graphs").json()["graphs"]] == ["new.safetensors"]
    assert client.get("/api/graph").json()["metadata"]["prompt"] == PROMPT


def test_several_files_and_bad_sources(graph_file, folder, tmp_path):
    client = TestClient(create_app([graph_file, folder / "b.safetensors"]), base_url="http://127.0.0.1")
    ids = [g["id"] for g in client.get("/api/graphs").json()["graphs"]]
    assert ids == [str(graph_file), str(folder / "b.safetensors")]
    with pytest.raises(ConfigError, match="is a folder"):
        create_app([graph_file, folder])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Stop(Exception):
    pass


def test_url_announced_only_once_listening(graph_file, tmp_path):
    port = free_port()
    seen = []

    def announce(url):
        assert url == f"http://127.0.0.1:{port}/"
        with socket.create_connection(("127.0.0.1", port), timeout=5):  # already listening
            seen.append(url)
        raise _Stop  # and stop the server

    with pytest.raises(_Stop):
        serve(graph_file, port=port, annotations_path=tmp_path / "a.json", announce=announce)
    assert seen == [f"http://127.0.0.1:{port}/"]
    # a port already in use: a clear error, and no URL announced
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        called = []
        with pytest.raises(ConfigError, match="could not listen.*--port"):
            serve(graph_file, port=busy.getsockname()[1], annotations_path=tmp_path / "a.json",
                  announce=called.append)
        assert called == []


def test_graph_written_while_serving_is_listed(graph, tmp_path):
    """The listing rescans the folder on every request (no restart), also from another thread."""
    client = TestClient(create_app(tmp_path), base_url="http://127.0.0.1")
    writer = threading.Thread(target=lambda: graph.save(tmp_path / "late.safetensors"))
    writer.start()
    writer.join()
    deadline = time.time() + 5
    while time.time() < deadline and not client.get("/api/graphs").json()["graphs"]:
        time.sleep(0.05)
    assert [g["id"] for g in client.get("/api/graphs").json()["graphs"]] == ["late.safetensors"]
