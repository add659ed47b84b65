"""The ``tl-circuits`` command line: parsing, and errors reported as messages with exit code 2."""

from __future__ import annotations

import pytest

from tl_circuits.cli import build_parser, main


def test_train_arguments_parse_with_defaults():
    args = build_parser().parse_args(["train", "--out", "x", "--cross-layer", "--k", "16"])
    assert (args.out, args.cross_layer, args.k, args.kind, args.skip) == ("x", True, 16, "topk", False)
    assert args.hook_out == "blocks.{l}.hook_mlp_out"


def test_bad_input_is_a_message_and_exit_code_2(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "o"), "--model", "gpt2"]) == 2
    assert "--model default" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "o"), "--texts", str(tmp_path / "none.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_subcommand_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["fly"])
    assert exc.value.code == 2


def test_train_reads_a_corpus_and_caches_its_activations(tmp_path, capsys):
    import json

    import torch

    from tests.core.tiny import tiny_tokenizer
    from tests.hosts.hf_tiny import hf_model
    from tl_circuits import TranscoderSet

    folder = tmp_path / "tiny-llama"
    hf_model("llama", dtype=torch.float32, seed=5).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"body": " ".join(f"w{i % 40}" for i in range(j, j + 60))})
                              + "\n" for j in range(12)), encoding="utf-8")
    common = ["train", "--model", str(folder), "--steps", "2", "--corpus", str(corpus),
              "--ctx-len", "16", "--batch", "2", "--d-sae", "32", "--k", "4",
              "--cache-dir", str(tmp_path / "cache")]
    assert main([*common, "--out", str(tmp_path / "missing-field")]) == 2
    assert "has no field 'text' (it has ['body'])" in capsys.readouterr().err
    assert main([*common, "--field", "body", "--out", str(tmp_path / "tc")]) == 0, capsys.readouterr().err
    assert TranscoderSet.load(tmp_path / "tc").layers == [0, 1, 2]
    assert list((tmp_path / "cache").rglob("shard_00000.safetensors"))
