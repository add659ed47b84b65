"""``torchrun --nproc_per_node 2`` (gloo, CPU) trains what one process trains on the same global
batches: a data-parallel per-layer set and a feature-sharded cross-layer transcoder, from the
model or from an activation cache; checkpoints written by 2 processes resume on 1 and the other
way to the uninterrupted weights; a world size that does not divide d_sae is a clear error.

One ``torchrun`` launch runs every 2-process job (tests/training/dist_worker.py); the 1-process
runs happen in this process, with the same float32 encoders. About a minute on 2 shared cores,
so marked slow (CI runs it).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.tiny import VOCAB
from tests.training import dist_worker
from tl_circuits import CrossLayerTranscoder, TranscoderSet
from tl_circuits.training.checkpoint import checkpoint_dir
from tl_circuits.training.stack import TranscoderStack

pytestmark = pytest.mark.slow

BASE = dict(d_sae=32, k=4, batch=4, ctx_len=16, steps=8, lr=1e-2, checkpoint_every=4,
            progress=False, bfloat16_model=False)
JOBS = {
    "plt": dict(BASE),
    "plt_jumprelu": dict(BASE, kind="jumprelu", sparsity_coef=1e-2),
    "clt": dict(BASE, cross_layer=True, skip=True),
    "clt_jumprelu": dict(BASE, cross_layer=True, kind="jumprelu", sparsity_coef=1e-2),
    "plt_cached": dict(BASE, cache_dir="CACHE"),
}


def _texts():
    rng = random.Random(4)
    phrases = [" ".join(rng.choice(VOCAB[2:]) for _ in range(4)) for _ in range(10)]
    return [" ".join(rng.choice(phrases) for _ in range(40)) for _ in range(8)]


def _train(host, texts, out, kwargs, stop_after=None):
    dist_worker.run_job(host, texts, {"out": str(out), "kwargs": kwargs, "stop_after": stop_after})


def _fix(kwargs, tmp):
    return {k: (str(tmp / "cache") if v == "CACHE" else v) for k, v in kwargs.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run: ``one/NAME`` (1 process), ``two/NAME`` (2 processes), the resumed ones."""
    tmp = tmp_path_factory.mktemp("dist")
    texts = _texts()
    patch = pytest.MonkeyPatch()
    patch.setattr(TranscoderStack, "bf16_products", False)
    host = dist_worker.model()
    try:
        for name, kwargs in JOBS.items():
            _train(host, texts, tmp / "one" / name, _fix(kwargs, tmp / "one"))
        # 1 process writes a checkpoint at step 4 (stopped after step 5) that 2 processes resume
        _train(host, texts, tmp / "one_to_two", JOBS["plt"], stop_after=5)
        _train(host, texts, tmp / "one_to_two_clt", JOBS["clt"], stop_after=5)
        # a 1-process checkpoint of a CLT whose 31 features 2 processes cannot share
        _train(host, texts, tmp / "odd", dict(BASE, cross_layer=True, d_sae=31), stop_after=5)
        odd_before = {p.name: p.read_bytes() for p in checkpoint_dir(tmp / "odd").iterdir()}
        jobs = [{"out": str(tmp / "two" / n), "kwargs": _fix(k, tmp / "two")} for n, k in JOBS.items()]
        jobs += [
            {"out": str(tmp / "one_to_two"), "kwargs": JOBS["plt"]},
            {"out": str(tmp / "one_to_two_clt"), "kwargs": JOBS["clt"]},
            {"out": str(tmp / "two_to_one"), "kwargs": JOBS["clt"], "stop_after": 5},
            {"out": str(tmp / "two_to_one_plt"), "kwargs": JOBS["plt"], "stop_after": 5},
            {"out": str(tmp / "odd"), "kwargs": dict(BASE, cross_layer=True, d_sae=31)},
            {"out": str(tmp / "odd_batch"), "kwargs": dict(BASE, batch=3)},
        ]
        spec = tmp / "spec.json"
        spec.write_text(json.dumps({"texts": texts, "jobs": jobs}), encoding="utf-8")
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1",
               "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
             "--standalone", str(root / "tests/training/dist_worker.py"), str(spec)],
            env=env, cwd=root, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        for name in ("two_to_one", "two_to_one_plt"):
            assert checkpoint_dir(tmp / name).is_dir() and not (tmp / name).exists()
            _train(host, texts, tmp / name, JOBS["clt" if name == "two_to_one" else "plt"])
        assert {p.name: p.read_bytes() for p in checkpoint_dir(tmp / "odd").iterdir()} == odd_before
    finally:
        patch.undo()
    return tmp


def _load(path):
    return CrossLayerTranscoder.load(path) if (path / "config.json").is_file() else TranscoderSet.load(path)


def _tensors(result):
    if isinstance(result, CrossLayerTranscoder):
        return [t for la in result.layers for t in (result.W_enc(la), result.W_dec(la), result.b_dec(la))]
    return [t for tcd in result for t in (tcd.W_enc, tcd.W_dec, tcd.b_enc, tcd.b_dec)]


def _assert_same(a_dir, b_dir):
    a, b = _tensors(_load(a_dir)), _tensors(_load(b_dir))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.shape == y.shape
        rel = float((x - y).abs().max() / y.abs().max().clamp_min(1e-12))
        assert rel <= 1e-5, rel


@pytest.mark.parametrize("name", list(JOBS))
def test_two_processes_train_what_one_trains(runs, name):
    _assert_same(runs / "two" / name, runs / "one" / name)


@pytest.mark.parametrize("written,reference", [
    ("one_to_two", "plt"), ("one_to_two_clt", "clt"), ("two_to_one", "clt"), ("two_to_one_plt", "plt"),
])
def test_checkpoints_resume_with_another_number_of_processes(runs, written, reference):
    _assert_same(runs / written, runs / "one" / reference)
    assert not checkpoint_dir(runs / written).exists()


def test_sizes_that_do_not_divide_by_the_world_are_clear_errors(runs):
    odd = (runs / "odd.error").read_text(encoding="utf-8")
    assert "d_sae=31 is not a multiple of 2" in odd and "d_sae=32" in odd
    assert "batch that is a multiple of 2" in (runs / "odd_batch.error").read_text(encoding="utf-8")
    assert not (runs / "odd").exists()  # and its 1-process checkpoint is intact (see runs)


def test_a_cache_built_by_two_processes_is_read_by_one(runs):
    # the 2-process cache holds the same shards (token hashes) as the 1-process one
    one = sorted(p.name for p in (runs / "one" / "cache").rglob("*.safetensors"))
    two = sorted(p.name for p in (runs / "two" / "cache").rglob("*.safetensors"))
    assert one == two and one
