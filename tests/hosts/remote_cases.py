"""Attribution as one nnsight trace (``remote=...``), checked with nnsight's stand-in for NDIF.

``remote="local"`` serializes the request as for NDIF, deserializes it with every module that is
not installed on a server hidden, and runs it here. The tests also hide the editable-install
finder of tl_circuits, so the run only passes if our code travels by value with the request.

Run by ``test_nnsight_remote.py`` in a subprocess without the test suite's jaxtyping import hook:
its runtime-checking wrappers around tl_circuits functions hold weak references, which no
pickler can send.
"""

from __future__ import annotations

import sys

import pytest
import torch

import tl_circuits as tc
from tests.hosts.hf_tiny import HF_FAMILIES, float64_softmax, hf_model, on_host
from tests.hosts.reference import brute_force_rows
from tl_circuits.errors import ConfigError
from tl_circuits.hosts import hf_modules

PROMPT = [0, 3, 17, 9, 41, 5, 22]
HOOK_INS = ("blocks.{l}.ln2.hook_normalized", "blocks.{l}.mlp.hook_in", "blocks.{l}.hook_resid_mid")


@pytest.fixture(autouse=True)
def _server_like(monkeypatch):
    # Like a server: tl_circuits is importable only if the request ships it.
    monkeypatch.setattr(sys, "meta_path",
                        [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")])
    with float64_softmax():
        yield


def _setup(family, tmp_path, dtype=torch.float64):
    from tests.core.tiny import tiny_transcoder

    model = on_host("nnsight", hf_model(family, dtype=dtype), tmp_path)
    hook_in = HOOK_INS[HF_FAMILIES.index(family) % 3]
    transcoders = tc.TranscoderSet([
        tiny_transcoder(la, "jumprelu_skip", hook_in=hook_in, dtype=dtype, seed=la) for la in range(3)
    ])
    return model, transcoders


def _no_local_hooks(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a traced run must not install PyTorch hooks")

    monkeypatch.setattr(hf_modules.HFModules, "hooks", refuse)


def check_traced_run(model, transcoders, monkeypatch):
    """The traced graph (``remote="local"``, no PyTorch hooks) equals the local one and the
    brute-force edges (1e-9, float64)."""
    local = tc.attribute(model, transcoders, PROMPT, batch_size=64, progress=False)
    with monkeypatch.context() as patch:
        _no_local_hooks(patch)
        traced = tc.attribute(model, transcoders, PROMPT, batch_size=64, progress=False, remote="local")
    assert traced.n_features == local.n_features > 20
    for field in ("node_kind", "node_layer", "node_position", "node_index", "rows_computed"):
        assert torch.equal(getattr(traced, field), getattr(local, field)), field
    a, b = traced.adjacency.to_dense(), local.adjacency.to_dense()
    assert float((a - b).abs().max() / b.abs().max()) <= 1e-9
    assert [t.label for t in traced.targets] == [t.label for t in local.targets]
    expected = brute_force_rows(model, transcoders, traced)  # local hooks, independent of the trace
    got = a[traced.rows_computed]
    assert float((got - expected).abs().max() / expected.abs().max()) <= 1e-9


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_traced_graph_equals_local_graph_and_brute_force(family, tmp_path, monkeypatch):
    check_traced_run(*_setup(family, tmp_path), monkeypatch)


def test_traced_budgeted_float32_run(tmp_path):
    model, transcoders = _setup("llama", tmp_path, torch.float32)
    kw = dict(max_feature_nodes=12, batch_size=4, update_interval=1, progress=False)
    local = tc.attribute(model, transcoders, PROMPT, **kw)
    traced = tc.attribute(model, transcoders, PROMPT, remote="local", **kw)
    assert torch.equal(traced.rows_computed, local.rows_computed)
    a, b = traced.adjacency.to_dense(), local.adjacency.to_dense()
    assert float((a - b).abs().max() / b.abs().max()) <= 1e-5


def test_without_shipping_the_code_the_stand_in_fails(tmp_path, monkeypatch):
    """The check above can fail: if tl_circuits were not registered to travel by value, the
    stand-in's deserialization (like a server's) could not import it."""
    import nnsight
    from cloudpickle.cloudpickle import _PICKLE_BY_VALUE_MODULES

    model, transcoders = _setup("qwen2", tmp_path)
    monkeypatch.setattr(nnsight, "register", lambda module: None)
    monkeypatch.setattr("cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES",
                        _PICKLE_BY_VALUE_MODULES - {"tl_circuits"})
    with pytest.raises(ModuleNotFoundError, match="tl_circuits"):
        tc.attribute(model, transcoders, PROMPT, progress=False, remote="local")


def test_remote_needs_an_nnsight_model(tmp_path):
    from tests.core.tiny import tiny_model, tiny_set

    with pytest.raises(ConfigError, match="remote=.*needs an nnsight model"):
        tc.attribute(tiny_model("gpt2"), tiny_set("relu"), PROMPT, remote="local", progress=False)


def test_trace_host_refuses_pattern_hooks_it_cannot_place(tmp_path):
    from tl_circuits.hosts.nnsight_trace import TraceHost

    model, _ = _setup("gpt2", tmp_path)
    host = TraceHost(model, torch.tensor(PROMPT))
    with pytest.raises(ConfigError, match="can only be frozen"):
        with host.hooks([("blocks.0.attn.hook_pattern", lambda x: 2 * x)]):
            pass
