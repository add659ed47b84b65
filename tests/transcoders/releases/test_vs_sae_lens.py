"""Each published format, as a tiny fake in the release's exact layout in a Hugging Face cache, loads
offline through ``load_transcoders`` (through sae_lens, through our own readers, memory-mapped)
and gives what ``sae_lens.SAE.from_pretrained`` gives on the same files: the same encode and
decode on random inputs, the same graph on a tiny random model of the release's family."""

from __future__ import annotations

import warnings

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_model
from tl_circuits.transcoders import LazyTranscoders, Transcoder, TranscoderSet
from tl_circuits.transcoders.releases import registry

from . import fake_hub as fh

pytest.importorskip("sae_lens")

PROMPT = [0, 3, 17, 9, 41, 5, 22]
TINY = {"d_in": fh.D, "d_out": fh.D, "d_sae": fh.F}

#: case -> (release name, builder, registry changes, tiny model family); the fakes use the real ids
#: and paths of layers 0-2, except the 270m release, which lists two other layers (saes_map None:
#: our ids, as paths).
CASES = {
    "gemmascope": ("gemma-scope-2b-pt-transcoders", fh.gemmascope, {"config_overrides": TINY}, "gemma2"),
    "gemmascope2_affine": ("gemma-scope-2-270m-pt-transcoders", fh.gemmascope2, {"saes_map": None},
                           "gemma3_text"),
    "gemmascope2_all": ("gemma-scope-2-1b-pt-transcoders-all",
                        lambda c: fh.gemmascope2(c, size="1b", affine=False, folder="transcoder_all"), {},
                        "gemma3_text"),
    "qwen3": ("mwhanna-qwen3-0.6b-transcoders-lowl0", fh.qwen3, {}, "qwen3"),
}


@pytest.fixture
def release(request, tmp_path, monkeypatch):
    """(name, ids, sae_lens loader) of a tiny fake of a real release, offline in a fresh cache."""
    name, build, changes, family = CASES[request.param]
    cache = fh.use_cache(tmp_path, monkeypatch)
    repo, ids = build(cache)
    if "saes_map" in changes:
        changes = {**changes, "saes_map": {i: i for i in ids}}
    if changes:
        fh.patch_release(monkeypatch, name, **changes)
    fh.patch_sae_lens_shapes(monkeypatch)

    def sae(i):
        from sae_lens import SAE

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SAE.from_pretrained(name, i, device="cpu")

    return name, ids, sae, family


def _ours(name, ids, route, monkeypatch, tmp_path):
    if route == "own":
        monkeypatch.setattr(registry, "sae_lens_available", lambda: False)
    if route == "lazy":
        spec = tc.transcoders.releases.load.resolve_spec(name, ids=ids)
        if not spec.mappable:  # npz: the documented path is a one-time conversion
            tc.transcoders.convert_transcoders(name, tmp_path / "converted", ids=ids, progress=False)
            return tc.load_transcoders(tmp_path / "converted", lazy=True)
        return tc.load_transcoders(name, ids=ids, lazy=True)
    return tc.load_transcoders(name, ids=ids, lazy=False)


@pytest.mark.parametrize("route", ["sae_lens", "own", "lazy"])
@pytest.mark.parametrize("release", list(CASES), indirect=True)
def test_encode_and_decode_match_sae_lens(release, route, monkeypatch, tmp_path):
    name, ids, sae_of, _ = release
    ours = _ours(name, ids, route, monkeypatch, tmp_path)
    assert isinstance(ours, LazyTranscoders) == (route == "lazy")
    assert ours.layers == [0, 1, 2] and ours.dtype == torch.float32
    worst = 0.0
    for layer, sae_id in enumerate(ids):
        sae = sae_of(sae_id)
        x = torch.randn(6, 5, fh.D, generator=torch.Generator().manual_seed(layer))
        with torch.no_grad():
            acts, out = sae.encode(x), sae(x)
            decoded = sae.decode(acts)
        assert 0 < acts.count_nonzero() < acts.numel()
        got = ours.encode(layer, x)
        recon = ours.reconstruct(layer, {layer: got}, {layer: x})
        no_skip = recon - ours.skip(layer, x)
        for a, b in ((got, acts), (recon, out), (no_skip, decoded)):
            worst = max(worst, float((a - b).abs().max()))
        assert ours.has_skip(layer) == hasattr(sae, "W_skip")
    assert worst <= 1e-6, worst


def _sae_lens_set(ours, sae_of, ids):
    """sae_lens' tensors as a set with our sites (sae_lens names GemmaScope 2's read point
    'hook_mlp_in', TransformerLens' name of the residual *before* the norm; the release's own
    config says the norm's output: blocks.{l}.mlp.hook_in)."""
    out = []
    for layer, sae_id in enumerate(ids):
        sae = sae_of(sae_id)
        out.append(Transcoder(sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, hook_name=ours.hook_in(layer),
                              hook_name_out=ours.hook_out(layer),
                              activation="jumprelu" if hasattr(sae, "threshold") else "relu",
                              threshold=getattr(sae, "threshold", None), W_skip=getattr(sae, "W_skip", None)))
    return TranscoderSet(out)


def _model(family):
    """A tiny random model of the release's family: GemmaScope 2 is for Gemma-3 (local and global
    layers, q/k norms), the mwhanna sets for Qwen3, GemmaScope for Gemma-2."""
    if family in ("qwen3", "gemma3_text"):
        from tests.hosts.hf_tiny import hf_model, on_host

        return on_host("hf", hf_model(family), None)
    return tiny_model(family)


def dense(graph):
    return graph.adjacency.to_dense()


@pytest.mark.parametrize("release", list(CASES), indirect=True)
def test_graph_matches_sae_lens(release, monkeypatch, tmp_path):
    name, ids, sae_of, family = release
    model = _model(family)
    ours = _ours(name, ids, "own", monkeypatch, tmp_path)
    lazy = _ours(name, ids, "lazy", monkeypatch, tmp_path)
    want = tc.attribute(model, _sae_lens_set(ours, sae_of, ids), PROMPT, progress=False)
    ref = dense(want)
    assert ref.count_nonzero() > 50
    for got in (tc.attribute(model, ours, PROMPT, progress=False), tc.attribute(model, lazy, PROMPT, progress=False)):
        assert torch.equal(got.node_kind, want.node_kind) and torch.equal(got.node_index, want.node_index)
        assert float((dense(got) - ref).abs().max()) <= 1e-6 * float(ref.abs().max())


def test_gemmascope2_sites_follow_the_release_config(tmp_path, monkeypatch):
    """GemmaScope 2 reads the pre-MLP norm's output (its config.json); sae_lens calls that
    'hook_mlp_in', which TransformerLens uses for the residual before the norm."""
    cache = fh.use_cache(tmp_path, monkeypatch)
    _, ids = fh.gemmascope2(cache)
    fh.patch_release(monkeypatch, "gemma-scope-2-270m-pt-transcoders", saes_map={i: i for i in ids})
    fh.patch_sae_lens_shapes(monkeypatch)
    ours = tc.load_transcoders("gemma-scope-2-270m-pt-transcoders", ids=ids)
    assert [ours.hook_in(la) for la in ours.layers] == [f"blocks.{la}.mlp.hook_in" for la in range(3)]
    assert ours.hook_out(1) == "blocks.1.hook_mlp_out"
    from sae_lens import SAE

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sae = SAE.from_pretrained("gemma-scope-2-270m-pt-transcoders", ids[1])
    assert sae.cfg.metadata.hook_name == "blocks.1.hook_mlp_in"
    assert sae.cfg.metadata.hf_hook_name == "model.layers.1.pre_feedforward_layernorm.output"


def test_mntss_clt_loads_whole_and_matches_sae_lens_per_layer_view(tmp_path, monkeypatch):
    """sae_lens reads the 2.5M CLT as per-layer ReLU transcoders with the decoders summed over
    output layers; we read the CLT itself. Its encoders and summed decoders are what sae_lens has."""
    cache = fh.use_cache(tmp_path, monkeypatch)
    fh.mntss_clt(cache)
    name = "mntss-gemma-2-2b-2.5m-clt-as-per-layer"
    fh.patch_release(monkeypatch, name, saes_map={f"layer_{la}": str(la) for la in range(fh.L)})
    fh.patch_sae_lens_shapes(monkeypatch)
    from sae_lens import SAE

    for lazy in (False, True):
        clt = tc.load_transcoders(name, lazy=lazy)
        assert clt.out_layers == [0, 1, 2] and clt.hook_in(2) == "blocks.2.hook_resid_mid"
        for layer in range(fh.L):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sae = SAE.from_pretrained(name, f"layer_{layer}")
            x = torch.randn(7, fh.D)
            torch.testing.assert_close(clt.pre_activation(layer, x), x @ sae.W_enc + sae.b_enc, rtol=1e-6, atol=1e-6)
            idx = torch.arange(fh.F)
            summed = sum(clt.decoder_vectors(layer, idx).values())
            torch.testing.assert_close(summed, sae.W_dec, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("release", ["qwen3", "gemmascope"], indirect=True)
def test_auto_maps_a_release_too_big_for_memory_without_reading_it(release, monkeypatch):
    """``lazy="auto"`` sizes a safetensors release from its headers and maps it when it does not
    fit, never loading it through sae_lens; npz (GemmaScope) cannot be mapped and is read."""
    from tl_circuits.transcoders.releases import load

    name, ids, _, _ = release
    monkeypatch.setattr(load, "available_memory", lambda device: 10_000)  # bytes
    got = tc.load_transcoders(name, ids=ids)
    assert isinstance(got, LazyTranscoders) == (name != "gemma-scope-2b-pt-transcoders")


def test_gemmascope2_without_config_json_falls_back_to_our_readers(tmp_path, monkeypatch):
    """A folder without config.json: sae_lens asks the Hub (impossible offline), we infer the sites
    from the release, as sae_lens would online, and say so."""
    cache = fh.use_cache(tmp_path, monkeypatch)
    _, ids = fh.gemmascope2(cache, config=False)
    fh.patch_release(monkeypatch, "gemma-scope-2-270m-pt-transcoders", saes_map={i: i for i in ids})
    with pytest.warns(UserWarning, match="sae_lens could not load gemma-scope-2-270m-pt-transcoders"):
        got = tc.load_transcoders("gemma-scope-2-270m-pt-transcoders", ids=ids)
    assert [got.hook_in(la) for la in got.layers] == [f"blocks.{la}.mlp.hook_in" for la in range(3)]
    assert got.has_skip(0) and isinstance(got, TranscoderSet)
