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

import pytest

import tl_circuits as tc
from tests.core.tiny import tiny_transcoder
from tests.hosts.hf_tiny import hf_model, on_host
from tests.hosts.remote_cases import _server_like, check_traced_run  # noqa: F401 (an autouse fixture)
from tl_circuits.errors import ConfigError

PROMPT = [0, 3, 17, 9, 41, 5, 22]
HOOK_IN = {"gemma3_text": "blocks.{l}.ln2.hook_normalized", "olmo2": "blocks.{l}.mlp.hook_in",
           "qwen3_moe": "blocks.{l}.hook_resid_mid", "starcoder2": "blocks.{l}.ln2.hook_normalized",
           "phi3": "blocks.{l}.mlp.hook_in"}


def _setup(family, tmp_path):
    model = on_host("nnsight", hf_model(family), tmp_path)
    transcoders = tc.TranscoderSet([
        tiny_transcoder(la, "jumprelu_skip", hook_in=HOOK_IN[family], seed=la) for la in range(3)])
    return model, transcoders


@pytest.mark.parametrize("family", ["gemma3_text", "olmo2", "qwen3_moe", "starcoder2"])
def test_traced_graph_equals_local_graph_and_brute_force(family, tmp_path, monkeypatch):
    check_traced_run(*_setup(family, tmp_path), monkeypatch)


def test_traced_run_without_query_key_projections_is_refused(tmp_path):
    model, transcoders = _setup("phi3", tmp_path)
    local = tc.attribute(model, transcoders, PROMPT, batch_size=64, progress=False)
    assert local.n_features > 20
    with pytest.raises(ConfigError, match=r"names no query and key projections \(qk\).*cannot freeze "
                                          r"its attention pattern.*ARCH_SITES, or run locally"):
        tc.attribute(model, transcoders, PROMPT, batch_size=64, progress=False, remote="local")
