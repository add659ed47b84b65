"""Shared fixtures: tiny random models and transcoders, built offline in milliseconds."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Nothing a test runs may install packages into the environment under test (TransformerLens'
# Bridge runs `pip install torchvision` when a multimodal processor fails to load): pip without an
# index or configured wheel folders, and uv offline, fail fast instead.
os.environ["PIP_NO_INDEX"] = "1"
os.environ["PIP_CONFIG_FILE"] = os.devnull
os.environ["PIP_FIND_LINKS"] = ""
os.environ["UV_OFFLINE"] = "1"

import pytest  # noqa: E402  (after the offline switches)
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per xdist worker: the workers already fill the cores, and tiny models gain
    # nothing from intra-op threads (oversubscribed, the host tests ran about 8x slower).
    torch.set_num_threads(1)


@pytest.fixture(params=["batched", "grouped", pytest.param("vmapped", marks=pytest.mark.slow), "looped"])
def backward(request, monkeypatch):
    """Every backward strategy of the row engine: the batched one (frozen patterns' products with
    the read-outs as columns, on the chunk's causal prefix, in key blocks of 2 positions here so
    that tiny prompts cross several blocks, and on forward passes of prefixes in steps of 2 or 3
    positions, ``engine.PREFIX_STEP``), with chunks in order or grouped by layer
    (``engine.GROUP_FROM``), and the reference ones (``engine.REFERENCE``): one
    pass vmapped over a chunk of read-outs, and one pass per read-out (``engine.VMAP_BELOW``)."""
    from tl_circuits.attribution import engine
    from tl_circuits.replacement import frozen_attention

    if request.param in ("batched", "grouped"):
        monkeypatch.setattr(frozen_attention, "_BLOCK", 2)
        monkeypatch.setattr(engine, "PREFIX_STEP", 2 if request.param == "batched" else 3)
    if request.param == "grouped":  # chunks of one layer, as long prompts get them
        monkeypatch.setattr(engine, "GROUP_FROM", 0)
    elif request.param != "batched":
        monkeypatch.setattr(engine, "REFERENCE", True)
    if request.param == "looped":
        monkeypatch.setattr(engine, "VMAP_BELOW", 0)
    return request.param
