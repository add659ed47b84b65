"""SAELens interop: sae_lens' save_model files and objects give the same outputs here; bad files
and unsupported configs fail with errors that say what is wrong."""

import json

import pytest
import torch
from safetensors.torch import save_file

from tl_circuits.errors import ConfigError, FileFormatError
from tl_circuits.transcoders import Transcoder, TranscoderSet

D_IN, D_SAE, D_OUT = 8, 16, 8


def sae_lens_transcoder(name, layer=0, seed=0):
    from sae_lens.saes import transcoder as st
    from sae_lens.saes.sae import SAEMetadata

    cls, cfg_cls = getattr(st, name), getattr(st, f"{name}Config")
    cfg = cfg_cls(
        d_in=D_IN,
        d_sae=D_SAE,
        d_out=D_OUT,
        apply_b_dec_to_input=False,
        metadata=SAEMetadata(
            hook_name=f"blocks.{layer}.ln2.hook_normalized",
            hook_name_out=f"blocks.{layer}.hook_mlp_out",
        ),
    )
    sae = cls(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in sae.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g))
            if pname == "threshold":
                p.abs_().mul_(0.5)
    return sae


SAE_LENS_CLASSES = ["Transcoder", "SkipTranscoder", "JumpReLUTranscoder", "JumpReLUSkipTranscoder"]


@pytest.mark.parametrize("name", SAE_LENS_CLASSES)
def test_sae_lens_files_and_objects_match(tmp_path, name):
    sae = sae_lens_transcoder(name)
    sae.save_model(tmp_path / "sae")
    ours = Transcoder.load(tmp_path / "sae")
    converted = TranscoderSet([sae])[0]
    x = torch.randn(4, 3, D_IN)
    with torch.no_grad():
        want_acts, want_out = sae.encode(x), sae(x)
    assert want_acts.count_nonzero() > 0 and (want_acts == 0).any()
    for tc in (ours, converted):
        torch.testing.assert_close(tc.encode(x), want_acts, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(tc(x), want_out, rtol=1e-6, atol=1e-6)
        assert tc.cfg == json.loads((tmp_path / "sae" / "cfg.json").read_text())
        assert tc.has_skip == ("Skip" in name)
        assert tc.activation == ("jumprelu" if "JumpReLU" in name else "relu")


@pytest.mark.parametrize("name", SAE_LENS_CLASSES)
def test_sae_lens_loads_what_we_save(tmp_path, name):
    from sae_lens.saes.sae import SAE

    sae = sae_lens_transcoder(name, layer=2)
    Transcoder.from_sae_lens(sae).save(tmp_path / "ours")
    back = SAE.load_from_disk(tmp_path / "ours")
    assert type(back) is type(sae)
    for pname, p in sae.named_parameters():
        assert torch.equal(p, getattr(back, pname)), pname


def write_dir(path, cfg, tensors):
    path.mkdir(parents=True, exist_ok=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, str(path / "sae_weights.safetensors"))


def topk_cfg(**over):
    cfg = {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "hook_name": "blocks.4.ln2.hook_normalized",
            "hook_name_out": "blocks.4.hook_mlp_out",
        },
        "k": 3,
        "rescale_acts_by_decoder_norm": False,
        "d_out": D_OUT,
        "architecture": "topk",
    }
    cfg.update(over)
    return cfg


def weights(skip=False, threshold=False):
    g = torch.Generator().manual_seed(1)
    t = {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g),
        "b_enc": torch.randn(D_SAE, generator=g),
        "W_dec": torch.randn(D_SAE, D_OUT, generator=g),
        "b_dec": torch.randn(D_OUT, generator=g),
    }
    if skip:
        t["W_skip"] = torch.randn(D_OUT, D_IN, generator=g)
    if threshold:
        t["threshold"] = torch.rand(D_SAE, generator=g)
    return t


def test_sae_lens_topk_config_with_d_out(tmp_path):
    from sae_lens.saes.topk_sae import TopK

    w = weights()
    write_dir(tmp_path / "tk", topk_cfg(), w)
    tc = Transcoder.load(tmp_path / "tk")
    assert (tc.activation, tc.k, tc.layer) == ("topk", 3, 4)
    x = torch.randn(5, D_IN)
    pre = x @ w["W_enc"] + w["b_enc"]
    want = TopK(3)(pre)
    torch.testing.assert_close(tc.encode(x), want)
    torch.testing.assert_close(tc(x), want @ w["W_dec"] + w["b_dec"])
    tc.save(tmp_path / "again")
    assert Transcoder.load(tmp_path / "again").cfg == topk_cfg()


def test_top_level_hook_names_are_accepted(tmp_path):
    cfg = topk_cfg(architecture="transcoder", metadata={})
    cfg.update(hook_name="blocks.7.ln2.hook_normalized", hook_name_out="blocks.7.hook_mlp_out")
    write_dir(tmp_path / "old", cfg, weights())
    tc = Transcoder.load(tmp_path / "old")
    assert (tc.layer, tc.hook_name_out) == (7, "blocks.7.hook_mlp_out")


@pytest.mark.parametrize(
    "over,match",
    [
        (
            {"normalize_activations": "expected_average_only_in"},
            "normalize_activations='expected_average_only_in' is not supported",
        ),
        ({"apply_b_dec_to_input": True}, "apply_b_dec_to_input=true is not supported"),
        ({"reshape_activations": "hook_z"}, "reshape_activations='hook_z' is not supported"),
        (
            {"rescale_acts_by_decoder_norm": True},
            "rescale_acts_by_decoder_norm=true is not supported",
        ),
        ({"architecture": "standard"}, "architecture 'standard' is not a supported"),
    ],
)
def test_unsupported_settings_raise_config_error(tmp_path, over, match):
    write_dir(tmp_path / "tc", topk_cfg(**over), weights())
    with pytest.raises(ConfigError) as info:
        Transcoder.load(tmp_path / "tc")
    assert match in str(info.value)
    assert "cfg.json" in str(info.value)


def _write_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "breakage,match",
    [
        ("no_dir", "does not exist"),
        ("file", "is not a directory"),
        ("no_cfg", "cfg.json is missing"),
        ("bad_json", "is not valid JSON"),
        ("no_weights", "sae_weights.safetensors is missing"),
        ("truncated", "corrupt or truncated"),
        ("garbage", "re-download or re-save it"),
        ("no_threshold", "lacks tensor(s) ['threshold']"),
        ("extra_tensor", "holds tensor(s) ['W_skip']"),
        ("wrong_shape", "tensor 'W_enc' has shape (8, 16) but cfg.json (d_in=8, d_sae=12"),
        ("no_d_out", "field 'd_out' must be a positive integer"),
        ("no_hook_out", "missing 'hook_name_out'"),
        ("no_k", "needs an integer 'k'"),
        ("no_arch", "missing 'architecture'"),
        ("not_object", "expected a JSON object"),
    ],
)
def test_bad_files_raise_file_format_error(tmp_path, breakage, match):
    d = tmp_path / "tc"
    arch = "jumprelu_transcoder" if breakage == "no_threshold" else "transcoder"
    cfg = topk_cfg(architecture=arch)
    w = weights(skip=breakage == "extra_tensor")
    edits = {
        "wrong_shape": {"d_sae": 12},
        "no_hook_out": {"metadata": {"hook_name": "blocks.0.hook_resid_pre"}},
        "no_k": {"architecture": "topk_transcoder", "k": None},
        "no_arch": {"architecture": None},
    }
    cfg.update(edits.get(breakage, {}))
    if breakage == "no_d_out":
        del cfg["d_out"]
    if breakage != "no_dir":
        write_dir(d, cfg, w)
    if breakage == "file":
        d = d / "cfg.json"
    elif breakage == "no_cfg":
        (d / "cfg.json").unlink()
    elif breakage == "bad_json":
        (d / "cfg.json").write_text('{"d_in": 8,')
    elif breakage == "not_object":
        (d / "cfg.json").write_text("[1, 2]")
    elif breakage == "no_weights":
        (d / "sae_weights.safetensors").unlink()
    elif breakage == "truncated":
        _write_half(d / "sae_weights.safetensors")
    elif breakage == "garbage":
        (d / "sae_weights.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(FileFormatError) as info:
        Transcoder.load(d)
    assert match in str(info.value)
    assert str(tmp_path / "tc") in str(info.value)
