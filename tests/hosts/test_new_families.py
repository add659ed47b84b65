"""Gemma-3, OLMo-2 and Qwen3-MoE on every host: what each brings that the others lack.

Parity and brute force for these families are in ``test_hosts.py`` (``FAMILIES``); here, the
pieces they depend on: Gemma-3's local layers really attend within their window on every host,
its q/k norms and post-norms are freeze sites, OLMo-2's post-only norms carry TL's names, the
MoE block is the MLP site, the numeric checks pass on every host (no false alarm), and the text
tower of the multimodal Gemma-3 gives the text model's graph.
"""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_transcoder
from tests.hosts.hf_tiny import (
    CANNOT_HOLD,
    FAMILIES,
    GEMMA3_WINDOW,
    float64_softmax,
    gemma3_multimodal,
    hf_model,
    on_host,
)
from tl_circuits.hosts import as_host
from tl_circuits.hosts.checks import check_host

PROMPT = [0, 3, 17, 9, 41, 5, 22]
KINDS = ("hf", "nnsight", "bridge", "bridge_compat", "hooked")


@pytest.fixture(scope="module", autouse=True)
def _float64_softmax():
    with float64_softmax():
        yield


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """``hosts(family)``: {host kind: host}, for the float64 test model of ``family``, built once."""
    cache: dict = {}

    def build(family):
        if family not in cache:
            model = hf_model(family)
            tmp = tmp_path_factory.mktemp("hosts")
            cache[family] = {k: as_host(on_host(k, model, tmp)) for k in KINDS
                             if (family, k) not in CANNOT_HOLD}
        return cache[family]

    return build


def _values(host, names):
    """``{site: value}`` of a plain forward pass on ``host``."""
    seen = {}

    def grab(name):
        return lambda x: seen.__setitem__(name, x)

    with torch.no_grad(), host.hooks([(n, grab(n)) for n in names]):
        host.forward(torch.tensor([PROMPT]))
    return seen


def _patterns(host, layers):
    seen = _values(host, [f"blocks.{la}.attn.hook_pattern" for la in layers])
    return {la: seen[f"blocks.{la}.attn.hook_pattern"] for la in layers}


@pytest.mark.parametrize("kind", KINDS)
def test_gemma3_local_layers_attend_within_their_window(kind, hosts):
    """Layers 0 and 2 are sliding-window (3 keys), layer 1 global: on every host, the last query
    of a local layer gives exactly zero weight to keys 3 or more positions back, a global one not."""
    pattern = _patterns(hosts("gemma3_text")[kind], (0, 1, 2))
    last = len(PROMPT) - 1
    for layer in (0, 2):
        p = pattern[layer][0, :, last]
        assert torch.all(p[:, : last - GEMMA3_WINDOW + 1] == 0), layer
        assert torch.allclose(p[:, last - GEMMA3_WINDOW + 1:].sum(-1), torch.ones(p.shape[0], dtype=p.dtype))
    assert float(pattern[1][0, :, last, 0].min()) > 1e-3


def test_gemma3_freeze_sites_include_q_k_norms_and_post_norms(hosts):
    built = hosts("gemma3_text")
    per_layer = {"attn.hook_pattern", "ln1.hook_scale", "attn.q_norm.hook_scale", "attn.k_norm.hook_scale",
                 "ln1_post.hook_scale", "ln2.hook_scale", "ln2_post.hook_scale"}
    expected = {f"blocks.{la}.{s}" for la in range(3) for s in per_layer} | {"ln_final.hook_scale"}
    for kind in ("hf", "nnsight"):
        assert set(built[kind].freeze_hook_names()) == expected
    for kind in ("bridge", "hooked"):  # TransformerLens names the same sites the same way
        assert expected <= set(built[kind].freeze_hook_names())


def test_olmo2_post_norms_have_transformerlens_names(hosts):
    """OLMo-2 has norms only after its sublayers; TL calls them ln1 and ln2 (not ln*_post), and
    the MLP's output site is after the post-feedforward norm, as on HookedTransformer."""
    built = hosts("olmo2")
    hf = built["hf"]
    expected = {f"blocks.{la}.{s}" for la in range(3) for s in (
        "attn.hook_pattern", "ln1.hook_scale", "ln2.hook_scale", "attn.q_norm.hook_scale",
        "attn.k_norm.hook_scale")} | {"ln_final.hook_scale"}
    assert set(hf.freeze_hook_names()) == expected
    assert set(built["hooked"].freeze_hook_names()) == expected
    assert hf.sites.module_path("blocks.0.ln1.hook_scale") == "model.layers.0.post_attention_layernorm"
    assert hf.sites.module_path("blocks.0.hook_mlp_out") == "model.layers.0.post_feedforward_layernorm"
    assert hf.sites.module_path("blocks.0.hook_resid_mid") == "model.layers.0.mlp"
    names = ("blocks.1.hook_mlp_out", "blocks.1.mlp.hook_in", "blocks.2.hook_resid_pre")
    values = {kind: _values(host, names) for kind, host in built.items()}
    for kind in built:
        for n in names:
            assert torch.allclose(values[kind][n], values["hf"][n], rtol=0, atol=1e-12), (kind, n)


def test_qwen3_moe_mlp_site_is_the_whole_sparse_block(hosts):
    """The MLP site of a mixture-of-experts layer is the whole block (router included): its output
    site is what the block adds to the residual stream, on every host that holds the model."""
    built = hosts("qwen3_moe")
    hf = built["hf"]
    block = hf.hf_model.model.layers[0].mlp
    assert type(block).__name__ == "Qwen3MoeSparseMoeBlock"
    assert hf.sites.module_path("blocks.0.hook_mlp_out") == "model.layers.0.mlp"
    seen = {}
    with torch.no_grad(), hf.hooks([("blocks.0.mlp.hook_in", lambda x: seen.__setitem__("in", x)),
                                    ("blocks.0.hook_mlp_out", lambda x: seen.__setitem__("out", x))]):
        hf.forward(torch.tensor([PROMPT]))
        assert torch.equal(block(seen["in"]), seen["out"])
    out = {kind: _values(host, ["blocks.0.hook_mlp_out"])["blocks.0.hook_mlp_out"]
           for kind, host in built.items()}
    for kind in built:
        assert torch.allclose(out[kind], out["hf"], rtol=0, atol=1e-12), kind


@pytest.mark.parametrize("family", FAMILIES)
def test_checks_pass_on_every_host(family, hosts):
    """The numeric checks of automatic sites raise no false alarm on any family or host:
    (a) logits reproduced to <= 1e-12 (float64 test models), (b) and (c) at float64 rounding."""
    for kind, host in hosts(family).items():
        report = check_host(host)
        assert report.passed, (kind, report.failures)
        assert report.logits_error <= 1e-12, kind
        assert report.nonlinearity <= 1e-12 and report.gradient_change <= 1e-12, kind


def test_gemma3_text_tower_of_the_multimodal_model(hosts, tmp_path):
    """``Gemma3ForConditionalGeneration`` (model type ``gemma3``) with the text model's weights in
    its text tower gives the text model's graph, on the HF, nnsight and Bridge hosts."""
    text = hf_model("gemma3_text")
    multimodal = gemma3_multimodal(text)
    transcoders = tc.TranscoderSet([
        tiny_transcoder(la, "jumprelu_skip", hook_in="blocks.{l}.ln2.hook_normalized", seed=la)
        for la in range(3)])
    ref = tc.attribute(on_host("hf", text, tmp_path), transcoders, PROMPT, batch_size=64, progress=False)
    for kind in ("hf", "nnsight", "bridge"):
        got = tc.attribute(on_host(kind, multimodal, tmp_path), transcoders, PROMPT, batch_size=64,
                           progress=False)
        assert got.n_features == ref.n_features > 20 and torch.equal(got.rows_computed, ref.rows_computed)
        a, b = got.adjacency.to_dense(), ref.adjacency.to_dense()
        assert float((a - b).abs().max() / b.abs().max()) <= 1e-9, kind
