"""Runs ``remote_cases.py`` and ``remote_families.py`` (attribution as one nnsight trace, through
nnsight's stand-in for a remote server) in a fresh pytest process without the suite's jaxtyping import
hook: the hook wraps tl_circuits functions in runtime checkers holding weak references, which
cannot be pickled, and a remote request pickles our code by value."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


def _run_in_a_clean_process(module: str) -> str:
    """``pytest tests/hosts/{module}`` in a fresh process, without the jaxtyping hook or xdist;
    its output (the test fails with the tail of it when the run fails)."""
    pytest.importorskip("nnsight")
    here = Path(__file__).parent
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
         "-o", "addopts=", "-o", f"python_files={module}", "-W", "error::RuntimeWarning",
         str(here / module)],
        cwd=here.parent.parent, capture_output=True, text=True, timeout=600,
    )
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    return proc.stdout


def test_remote_cases_pass_in_a_clean_process():
    out = _run_in_a_clean_process("remote_cases.py")
    assert "9 passed" in out, out[-3000:]


def test_remote_families_pass_in_a_clean_process():
    """The same, for Gemma-3, OLMo-2, Qwen3-MoE and automatic sites (``remote_families.py``)."""
    out = _run_in_a_clean_process("remote_families.py")
    assert re.search(r"^5 passed", out, re.MULTILINE), out[-3000:]
