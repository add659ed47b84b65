"""The spliced replacement model reproduces the model exactly, and leaves no hook behind."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import FAMILIES, tiny_model, tiny_set
from tl_circuits.hosts import as_host
from tl_circuits.replacement import run_replacement


def _n_hooks(model) -> int:
    return sum(len(hp._forward_hooks) + len(hp._backward_hooks) for hp in model.hook_dict.values())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("arch", ["relu", "jumprelu_skip", "topk_skip"])
def test_spliced_model_reproduces_logits_float32(family, arch):
    model = tiny_model(family, dtype=torch.float32, seed=11)
    transcoders = tiny_set(arch, dtype=torch.float32)
    tokens = torch.tensor([4, 9, 33, 2, 17, 8, 21])
    expected = model(tokens[None])
    state = run_replacement(as_host(model), transcoders, tokens, batch=2)
    diff = (state.logits - expected).abs().max()
    assert float(diff) <= 1e-5
    # The splice is real: every layer has features and an error term, and the error is what the
    # transcoder misses (not zero, not everything).
    for layer in range(3):
        t = transcoders[layer]
        recon = t(state.x_in[layer][0].detach())
        assert torch.allclose(state.errors[layer] + recon, state.mlp_out[layer], atol=1e-5)
        assert 0 < float(state.errors[layer].norm()) < float(state.mlp_out[layer].norm() + recon.norm())
    assert _n_hooks(model) == 0


def test_hooks_are_removed_even_on_an_exception(monkeypatch):
    model = tiny_model("llama")
    transcoders = tiny_set("relu")

    def broken(layer, x):
        raise RuntimeError("transcoder exploded")

    monkeypatch.setattr(transcoders, "encode", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        tc.attribute(model, transcoders, [1, 2, 3], progress=False)
    assert _n_hooks(model) == 0
    # The model still runs as before.
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]]))).all()


def test_attribute_accepts_sae_lens_transcoders():
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.transcoder import JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig

    model = tiny_model("gpt2")
    ours = tiny_set("jumprelu_skip")
    theirs = []
    for t in ours:
        cfg = JumpReLUSkipTranscoderConfig(
            d_in=16, d_sae=24, d_out=16, apply_b_dec_to_input=False, dtype="float64",
            metadata=SAEMetadata(hook_name=t.hook_name, hook_name_out=t.hook_name_out),
        )
        sae = JumpReLUSkipTranscoder(cfg)
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec", "b_dec", "W_skip", "threshold"):
                getattr(sae, name).copy_(getattr(t, name))
        theirs.append(sae)
    a = tc.attribute(model, ours, [5, 6, 7, 8], progress=False)
    b = tc.attribute(model, theirs, [5, 6, 7, 8], progress=False)
    assert torch.equal(a.node_index, b.node_index)
    assert torch.allclose(a.adjacency.to_dense(), b.adjacency.to_dense(), rtol=1e-12, atol=1e-14)


def test_activations_at_stops_after_the_last_site_and_matches_a_full_pass():
    from tl_circuits.replacement import activations_at

    model = tiny_model("llama", seed=4)
    tokens = torch.tensor([[4, 9, 33, 2, 17], [8, 21, 5, 5, 40]])
    sites = ["blocks.1.ln2.hook_normalized", "blocks.0.hook_mlp_out"]
    before = model(tokens)
    later = []
    handle = model.blocks[2].register_forward_hook(lambda *args: later.append(1))
    try:
        early = activations_at(as_host(model), tokens, sites)
        assert later == []  # block 2 never ran
        full = activations_at(as_host(model), tokens, sites, stop_early=False)
        assert later == [1]
    finally:
        handle.remove()
    _, cache = model.run_with_cache(tokens, names_filter=sites)
    for site in sites:
        assert torch.equal(early[site], full[site]) and torch.equal(early[site], cache[site])
    assert _n_hooks(model) == 0
    assert torch.equal(model(tokens), before)  # the stopped pass left nothing behind
    with pytest.raises(tc.ConfigError, match="no site"):
        activations_at(as_host(model), tokens, ["blocks.0.hook_nope"])
