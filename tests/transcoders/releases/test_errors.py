"""Bad input gets an error that says what was expected, what was found and how to fix it."""

from __future__ import annotations

import pytest

import tl_circuits as tc
from tl_circuits.errors import ConfigError, FileFormatError

from . import fake_hub as fh


def test_reference_missing_from_the_cache_while_offline_names_the_download(tmp_path, monkeypatch):
    fh.use_cache(tmp_path, monkeypatch)
    with pytest.raises(FileFormatError, match=r"HF_HUB_OFFLINE=1.*`hf download mntss/clt-gemma-2-2b-426k --include '\*' --revision v2`"):
        tc.load_transcoders("hf://mntss/clt-gemma-2-2b-426k?revision=v2")
    with pytest.raises(FileFormatError, match=r"layer_3/params.npz is not in the Hugging Face cache.*"
                                              r"hf download google/gemma-scope-2b-pt-transcoders layer_3/params.npz"):
        tc.load_transcoders("hf://google/gemma-scope-2b-pt-transcoders/layer_3/params.npz")


def test_a_file_listed_by_a_cached_config_but_not_downloaded(tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    fh.ct_set(cache, "org/plt", "relu", skip=False)
    next((cache / "models--org--plt" / "snapshots").glob("*/layer_1.safetensors")).unlink()
    with pytest.raises(FileFormatError, match="layer_1.safetensors is not in the Hugging Face cache"):
        tc.load_transcoders("hf://org/plt")


def test_npz_missing_a_key(tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    w = fh.weights(0)
    fh.put(cache, "google/gemma-scope-2b-pt-transcoders", {"layer_0/width_16k/average_l0_76/params.npz": fh.npz(
        {"W_enc": w["W_enc"].T, "W_dec": w["W_dec"], "b_enc": w["b_enc"], "b_dec": w["b_dec"]})})
    with pytest.raises(FileFormatError, match=r"params.npz lacks \['threshold'\].*GemmaScope transcoder"):
        tc.load_transcoders("hf://google/gemma-scope-2b-pt-transcoders/layer_0/width_16k/average_l0_76")


def test_config_asking_for_an_unknown_activation(tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    fh.ct_set(cache, "org/plt", "relu", skip=False)
    fh.put(cache, "org/odd", {"config.yaml": fh.ct_config(
        "transcoder_set", [f"hf://org/plt/layer_{la}.safetensors" for la in range(3)], activation="batchtopk")})
    with pytest.raises(ConfigError, match="asks for activation 'batchtopk', which tl_circuits does not know"):
        tc.load_transcoders("hf://org/odd")
    fh.put(cache, "org/nok", {"config.yaml": fh.ct_config(
        "transcoder_set", [f"hf://org/plt/layer_{la}.safetensors" for la in range(3)], activation="topk")})
    with pytest.raises(FileFormatError, match="'topk' without a positive integer k"):
        tc.load_transcoders("hf://org/nok")


@pytest.mark.parametrize("cut", [4, 100, -10])
def test_file_truncated_mid_download(cut, tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    fh.ct_set(cache, "org/plt", "jumprelu", skip=True)
    blob = next((cache / "models--org--plt" / "snapshots").glob("*/layer_2.safetensors")).resolve()
    data = blob.read_bytes()
    blob.write_bytes(data[:cut])
    with pytest.raises(FileFormatError, match="cut off|truncated|too short"):
        tc.load_transcoders("hf://org/plt", lazy=True)


def test_npz_truncated_mid_download(tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    _, ids = fh.gemmascope(cache)
    blob = next((cache / "models--google--gemma-scope-2b-pt-transcoders" / "snapshots").glob(f"*/{ids[0]}/params.npz")).resolve()
    blob.write_bytes(blob.read_bytes()[:-200])
    with pytest.raises(FileFormatError, match="not a readable npz.*cut off mid-download"):
        tc.load_transcoders(f"hf://google/gemma-scope-2b-pt-transcoders/{ids[0]}")


def test_shapes_that_do_not_fit_together(tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    files = {f"layer_{la}.safetensors": fh.ct_layer_file(fh.weights(la, d=16 if la else 12, threshold=False))
             for la in range(2)}
    files["config.yaml"] = fh.ct_config("transcoder_set", None)
    fh.put(cache, "org/mixed", files)
    with pytest.raises(FileFormatError, match=r"layer 1: W_enc .* has shape \(24, 16\), expected \(24, 12\)"):
        tc.load_transcoders("hf://org/mixed")


def test_npz_cannot_be_mapped(tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    _, ids = fh.gemmascope(cache)
    with pytest.raises(ConfigError, match="npz, which cannot be memory-mapped; convert it once with `tl-circuits transcoders convert"):
        tc.load_transcoders(f"hf://google/gemma-scope-2b-pt-transcoders/{ids[0]}", lazy=True)


def test_a_cross_layer_transcoder_loads_whole(tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    fh.mntss_clt(cache, repo="mntss/clt-tiny")
    with pytest.raises(FileFormatError, match="cross-layer transcoder: every layer's features write later layers"):
        tc.load_transcoders("mntss/clt-tiny", layers=[0, 1])


def test_not_a_source_at_all(tmp_path):
    with pytest.raises(FileFormatError, match="neither an existing path, a Hugging Face reference"):
        tc.load_transcoders(str(tmp_path / "nothing here"))
