"""Bad input gets a ConfigError / FileFormatError naming the problem and the fix."""

from __future__ import annotations

import json

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_model, tiny_set, tiny_transcoder


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", tokenizer=True)


@pytest.fixture(scope="module")
def transcoders():
    return tiny_set("relu")


@pytest.mark.parametrize("prompt", ["", "   ", [], torch.zeros(0, dtype=torch.long)])
def test_empty_prompt(model, transcoders, prompt):
    with pytest.raises(tc.ConfigError, match="empty"):
        tc.attribute(model, transcoders, prompt, progress=False)


def test_prompt_longer_than_context(model, transcoders):
    with pytest.raises(tc.ConfigError, match=r"33 tokens, longer than the model's context of 32"):
        tc.attribute(model, transcoders, list(range(2, 35)), progress=False)


def test_only_bos(model, transcoders):
    with pytest.raises(tc.ConfigError, match="only the BOS"):
        tc.attribute(model, transcoders, [0], progress=False)


def test_token_id_outside_vocabulary(model, transcoders):
    with pytest.raises(tc.ConfigError, match="vocabulary"):
        tc.attribute(model, transcoders, [1, 999], progress=False)


def test_transcoder_width_does_not_match_model(model):
    wrong = tc.TranscoderSet([tiny_transcoder(0, "relu", d_model=8)])
    with pytest.raises(tc.ConfigError, match=r"d_in=8.*d_model=16.*different model"):
        tc.attribute(model, wrong, [1, 2, 3], progress=False)


def test_hook_the_model_does_not_have(model):
    wrong = tc.TranscoderSet([tiny_transcoder(0, "relu", hook_in="blocks.{l}.hook_mlp_middle")])
    with pytest.raises(tc.ConfigError, match=r"'blocks.0.hook_mlp_middle'.*does not have"):
        tc.attribute(model, wrong, [1, 2, 3], progress=False)


def test_a_read_point_that_is_not_an_mlp_input(model):
    wrong = tc.TranscoderSet([tiny_transcoder(0, "relu", hook_in="blocks.{l}.hook_resid_pre")])
    with pytest.raises(tc.ConfigError, match=r"reads 'blocks.0.hook_resid_pre', which is not an MLP input"):
        tc.attribute(model, wrong, [1, 2, 3], progress=False)


def test_layer_beyond_the_model(model):
    wrong = tc.TranscoderSet([tiny_transcoder(5, "relu")])
    with pytest.raises(tc.ConfigError, match=r"layer 5.*layers 0..2"):
        tc.attribute(model, wrong, [1, 2, 3], progress=False)


def test_two_transcoders_for_one_layer():
    with pytest.raises(tc.ConfigError, match="layer 1"):
        tc.TranscoderSet([tiny_transcoder(1, "relu"), tiny_transcoder(1, "topk")])


def test_bad_targets(model, transcoders):
    with pytest.raises(tc.ConfigError, match="exactly one"):
        tc.attribute(model, transcoders, "w1 w2", targets=["Paris London"], progress=False)
    with pytest.raises(tc.ConfigError, match=r"shape \(16,\)"):
        tc.attribute(model, transcoders, "w1 w2", targets=[torch.ones(3)], progress=False)


def test_unknown_model_type(transcoders):
    with pytest.raises(tc.ConfigError, match="does not know how to hook"):
        tc.attribute(object(), transcoders, [1, 2], progress=False)


def _graph(model, transcoders, tmp_path):
    g = tc.attribute(model, transcoders, "w1 w2 w3", progress=False)
    path = tmp_path / "g.safetensors"
    g.save(path)
    return g, path


def test_truncated_graph_file(model, transcoders, tmp_path):
    _, path = _graph(model, transcoders, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(tc.FileFormatError, match="truncated or corrupt"):
        tc.Graph.load(path)
    path.write_bytes(b"\x00" * 20)
    with pytest.raises(tc.FileFormatError, match="truncated or corrupt"):
        tc.Graph.load(path)


def test_graph_from_a_newer_format_version(model, transcoders, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    _, path = _graph(model, transcoders, tmp_path)
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["tl_circuits"])
    header["format_version"] = 99
    save_file(load_file(str(path)), str(path), metadata={"tl_circuits": json.dumps(header)})
    with pytest.raises(tc.FileFormatError, match=r"version 99.*upgrade tl_circuits"):
        tc.Graph.load(path)


def test_missing_graph_file(tmp_path):
    with pytest.raises(tc.FileFormatError, match="no graph file"):
        tc.Graph.load(tmp_path / "nope.safetensors")


def test_graph_file_with_out_of_range_edges(model, transcoders, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    _, path = _graph(model, transcoders, tmp_path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    old = {k: v for k, v in tensors.items() if not k.startswith("adjacency")}  # format 1: COO
    rows = torch.repeat_interleave(torch.arange(tensors["adjacency_crow"].numel() - 1),
                                   tensors["adjacency_crow"].diff().long())
    old["adjacency_indices"] = torch.stack([rows, tensors["adjacency_col"].long()])
    old["adjacency_indices"][0, 0] = 10**6
    old["adjacency_values"] = tensors["adjacency_values"]
    save_file(old, str(path), metadata={"tl_circuits": json.dumps(
        {**json.loads(meta["tl_circuits"]), "format_version": 1})})
    with pytest.raises(tc.FileFormatError, match="invalid adjacency"):
        tc.Graph.load(path)
    tensors["adjacency_col"][0] = 10**6
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(tc.FileFormatError, match="invalid adjacency"):
        tc.Graph.load(path)
    del tensors["node_kind"]
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(tc.FileFormatError, match="node_kind"):
        tc.Graph.load(path)
