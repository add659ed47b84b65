"""User errors of ``tl-circuits``: one clear line on stderr, no traceback, a non-zero exit code."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tl_circuits.cli import main


def run_cli(args, tmp_path):
    """``python -m tl_circuits.cli ARGS`` with an empty cache; returns (exit code, stderr lines)."""
    env = {**os.environ, "TL_CIRCUITS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "tl_circuits.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)
    return proc.returncode, proc.stderr.strip().splitlines(), proc.stdout


@pytest.mark.parametrize("args, expected", [
    (["attribute", "The capital of France is", "--model", "/no/such/model"],
     "--model '/no/such/model': /no/such/model does not exist; use --model default"),
    (["attribute", "The capital of France is"], "run `tl-circuits demo --no-serve`"),
    (["attribute", "   "], "the prompt is empty"),
], ids=["unknown-model-path", "missing-transcoders", "empty-prompt"])
def test_attribute_bad_input_is_one_line(args, expected, tmp_path):
    code, err, out = run_cli(args, tmp_path)
    assert code == 2 and out == ""
    assert len(err) == 1, err
    assert err[0].startswith("tl-circuits attribute: error: ") and expected in err[0]


def test_usage_error_is_one_line(tmp_path):
    code, err, _ = run_cli(["attribute"], tmp_path)
    assert code == 2 and len(err) == 1
    assert "the following arguments are required: prompt" in err[0] and "--help" in err[0]


@pytest.mark.parametrize("args, expected", [
    (["prune", "{tmp}/none.safetensors"], "no graph file at"),
    (["export", "{tmp}/none.safetensors", "{tmp}/o.json"], "no graph file at"),
    (["serve", "{tmp}/none.safetensors"], "no graph file at"),
    (["attribute", "x", "--transcoders", "{tmp}/nothing"], "--transcoders {tmp}/nothing: no such folder"),
    (["attribute", "x", "--transcoders", "{tmp}", "--target", "a", "b", "c"], "--target takes one token"),
    (["attribute", "x", "--model", "{tmp}"], "has no config.json"),
    (["intervene", "x", "--set", "1:2=3"], "expected LAYER:POSITION:FEATURE=VALUE"),
    (["intervene", "x"], "nothing to change"),
    (["intervene", "x", "--supernode", "a=1"], "together with --graph"),
    (["serve", "{tmp}", "--transcoders", "{tmp}"], "needs --model too"),
])
def test_other_user_errors_are_messages(args, expected, tmp_path, capsys):
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected.format(tmp=tmp_path) in err, err
