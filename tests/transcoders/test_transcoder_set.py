"""TranscoderSet: the protocol the attribution core reads, files, and the import-weight guarantee."""

import subprocess
import sys

import pytest
import torch

from tl_circuits.errors import ConfigError, FileFormatError
from tl_circuits.transcoders import Transcoder, TranscoderSet

D_IN, D_SAE, D_OUT = 8, 16, 8


def make(layer, activation="relu", skip=False, d_in=D_IN, d_sae=D_SAE, hook_name=None):
    g = torch.Generator().manual_seed(layer)
    return Transcoder(
        torch.randn(d_in, d_sae, generator=g),
        torch.randn(d_sae, generator=g),
        torch.randn(d_sae, D_OUT, generator=g),
        torch.randn(D_OUT, generator=g),
        hook_name=hook_name or f"blocks.{layer}.ln2.hook_normalized",
        hook_name_out=f"blocks.{layer}.hook_mlp_out",
        activation=activation,
        threshold=torch.rand(d_sae, generator=g) if activation == "jumprelu" else None,
        k=3 if activation == "topk" else None,
        W_skip=torch.randn(D_OUT, d_in, generator=g) if skip else None,
    )


def three_layers():
    return TranscoderSet([make(2, "topk", skip=True), make(0), make(1, "jumprelu", d_sae=12)])


def assert_same(a: TranscoderSet, b: TranscoderSet):
    assert a.layers == b.layers
    for ta, tb in zip(a, b, strict=True):
        assert ta.cfg == tb.cfg
        pa, pb = dict(ta.named_parameters()), dict(tb.named_parameters())
        assert pa.keys() == pb.keys()
        assert all(torch.equal(pa[n], pb[n]) for n in pa)


def test_protocol():
    ts = three_layers()
    assert ts.layers == ts.out_layers == [0, 1, 2]
    assert len(ts) == 3 and 1 in ts and 3 not in ts
    assert [tc.layer for tc in ts] == [0, 1, 2]
    assert ts.is_cross_layer is False
    assert ts.hook_in(1) == "blocks.1.ln2.hook_normalized"
    assert ts.hook_out(2) == "blocks.2.hook_mlp_out"
    assert (ts.d_in, ts.d_out, ts.d_sae(1), ts.d_sae(0)) == (D_IN, D_OUT, 12, D_SAE)
    assert [ts.has_skip(i) for i in ts.layers] == [False, False, True]
    x = torch.randn(2, 5, D_IN)
    for layer in ts.layers:
        tc = ts[layer]
        torch.testing.assert_close(ts.pre_activation(layer, x), x @ tc.W_enc + tc.b_enc)
        torch.testing.assert_close(ts.encode(layer, x), tc.encode(x))
        assert ts.W_enc(layer) is tc.W_enc
        acts = ts.encode(layer, x)
        torch.testing.assert_close(ts.reconstruct(layer, {layer: acts}, {layer: x}), tc(x))
        torch.testing.assert_close(ts.skip(layer, x), tc.skip(x))
    idx = torch.tensor([3, 0, 3])
    rows = ts.decoder_vectors(1, idx)
    assert list(rows) == [1]
    assert torch.equal(rows[1], ts[1].W_dec[idx])
    with pytest.raises(KeyError, match=r"no transcoder for layer 7; this set has \[0, 1, 2\]"):
        ts[7]


def test_to_returns_a_cast_copy_and_leaves_the_set_as_it_was():
    """``to`` no longer casts in place (issue #15): a new set of new transcoders comes back."""
    ts = three_layers()
    before = [{n: p.clone() for n, p in tc.named_parameters()} for tc in ts]
    cast = ts.to(dtype=torch.float64)
    assert cast is not ts and all(a is not b for a, b in zip(cast, ts, strict=True))
    assert all(p.dtype == torch.float64 for tc in cast for p in tc.parameters())
    assert cast.encode(1, torch.randn(3, D_IN, dtype=torch.float64)).dtype == torch.float64
    assert all(p.dtype == torch.float32 for tc in ts for p in tc.parameters())
    for tc, params in zip(ts, before, strict=True):
        assert all(torch.equal(p, params[n]) for n, p in tc.named_parameters())
    assert ts.to(device="cpu") is ts  # nothing to change


def test_save_and_load_round_trip(tmp_path):
    ts = three_layers()
    ts.save(tmp_path / "set")
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["layer_0", "layer_1", "layer_2"]
    assert_same(TranscoderSet.load(tmp_path / "set"), ts)
    dirs = [tmp_path / "set" / f"layer_{i}" for i in (2, 0, 1)]
    assert_same(TranscoderSet.load(dirs), ts)
    assert_same(TranscoderSet.load([str(d) for d in dirs]), ts)
    one = TranscoderSet.load(tmp_path / "set" / "layer_1")
    assert one.layers == [1]
    ts.save(tmp_path / "set")  # overwrite
    assert_same(
        TranscoderSet.load(tmp_path / "set", dtype=torch.float64), ts.to(dtype=torch.float64)
    )


def test_load_ignores_other_entries_and_sorts_by_layer(tmp_path):
    ts = three_layers()
    for tc, name in zip(ts, ["zeta", "alpha", "mid"], strict=True):
        tc.save(tmp_path / name)
    (tmp_path / "notes").mkdir()
    (tmp_path / ".hidden.tmp-1").mkdir()
    (tmp_path / "README.md").write_text("hi")
    assert TranscoderSet.load(tmp_path).layers == [0, 1, 2]


def test_sae_lens_objects_convert():
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.transcoder import SkipTranscoder, SkipTranscoderConfig

    saes = []
    for layer in (1, 0):
        cfg = SkipTranscoderConfig(
            d_in=D_IN,
            d_sae=D_SAE,
            d_out=D_OUT,
            apply_b_dec_to_input=False,
            metadata=SAEMetadata(
                hook_name=f"blocks.{layer}.ln2.hook_normalized",
                hook_name_out=f"blocks.{layer}.hook_mlp_out",
            ),
        )
        sae = SkipTranscoder(cfg)
        with torch.no_grad():
            for p in sae.parameters():
                p.copy_(torch.randn(p.shape))
        saes.append(sae)
    ts = TranscoderSet([saes[0], make(2), saes[1]])
    assert ts.layers == [0, 1, 2]
    x = torch.randn(4, D_IN)
    with torch.no_grad():
        for layer, sae in ((1, saes[0]), (0, saes[1])):
            torch.testing.assert_close(ts[layer](x), sae(x), rtol=1e-6, atol=1e-6)
            assert ts[layer].W_enc.data_ptr() != sae.W_enc.data_ptr()  # copied


def test_errors(tmp_path):
    dup = "two transcoders for layer 1: hooks 'blocks.1.ln2.hook_normalized' and 'blocks.1.hook_resid_mid'"
    with pytest.raises(ConfigError, match=dup):
        TranscoderSet([make(1), make(1, hook_name="blocks.1.hook_resid_mid")])
    with pytest.raises(ConfigError, match="at least one transcoder"):
        TranscoderSet([])
    with pytest.raises(ConfigError, match="got str"):
        TranscoderSet(["blocks.0"])
    with pytest.raises(ConfigError, match="disagree on d_in: {0: 8, 1: 4}"):
        _ = TranscoderSet([make(0), make(1, d_in=4)]).d_in
    with pytest.raises(FileFormatError, match="does not exist"):
        TranscoderSet.load(tmp_path / "nope")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(FileFormatError, match="no transcoders found in .*empty"):
        TranscoderSet.load(tmp_path / "empty")
    with pytest.raises(FileFormatError, match="empty list"):
        TranscoderSet.load([])
    with pytest.raises(FileFormatError, match="cfg.json is missing"):
        TranscoderSet.load([tmp_path / "empty" / "sub"])


def test_import_does_not_pull_heavy_frameworks():
    code = (
        "import sys, tl_circuits.transcoders; "
        "print(sorted(m for m in ('sae_lens', 'transformer_lens', 'nnsight') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
