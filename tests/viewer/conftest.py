"""Fixtures for the viewer tests: one tiny attribution graph and its dashboards, built once."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time

import pytest
import torch

import tl_circuits
from tests.core.tiny import VOCAB, tiny_model, tiny_set

PROMPT = "w1 w2 Paris w3 London w4"
EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="session")
def model():
    return tiny_model("gpt2", tokenizer=True)


@pytest.fixture(scope="session")
def transcoders():
    return tiny_set("relu")


@pytest.fixture(scope="session")
def texts():
    gen = torch.Generator().manual_seed(0)
    words = VOCAB[2:]
    return [" ".join(words[int(i)] for i in torch.randint(0, len(words), (10,), generator=gen))
            for _ in range(30)]


@pytest.fixture(scope="session")
def graph(model, transcoders):
    return tl_circuits.attribute(model, transcoders, PROMPT, progress=False)


@pytest.fixture(scope="session")
def dashboards(model, transcoders, texts, tmp_path_factory):
    out = tmp_path_factory.mktemp("dash") / "dash"
    return tl_circuits.build_dashboards(model, transcoders, texts, out_path=out, n_top=5,
                                        n_reservoir=8, n_quantiles=2, context=3, progress=False)


@pytest.fixture(scope="session")
def browser():
    from .browser import make_browser

    driver = make_browser()
    yield driver
    driver.quit()


#: Prompts of the gallery's other graphs (related to PROMPT, so features are shared).
OTHER_PROMPTS = ("w1 w2 London w3 Paris w4", "w5 Paris w6 w7")


@pytest.fixture(scope="session")
def other_graphs(model, transcoders):
    return [tl_circuits.attribute(model, transcoders, p, progress=False) for p in OTHER_PROMPTS]


@pytest.fixture(scope="session")
def graph_file(graph, tmp_path_factory):
    path = tmp_path_factory.mktemp("graph") / "paris.tlc"
    graph.save(path)
    return path


@pytest.fixture(scope="session")
def evil_graph_file(graph, tmp_path_factory):
    """The same graph whose second token (and prompt) is an HTML injection attempt."""
    tokens = list(graph.str_tokens)
    tokens[1] = EVIL
    evil = dataclasses.replace(graph, str_tokens=tokens, prompt=f"{EVIL} w2 Paris w3 London w4")
    path = tmp_path_factory.mktemp("evil") / "evil.tlc"
    evil.save(path)
    return path


@contextlib.contextmanager
def serve_in_thread(app):
    """Run ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields the port."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 20 s"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def write_gallery(tmp_path, graphs, third: str = "c.safetensors"):
    """A folder of three good graphs (``a.safetensors``, ``b.safetensors``, ``third``) and a corrupt
    ``broken.safetensors``: what the gallery tests serve."""
    for name, g in zip(("a.safetensors", "b.safetensors", third), graphs, strict=True):
        g.save(tmp_path / name)
    (tmp_path / "broken.safetensors").write_bytes(b"\x00not a graph at all")
    return tmp_path
