"""Today's local formats load through ``load_transcoders`` exactly as their own loaders read them
(SAELens folders, a folder of them, a list, a circuit-tracer CLT folder), and so do single files of
a release and a SAELens-format release on the Hub."""

from __future__ import annotations

import warnings

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_set
from tl_circuits.transcoders import CrossLayerTranscoder, TranscoderSet

from . import fake_hub as fh
from .test_circuit_tracer_configs import assert_same_set
from .test_lazy import _clt


@pytest.mark.parametrize("arch", ["relu", "jumprelu_skip", "topk_skip"])
def test_saelens_folders(arch, tmp_path):
    ts = tiny_set(arch)
    ts.save(tmp_path / "set")
    expected = TranscoderSet.load(tmp_path / "set")
    sources = [tmp_path / "set", str(tmp_path / "set"), [tmp_path / "set" / f"layer_{la}" for la in (2, 0, 1)]]
    for source in sources:
        got = tc.load_transcoders(source, lazy=False)
        assert isinstance(got, TranscoderSet)
        assert_same_set(got, expected)
        for la in got.layers:
            assert got[la].activation == expected[la].activation and got[la].k == expected[la].k
    one = tc.load_transcoders(tmp_path / "set" / "layer_1")
    assert one.layers == [1]
    assert tc.load_transcoders(tmp_path / "set", layers=[0, 2]).layers == [0, 2]


def test_clt_folder_as_crosslayertranscoder_load_reads_it(tmp_path):
    clt = _clt()
    clt.save(tmp_path / "clt")
    got = tc.load_transcoders(tmp_path / "clt", lazy=False)
    assert isinstance(got, CrossLayerTranscoder)
    assert_same_set(got, CrossLayerTranscoder.load(tmp_path / "clt"))


def test_single_files_of_a_release(tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    _, ids = fh.gemmascope(cache)
    _, ids2 = fh.gemmascope2(cache)
    snap = next((cache / "models--google--gemma-scope-2b-pt-transcoders" / "snapshots").iterdir())
    npz = tc.load_transcoders(snap / ids[1] / "params.npz")
    assert npz.layers == [1] and npz.hook_in(1) == "blocks.1.ln2.hook_normalized"
    snap2 = next((cache / "models--google--gemma-scope-2-270m-pt" / "snapshots").iterdir())
    gs2 = tc.load_transcoders(snap2 / ids2[2] / "params.safetensors")
    assert gs2.layers == [2] and gs2.hook_in(2) == "blocks.2.mlp.hook_in" and gs2.has_skip(2)
    by_ref = tc.load_transcoders(f"hf://google/gemma-scope-2-270m-pt/{ids2[2]}/params.safetensors")
    assert_same_set(by_ref, gs2)


def test_a_saelens_format_release_on_the_hub(tmp_path, monkeypatch):
    """A release in SAELens' own format (cfg.json + sae_weights.safetensors written by sae_lens'
    save_model), which sae_lens reads with its default loader."""
    pytest.importorskip("sae_lens")
    from sae_lens import SAE
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.transcoder import JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig

    cache = fh.use_cache(tmp_path, monkeypatch)
    files, saes = {}, []
    for la in range(fh.L):
        sae = JumpReLUSkipTranscoder(JumpReLUSkipTranscoderConfig(
            d_in=fh.D, d_sae=fh.F, d_out=fh.D, apply_b_dec_to_input=False, metadata=SAEMetadata(
                hook_name=f"blocks.{la}.mlp.hook_in", hook_name_out=f"blocks.{la}.hook_mlp_out")))
        w = fh.weights(la, skip=True)
        with torch.no_grad():
            for name, p in sae.named_parameters():
                p.copy_(w[name].T if name == "W_enc" else w[name])
        sae.save_model(tmp_path / f"s{la}")
        files |= {f"tc/layer_{la}/{n}": (tmp_path / f"s{la}" / n).read_bytes() for n in ("cfg.json", "sae_weights.safetensors")}
        saes.append(sae)
    fh.put(cache, "someone/tiny-transcoders", files)
    ids = [f"layer_{la}" for la in range(fh.L)]
    fh.patch_release(monkeypatch, "gemma-scope-2b-pt-transcoders", repo_id="someone/tiny-transcoders",
                     conversion_func=None, saes_map={i: f"tc/{i}" for i in ids})
    reference = TranscoderSet(saes)
    got = tc.load_transcoders("gemma-scope-2b-pt-transcoders", ids=ids)  # through sae_lens
    assert_same_set(got, reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = SAE.from_pretrained("gemma-scope-2b-pt-transcoders", ids[1])
    x = torch.randn(4, fh.D)
    torch.testing.assert_close(got.encode(1, x), loaded.encode(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.reconstruct(1, {1: got.encode(1, x)}, {1: x}), loaded(x), rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(tc.transcoders.releases.registry, "sae_lens_available", lambda: False)
    monkeypatch.setattr(tc.transcoders.releases.registry, "lookup", lambda name: tc.transcoders.releases.registry.Release(
        name, "someone/tiny-transcoders", None, {i: f"tc/{i}" for i in ids}))
    assert_same_set(tc.load_transcoders("gemma-scope-2b-pt-transcoders", ids=ids, lazy=True), reference)
    assert_same_set(tc.load_transcoders("hf://someone/tiny-transcoders/tc/layer_0"), TranscoderSet([saes[0]]))
