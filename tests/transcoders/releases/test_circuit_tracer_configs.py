"""circuit-tracer ``config.yaml`` sets (per-layer and cross-layer; ReLU, JumpReLU, TopK; with and
without skip) in a Hugging Face cache, reached by every form of reference, load into what their
weights say: the same encodings, reconstructions and decoder rows as a set built from the same
tensors, eagerly and memory-mapped, and the same graphs."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_model
from tl_circuits.transcoders import CrossLayerTranscoder, LazyTranscoders, Transcoder, TranscoderSet
from tl_circuits.transcoders.activations import get_activation
from tl_circuits.transcoders.releases.load import clt_skip_argument

from . import fake_hub as fh

PROMPT = [0, 3, 17, 9, 41, 5, 22]


def per_layer_reference(ws, activation, k=4, hook_in="ln2.hook_normalized"):
    return TranscoderSet([
        Transcoder(w["W_enc"].T, w["b_enc"], w["W_dec"], w["b_dec"], hook_name=f"blocks.{la}.{hook_in}",
                   hook_name_out=f"blocks.{la}.hook_mlp_out", activation=activation,
                   threshold=w.get("threshold"), k=k if activation == "topk" else None, W_skip=w.get("W_skip"))
        for la, w in ws.items()])


def clt_reference(ws, hook_in, slots_from_layer=False):
    L = len(ws)
    return CrossLayerTranscoder(
        W_enc=[w["W_enc"].T for w in ws.values()], b_enc=[w["b_enc"] for w in ws.values()],
        W_dec=[w["W_dec"][:, la:] if slots_from_layer else w["W_dec"] for la, w in ws.items()],
        b_dec=[w["b_dec"] for w in ws.values()],
        hook_in=[f"blocks.{la}.{hook_in}" for la in range(L)], hook_out=[f"blocks.{la}.hook_mlp_out" for la in range(L)],
        activation="jumprelu" if "threshold" in ws[0] else "relu",
        threshold=[w["threshold"] for w in ws.values()] if "threshold" in ws[0] else None,
        W_skip=[clt_skip_argument(w["W_skip"]) for w in ws.values()] if "W_skip" in ws[0] else None)


def assert_same_set(got, want, *, acts_fn=None):
    """Every protocol member of ``got`` equals ``want``'s (or ``acts_fn``'s encodings)."""
    assert got.layers == want.layers and got.out_layers == want.out_layers
    g = torch.Generator().manual_seed(0)
    x = {la: torch.randn(5, fh.D, generator=g) for la in got.layers}
    acts = {}
    for la in got.layers:
        assert got.hook_in(la) == want.hook_in(la) and got.d_sae(la) == want.d_sae(la)
        acts[la] = got.encode(la, x[la])
        expected = acts_fn(la, x[la]) if acts_fn else want.encode(la, x[la])
        torch.testing.assert_close(acts[la], expected, rtol=1e-6, atol=1e-6)
        idx = torch.tensor([5, 0, 17])
        torch.testing.assert_close(got.encoder_rows(la, idx), want.W_enc(la)[:, idx].T, rtol=0, atol=0)
        gv, wv = got.decoder_vectors(la, idx), want.decoder_vectors(la, idx)
        assert sorted(gv) == sorted(wv)
        for out in gv:
            torch.testing.assert_close(gv[out], wv[out], rtol=0, atol=0)
    for out in got.out_layers:
        assert got.hook_out(out) == want.hook_out(out) and got.has_skip(out) == want.has_skip(out)
        torch.testing.assert_close(got.reconstruct(out, acts, x), want.reconstruct(out, acts, x), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got.skip(out, x[out]), want.skip(out, x[out]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk"])
def test_per_layer_config(activation, skip, tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    ws = fh.ct_set(cache, "org/plt", activation, skip=skip)
    for lazy in (False, True):
        got = tc.load_transcoders("hf://org/plt/config.yaml", lazy=lazy)
        if activation == "topk":  # circuit-tracer's TopK keeps the k largest pre-activations, unrectified
            assert isinstance(got, LazyTranscoders) == lazy
            assert getattr(got, "activation", "topk_signed") == "topk_signed"
            ref = per_layer_reference(ws, "relu")
            assert_same_set(got, ref, acts_fn=lambda la, x, ref=ref: get_activation("topk_signed")(
                ref.pre_activation(la, x), k=4))
        else:
            assert isinstance(got, LazyTranscoders) == lazy
            assert_same_set(got, per_layer_reference(ws, activation))


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("threshold", [False, True])
def test_cross_layer_config(threshold, skip, tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    fh.mntss_clt(cache, repo="mntss/clt-tiny", skip=skip, threshold=threshold)
    ws = {la: fh.weights(la, n_out=fh.L - la, skip=skip, threshold=threshold) for la in range(fh.L)}
    ref = clt_reference(ws, "hook_resid_mid")
    for lazy in (False, True):
        got = tc.load_transcoders("mntss/clt-tiny", lazy=lazy)
        assert isinstance(got, LazyTranscoders if lazy else CrossLayerTranscoder)
        assert_same_set(got, ref)


def test_gemmascope2_cross_layer_config(tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    repo, ws = fh.gemmascope2_clt(cache)
    ref = clt_reference(ws, "mlp.hook_in", slots_from_layer=True)
    for lazy in (False, True):
        assert_same_set(tc.load_transcoders(f"hf://{repo}", lazy=lazy), ref)


def test_every_reference_form_reaches_the_same_files(tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    ws = fh.ct_set(cache, "org/plt", "jumprelu", skip=True, folder="sub/set", listed=False)
    snapshot = next((cache / "models--org--plt" / "snapshots").iterdir())
    commit = snapshot.name
    fh.put(cache, "org/plt", {}, revision="v1")  # a named ref pointing at another (empty) commit
    (cache / "models--org--plt" / "refs" / "v1").write_text(commit)
    ref = per_layer_reference(ws, "jumprelu")
    forms = ["hf://org/plt/sub/set", "hf://org/plt/sub/set/config.yaml?revision=main",
             f"hf://org/plt/sub/set?revision={commit}", "org/plt/sub/set@v1", "org/plt/sub/set",
             snapshot / "sub" / "set", snapshot / "sub" / "set" / "config.yaml"]
    for form in forms:
        assert_same_set(tc.load_transcoders(form), ref)


@pytest.mark.parametrize("case", ["per_layer_skip", "cross_layer_skip", "gemmascope2_clt"])
def test_graph_matches_the_reference_set(case, tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    if case == "per_layer_skip":
        ws = fh.ct_set(cache, "org/plt", "jumprelu", skip=True)
        source, ref, family = "hf://org/plt", per_layer_reference(ws, "jumprelu"), "llama"
    elif case == "cross_layer_skip":
        fh.mntss_clt(cache, repo="mntss/clt-tiny", skip=True)
        ws = {la: fh.weights(la, n_out=fh.L - la, skip=True) for la in range(fh.L)}
        source, ref, family = "mntss/clt-tiny", clt_reference(ws, "hook_resid_mid"), "gemma2"
    else:
        repo, ws = fh.gemmascope2_clt(cache)
        source, ref, family = f"hf://{repo}", clt_reference(ws, "mlp.hook_in", slots_from_layer=True), "gemma3_text"
    if family == "gemma3_text":  # GemmaScope 2's CLT is for Gemma-3
        from tests.hosts.hf_tiny import hf_model, on_host

        model = on_host("hf", hf_model(family), None)
    else:
        model = tiny_model(family)
    want = tc.attribute(model, ref, PROMPT, progress=False)
    dense = want.adjacency.to_dense()
    assert dense.count_nonzero() > 50
    for lazy in (False, True):
        got = tc.attribute(model, tc.load_transcoders(source, lazy=lazy), PROMPT, progress=False)
        assert torch.equal(got.node_index, want.node_index) and torch.equal(got.node_layer, want.node_layer)
        assert float((got.adjacency.to_dense() - dense).abs().max()) <= 1e-9 * float(dense.abs().max())


def test_layers_select_a_subset_and_fetch_only_those(tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    ws = fh.ct_set(cache, "org/plt", "relu", skip=False)
    blob = (cache / "models--org--plt" / "snapshots").glob("*/layer_0.safetensors")
    next(blob).unlink()  # layer 0 is not downloaded: loading layers 1 and 2 must not need it
    got = tc.load_transcoders("hf://org/plt", layers=[2, 1])
    assert got.layers == [1, 2]
    assert_same_set(got, per_layer_reference({1: ws[1], 2: ws[2]}, "relu"))
