"""Attribution as one nnsight trace for the families of issue #17 and for automatic sites.

Like ``remote_cases.py`` (run the same way, by ``test_nnsight_remote.py``, in a fresh process
without the jaxtyping import hook, with tl_circuits importable only if the request ships it):
Gemma-3 (local and global layers, q/k norms), OLMo-2 (post-only norms) and Qwen3-MoE through
their table rows, and StarCoder2 through automatic sites (the row found and checked locally
travels with the request): the traced graph equals the local one and the brute-force edges.
Phi-3's automatic row has no separate query/key projections to hold, so its traced run is
refused with an error saying so.
"""

from __future__ import annotations

import sys

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_transcoder
from tests.hosts.hf_tiny import float64_softmax, hf_model, on_host
from tests.hosts.reference import brute_force_rows
from tl_circuits.errors import ConfigError
from tl_circuits.hosts import hf_modules

PROMPT = [0, 3, 17, 9, 41, 5, 22]
HOOK_IN = {"gemma3_text": "blocks.{l}.ln2.hook_normalized", "olmo2": "blocks.{l}.mlp.hook_in",
           "qwen3_moe": "blocks.{l}.hook_resid_mid", "starcoder2": "blocks.{l}.ln2.hook_normalized",
           "phi3": "blocks.{l}.mlp.hook_in"}


@pytest.fixture(autouse=True)
def _server_like(monkeypatch):
    monkeypatch.setattr(sys, "meta_path",
                        [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")])
    with float64_softmax():
        yield


def _setup(family, tmp_path):
    model = on_host("nnsight", hf_model(family), tmp_path)
    transcoders = tc.TranscoderSet([
        tiny_transcoder(la, "jumprelu_skip", hook_in=HOOK_IN[family], seed=la) for la in range(3)])
    return model, transcoders


@pytest.mark.parametrize("family", ["gemma3_text", "olmo2", "qwen3_moe", "starcoder2"])
def test_traced_graph_equals_local_graph_and_brute_force(family, tmp_path, monkeypatch):
    model, transcoders = _setup(family, tmp_path)
    local = tc.attribute(model, transcoders, PROMPT, batch_size=64, progress=False)
    with monkeypatch.context() as patch:
        patch.setattr(hf_modules.HFModules, "hooks", lambda *a, **k: pytest.fail("local hooks"))
        traced = tc.attribute(model, transcoders, PROMPT, batch_size=64, progress=False, remote="local")
    assert traced.n_features == local.n_features > 20
    for field in ("node_kind", "node_layer", "node_position", "node_index", "rows_computed"):
        assert torch.equal(getattr(traced, field), getattr(local, field)), field
    a, b = traced.adjacency.to_dense(), local.adjacency.to_dense()
    assert float((a - b).abs().max() / b.abs().max()) <= 1e-9
    expected = brute_force_rows(model, transcoders, traced)
    got = a[traced.rows_computed]
    assert float((got - expected).abs().max() / expected.abs().max()) <= 1e-9


def test_traced_run_without_query_key_projections_is_refused(tmp_path):
    model, transcoders = _setup("phi3", tmp_path)
    local = tc.attribute(model, transcoders, PROMPT, batch_size=64, progress=False)
    assert local.n_features > 20
    with pytest.raises(ConfigError, match=r"names no query and key projections \(qk\).*cannot freeze "
                                          r"its attention pattern.*ARCH_SITES, or run locally"):
        tc.attribute(model, transcoders, PROMPT, batch_size=64, progress=False, remote="local")
