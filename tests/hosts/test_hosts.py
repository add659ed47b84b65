"""One core, many hosts: the same graph from HookedTransformer, TransformerBridge (with and without
compatibility mode), nnsight and a plain HF model of each family, and every edge against a
host-agnostic brute force.

Each family's model, its five hosts and their graphs are built once per module (``graphs``) and
shared by the parity and brute-force tests. The fast set has every family and every host kind;
the full family x host brute-force matrix of the first five families and float32 parity beyond
one family are ``slow``. The families of issue #17 (Gemma-3 with local and global layers, OLMo-2,
Qwen3-MoE) are checked edge by edge on every host that can hold them in the fast set.
"""

from __future__ import annotations

import sys

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_set, tiny_transcoder
from tests.hosts.hf_tiny import (
    CANNOT_HOLD,
    FAMILIES,
    HAS_HOOKED,
    NEW_FAMILIES,
    float64_softmax,
    hf_model,
    on_host,
)
from tests.hosts.reference import brute_force_rows
from tl_circuits.attribution import engine
from tl_circuits.errors import ConfigError
from tl_circuits.hosts import as_host

PROMPT = [0, 3, 17, 9, 41, 5, 22]
HOOK_INS = ("blocks.{l}.ln2.hook_normalized", "blocks.{l}.mlp.hook_in", "blocks.{l}.hook_resid_mid")
KINDS = ("hf", "nnsight", "bridge", "bridge_compat", "hooked")
TOL = {torch.float32: 1e-5, torch.float64: 1e-9}
#: The brute-force pairs in the fast set: every family once, every host kind once.
FAST_EDGES = {("gemma2", "bridge"), ("llama", "nnsight"), ("qwen2", "hf"), ("qwen3", "hooked"),
              ("gpt2", "bridge_compat")} | {(f, k) for f in NEW_FAMILIES for k in KINDS}
#: Where each family's transcoders read (the three TL input sites, spread over the families; OLMo-2
#: has no norm before its MLP, so its ``ln2`` is after the MLP and no transcoder input).
FAMILY_HOOK_IN = {f: HOOK_INS[i % 3] for i, f in enumerate(FAMILIES)} | {
    "gemma3_text": HOOK_INS[0], "olmo2": HOOK_INS[1], "qwen3_moe": HOOK_INS[2]}


@pytest.fixture(scope="module", autouse=True)
def _float64_softmax():
    # HF's eager attention and the Bridge's attention take the softmax in float32 even in a float64
    # model, HookedTransformer and our HF hosts in float64: compare like with like (see hf_tiny).
    with float64_softmax():
        yield


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """``graphs(family, dtype)``: {host kind: (model on that host, transcoders, graph)}, built once."""
    cache: dict = {}

    def build(family, dtype, **model_kw):
        key = (family, dtype, tuple(sorted(model_kw.items())))
        if key not in cache:
            model = hf_model(family, dtype=dtype, **model_kw)
            transcoders = _transcoders(FAMILY_HOOK_IN[family], dtype)
            tmp = tmp_path_factory.mktemp("hosts")  # no "llama" in the path: TL reads names
            cache[key] = {}
            for kind in (k for k in KINDS if (family, k) not in CANNOT_HOLD):
                host_model = on_host(kind, model, tmp)
                graph = tc.attribute(host_model, transcoders, PROMPT, batch_size=64, progress=False)
                cache[key][kind] = (host_model, transcoders, graph)
        return cache[key]

    return build


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


@pytest.mark.parametrize("family", FAMILIES)
def test_every_host_gives_the_same_graph_float64(family, graphs):
    built = graphs(family, torch.float64)
    ref = built["hf"][2]
    for kind in KINDS[1:]:
        if kind in built:
            _assert_same_graph(built[kind][2], ref, TOL[torch.float64])


@pytest.mark.parametrize("family", [f if f == "gemma2" else pytest.param(f, marks=pytest.mark.slow)
                                    for f in FAMILIES])
def test_every_host_gives_the_same_graph_float32(family, graphs):
    built = graphs(family, torch.float32)
    ref = built["hf"][2]
    for kind in KINDS[1:]:
        if kind in built:
            _assert_same_graph(built[kind][2], ref, TOL[torch.float32])


@pytest.mark.parametrize(("family", "kind"), [
    (f, k) if (f, k) in FAST_EDGES else pytest.param(f, k, marks=pytest.mark.slow)
    for f in FAMILIES for k in KINDS])
def test_every_edge_matches_brute_force(family, kind, graphs):
    if (family, kind) in CANNOT_HOLD:
        pytest.skip(CANNOT_HOLD[family, kind])
    host_model, transcoders, graph = graphs(family, torch.float64)[kind]
    expected = brute_force_rows(host_model, transcoders, graph)
    got = _dense(graph)[graph.rows_computed]
    scale = expected.abs().max()
    assert scale > 0 and len(graph.rows_computed) > 20
    assert float((got - expected).abs().max() / scale) <= 1e-9


def test_bridge_norms_compute_in_the_model_dtype(graphs):
    """In a plain float64 HF model (RMSNorm in float32 inside), the Bridge host still computes every
    norm site in float64, as the HF hosts do: same graph to 1e-9, and the Bridge's clean and frozen
    passes agree, so every edge matches brute force to 1e-9 (HF's own norm gives ~1e-7)."""
    built = graphs("llama", torch.float64, float64_internals=False)
    _assert_same_graph(built["bridge"][2], built["hf"][2], 1e-9)
    host_model, transcoders, graph = built["bridge"]
    expected = brute_force_rows(host_model, transcoders, graph)
    got = _dense(graph)[graph.rows_computed]
    assert float((got - expected).abs().max() / expected.abs().max()) <= 1e-9


def test_processed_bridge_norms_are_the_processed_ones(tmp_path):
    """With compatibility mode's weight processing (folded norm weights), the norms the Bridge host
    recomputes are still the Bridge's own: frozen-norm logits equal plain logits."""
    bridge = on_host("bridge", hf_model("gemma2", dtype=torch.float64), tmp_path)
    bridge.enable_compatibility_mode(disable_warnings=True)
    host = as_host(bridge)
    tokens = torch.tensor([PROMPT])
    with torch.no_grad():
        plain = host.forward(tokens)
        with host.hooks([(name, lambda x: x.detach()) for name in host.freeze_hook_names()]):
            frozen = host.forward(tokens)
    assert float((frozen - plain).abs().max() / plain.abs().max()) <= 1e-12


def test_bridge_needs_no_hooked_transformer(monkeypatch, tmp_path):
    bridge = on_host("bridge", hf_model("qwen3", dtype=torch.float64), tmp_path)
    import transformer_lens

    if HAS_HOOKED:  # TransformerLens 4 has none to take away
        monkeypatch.delattr(transformer_lens, "HookedTransformer")
    monkeypatch.setitem(sys.modules, "transformer_lens.HookedTransformer", None)
    graph = tc.attribute(bridge, tiny_set("relu"), PROMPT, progress=False)
    assert type(as_host(bridge)).__name__ == "TransformerBridgeHost"
    assert graph.n_features > 10 and _dense(graph).abs().sum() > 0


def test_freeze_sites_cover_every_norm_and_pattern(graphs):
    host = as_host(graphs("gemma2", torch.float64)["nnsight"][0])
    names = host.freeze_hook_names()
    per_layer = [f"blocks.0.{s}" for s in ("attn.hook_pattern", "ln1.hook_scale", "ln2.hook_scale",
                                           "ln1_post.hook_scale", "ln2_post.hook_scale")]
    assert set(per_layer) <= set(names) and "ln_final.hook_scale" in names
    assert len(names) == 3 * 5 + 1


@pytest.mark.parametrize("kind", ["hf", "bridge"])
def test_hooks_are_removed_even_on_exception(kind, graphs):
    host_model = graphs("llama", torch.float64)[kind][0]
    host = as_host(host_model)
    modules = list((host_model.hf_model if kind == "hf" else host_model).modules())

    def installed():  # the library's and transformers' own hooks stay; only ours must go
        return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in modules]

    tokens = torch.tensor([PROMPT])
    clean = host.forward(tokens)
    before = installed()

    def boom(x):
        raise RuntimeError("inside hook")

    for site in ("blocks.0.attn.hook_pattern", "blocks.1.ln2.hook_scale"):
        with pytest.raises(RuntimeError, match="inside hook"), host.hooks([(site, boom)]):
            host.forward(tokens)
    if kind == "hf":
        assert host_model.hf_model.config._attn_implementation == "eager"
    assert installed() == before
    assert torch.equal(host.forward(tokens), clean)


def test_unsupported_architecture_says_how_to_add_one():
    from transformers import OPTConfig, OPTForCausalLM

    model = OPTForCausalLM(OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, ffn_dim=32, word_embed_proj_dim=16))
    with pytest.raises(ConfigError, match=r"supported: .*gemma2.*llama.*sites\.py"):
        as_host(model)


@pytest.mark.parametrize("kind", KINDS)
def test_one_backward_per_read_out_gives_the_same_graph(kind, graphs, monkeypatch):
    """The reference backward, one plain pass per read-out, on every host equals the batched one
    (frozen-attention products over all read-outs at once, on the causal prefix)."""
    if ("gemma2", kind) in CANNOT_HOLD:
        pytest.skip(CANNOT_HOLD["gemma2", kind])
    host_model, transcoders, batched = graphs("gemma2", torch.float64)[kind]
    monkeypatch.setattr(engine, "REFERENCE", True)
    monkeypatch.setattr(engine, "VMAP_BELOW", 0)
    looped = tc.attribute(host_model, transcoders, PROMPT, batch_size=64, progress=False)
    _assert_same_graph(looped, batched, 1e-12)
