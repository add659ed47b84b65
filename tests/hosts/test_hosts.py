"""One core, many hosts: the same graph from HookedTransformer, TransformerBridge, nnsight and a
plain HF model of each family, and every edge against a host-agnostic brute force."""

from __future__ import annotations

import sys

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_set, tiny_transcoder
from tests.hosts.hf_tiny import HF_FAMILIES, hf_model, on_host
from tests.hosts.reference import brute_force_rows
from tl_circuits.errors import ConfigError
from tl_circuits.hosts import as_host

PROMPT = [0, 3, 17, 9, 41, 5, 22]
HOOK_INS = ("blocks.{l}.ln2.hook_normalized", "blocks.{l}.mlp.hook_in", "blocks.{l}.hook_resid_mid")
#: Families TL 3.9 can build as a HookedTransformer from a HF model offline.
HOOKED_FAMILIES = ("llama", "qwen2", "qwen3")
TOL = {torch.float32: 1e-5, torch.float64: 1e-9}


def _transcoders(hook_in, dtype):
    return tc.TranscoderSet([
        tiny_transcoder(la, "jumprelu_skip", hook_in=hook_in, dtype=dtype, seed=la) for la in range(3)
    ])


def _dense(graph):
    return graph.adjacency.to_dense()


def _assert_same_graph(got, ref, tol):
    assert got.n_nodes == ref.n_nodes and got.n_features == ref.n_features > 20
    for field in ("node_kind", "node_layer", "node_position", "node_index"):
        assert torch.equal(getattr(got, field), getattr(ref, field)), field
    assert torch.equal(got.rows_computed, ref.rows_computed)
    a, b = _dense(got), _dense(ref)
    err = float((a - b).abs().max() / b.abs().max())
    assert err <= tol, f"max relative adjacency difference {err:.3g} > {tol}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("family", HF_FAMILIES)
def test_hosts_wrapping_one_hf_model_give_the_same_graph(family, dtype, tmp_path):
    model = hf_model(family, dtype=dtype)
    hook_in = HOOK_INS[HF_FAMILIES.index(family) % 3]
    transcoders = _transcoders(hook_in, dtype)
    graphs = {kind: tc.attribute(on_host(kind, model, tmp_path), transcoders, PROMPT, batch_size=8,
                                 progress=False)
              for kind in ("hf", "nnsight", "bridge", "bridge_compat")}
    _assert_same_graph(graphs["nnsight"], graphs["hf"], TOL[dtype])
    # The Bridge runs HF's own norms, which compute in float32 even in a float64 model (the HF
    # hosts compute them in the model's dtype), so in float64 they agree to ~1e-7, not 1e-9.
    for kind in ("bridge", "bridge_compat"):
        _assert_same_graph(graphs[kind], graphs["hf"], max(TOL[dtype], 1e-6))
        _assert_same_graph(graphs[kind], graphs["bridge"], TOL[dtype])


@pytest.mark.parametrize("family", HOOKED_FAMILIES)
def test_hooked_transformer_matches_the_hf_hosts(family, tmp_path):
    """HF computes RMSNorm and rotary tables in float32 even in a float64 model, HookedTransformer in
    float64: the models agree to ~1e-7, so the graphs are compared at float32 tolerance."""
    model = hf_model(family, dtype=torch.float64, seed=3)
    transcoders = _transcoders(HOOK_INS[HOOKED_FAMILIES.index(family)], torch.float64)
    ref = tc.attribute(on_host("hooked", model, tmp_path), transcoders, PROMPT, progress=False)
    for kind in ("bridge", "nnsight"):
        got = tc.attribute(on_host(kind, model, tmp_path), transcoders, PROMPT, progress=False)
        _assert_same_graph(got, ref, 1e-5)


@pytest.mark.parametrize("kind", ["bridge", "bridge_compat", "nnsight"])
@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_every_edge_matches_brute_force(family, kind, tmp_path):
    model = hf_model(family, dtype=torch.float64, seed=5)
    transcoders = _transcoders(HOOK_INS[("llama", "gpt2", "gemma2").index(family)], torch.float64)
    host_model = on_host(kind, model, tmp_path)
    graph = tc.attribute(host_model, transcoders, PROMPT, batch_size=16, progress=False)
    expected = brute_force_rows(host_model, transcoders, graph)
    got = _dense(graph)[graph.rows_computed]
    scale = expected.abs().max()
    assert scale > 0
    assert float((got - expected).abs().max() / scale) <= 1e-9


def test_bridge_needs_no_hooked_transformer(monkeypatch, tmp_path):
    bridge = on_host("bridge", hf_model("qwen3", dtype=torch.float64), tmp_path)
    import transformer_lens

    monkeypatch.delattr(transformer_lens, "HookedTransformer")
    monkeypatch.setitem(sys.modules, "transformer_lens.HookedTransformer", None)
    graph = tc.attribute(bridge, tiny_set("relu"), PROMPT, progress=False)
    assert type(as_host(bridge)).__name__ == "TransformerBridgeHost"
    assert graph.n_features > 10 and _dense(graph).abs().sum() > 0


def test_freeze_sites_cover_every_norm_and_pattern(tmp_path):
    host = as_host(on_host("nnsight", hf_model("gemma2"), tmp_path))
    names = host.freeze_hook_names()
    per_layer = [f"blocks.0.{s}" for s in ("attn.hook_pattern", "ln1.hook_scale", "ln2.hook_scale",
                                           "ln1_post.hook_scale", "ln2_post.hook_scale")]
    assert set(per_layer) <= set(names) and "ln_final.hook_scale" in names
    assert len(names) == 3 * 5 + 1


def test_hooks_are_removed_even_on_exception(tmp_path):
    model = hf_model("llama")
    host = as_host(on_host("hf", model, tmp_path))
    tokens = torch.tensor([PROMPT])
    clean = host.forward(tokens)

    def boom(x):
        raise RuntimeError("inside hook")

    with pytest.raises(RuntimeError), host.hooks([("blocks.0.attn.hook_pattern", boom)]):
        host.forward(tokens)
    assert model.config._attn_implementation == "eager"
    assert torch.equal(host.forward(tokens), clean)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_unsupported_architecture_says_how_to_add_one():
    from transformers import OPTConfig, OPTForCausalLM

    model = OPTForCausalLM(OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, ffn_dim=32, word_embed_proj_dim=16))
    with pytest.raises(ConfigError, match=r"supported: .*gemma2.*llama.*sites\.py"):
        as_host(model)
