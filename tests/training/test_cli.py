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
