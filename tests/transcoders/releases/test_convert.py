"""``tl-circuits transcoders convert``: any source becomes memory-mappable safetensors that load
to the same set; the output folder appears complete or not at all; errors are one line, exit 2."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tl_circuits import cli
from tl_circuits.transcoders import LazyTranscoders
from tl_circuits.transcoders.releases import safetensors_map
from tl_circuits.transcoders.releases.load import resolve_spec

from . import fake_hub as fh
from .test_circuit_tracer_configs import assert_same_set


def test_convert_gemmascope_npz_release_to_a_mappable_set(tmp_path, monkeypatch, capsys):
    cache = fh.use_cache(tmp_path, monkeypatch)
    _, ids = fh.gemmascope(cache)
    monkeypatch.setattr(tc.transcoders.releases.registry, "sae_lens_available", lambda: False)
    out = tmp_path / "converted"
    assert cli.main(["transcoders", "convert", "gemma-scope-2b-pt-transcoders", str(out), "--ids", *ids]) == 0
    assert "lazy=True" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", *[f"layer_{la}.safetensors" for la in range(3)]]
    spec = resolve_spec(out)
    assert spec.mappable and spec.activation == "jumprelu"
    assert not spec.layers[0].W_enc.transpose  # encoder directions are rows: one read per feature
    eager = tc.load_transcoders("gemma-scope-2b-pt-transcoders", ids=ids, lazy=False)
    lazy = tc.load_transcoders(out, lazy=True)
    assert isinstance(lazy, LazyTranscoders)
    assert_same_set(lazy, eager)


@pytest.mark.parametrize("source", ["clt", "gemmascope2_clt", "topk"])
def test_convert_keeps_kind_activation_and_sites(source, tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    if source == "clt":
        ref = fh.mntss_clt(cache, repo="mntss/clt-tiny", skip=True)
    elif source == "gemmascope2_clt":
        ref, _ = fh.gemmascope2_clt(cache)
    else:
        fh.ct_set(cache, "org/topk", "topk", skip=True)
        ref = "org/topk"
    original = tc.load_transcoders(f"hf://{ref}", lazy=True)
    tc.transcoders.convert_transcoders(f"hf://{ref}", tmp_path / "out", progress=False)
    again = tc.load_transcoders(tmp_path / "out", lazy=True)
    assert again.activation == original.activation and again.is_cross_layer == original.is_cross_layer
    assert_same_set(again, original)


def test_convert_casts_on_the_way(tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    fh.ct_set(cache, "org/plt", "relu", skip=True)
    assert cli.main(["transcoders", "convert", "hf://org/plt", str(tmp_path / "bf16"), "--dtype", "bfloat16",
                     "--layers", "1"]) == 0
    half = tc.load_transcoders(tmp_path / "bf16")
    assert half.layers == [1] and half.dtype == torch.bfloat16
    full = tc.load_transcoders("hf://org/plt", layers=[1])
    x = torch.randn(3, fh.D)
    torch.testing.assert_close(half.encode(1, x).float(), full.encode(1, x), rtol=2e-2, atol=2e-2)


def test_an_interrupted_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    fh.ct_set(cache, "org/plt", "relu", skip=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the previous conversion")
    calls = {"n": 0}
    original = safetensors_map.StreamWriter.write

    def failing(self, key, block):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        original(self, key, block)

    monkeypatch.setattr(safetensors_map.StreamWriter, "write", failing)
    with pytest.raises(KeyboardInterrupt):
        tc.transcoders.convert_transcoders("hf://org/plt", out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf-cache", "out"]  # no temporary left
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # the previous folder is untouched


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys):
    fh.use_cache(tmp_path, monkeypatch)
    assert cli.main(["transcoders", "convert", "hf://org/absent", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tl-circuits transcoders: error: no transcoders found at hf://org/absent")
    assert err.count("\n") == 1
    (tmp_path / "file").write_text("x")
    assert cli.main(["transcoders", "convert", "hf://org/absent", str(tmp_path / "file")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["transcoders"])
