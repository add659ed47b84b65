"""Training bounded by time, buffered activations reused across steps, and a killed run that
resumes from its last checkpoint without a half-written output."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import VOCAB, tiny_model
from tests.training.test_train import SMALL, _weights
from tl_circuits import ConfigError, TranscoderSet
from tl_circuits.training import train as train_mod
from tl_circuits.training.buffer import ActivationBuffer
from tl_circuits.training.checkpoint import checkpoint_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", dtype=torch.float32, tokenizer=True, seed=21)


@pytest.fixture(scope="module")
def texts():  # as test_train's: repeated phrases, something to learn
    rng = random.Random(0)
    phrases = [" ".join(rng.choice(VOCAB[2:]) for _ in range(4)) for _ in range(12)]
    return [" ".join(rng.choice(phrases) for _ in range(60)) for _ in range(8)]


class FakeClock:
    """``time.perf_counter`` that only moves when a test advances it (one second per step)."""

    def __init__(self) -> None:
        self.t = 0.0

    def perf_counter(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(train_mod, "time", fake)
    return fake


def test_time_budget_stops_training_and_resumes_with_the_time_left(model, texts, tmp_path, clock):
    lrs = []

    def tick(step, metrics):
        lrs.append(step)
        clock.t += 1.0

    result = tc.train_transcoders(model, texts, steps=1000, time_budget=10.0, lr=1e-2,
                                  out_dir=tmp_path / "a", callback=tick, **SMALL)
    assert len(lrs) == 10  # steps 0..9 start before 10 s are spent; step 10 does not
    training = result[0].cfg["training"]
    assert training["steps_done"] == 10 and training["time_budget"] == 10
    assert training["train_seconds"] == 10.0
    assert all(t.cfg["metrics"]["fvu"] < 1.0 for t in result)
    assert TranscoderSet.load(tmp_path / "a")[0].cfg["training"]["steps_done"] == 10

    # Interrupted after 6 s (6 steps): the checkpoint keeps the seconds spent, and the resumed
    # run trains only for the 4 s left.
    def interrupt(step, metrics):
        clock.t += 1.0
        if step == 5:
            raise KeyboardInterrupt

    clock.t = 0.0
    with pytest.raises(KeyboardInterrupt):
        tc.train_transcoders(model, texts, steps=1000, time_budget=10.0, lr=1e-2,
                             out_dir=tmp_path / "b", callback=interrupt, **SMALL)
    state = json.loads((checkpoint_dir(tmp_path / "b") / "state.json").read_text())
    assert state["step"] == 6 and state["seconds"] == 6.0
    ran = []
    clock.t = 100.0  # another process: its clock starts anywhere

    def tick2(step, metrics):
        ran.append(step)
        clock.t += 1.0

    resumed = tc.train_transcoders(model, texts, steps=1000, time_budget=10.0, lr=1e-2,
                                   out_dir=tmp_path / "b", callback=tick2, **SMALL)
    assert ran == [6, 7, 8, 9]
    assert resumed[0].cfg["training"]["steps_done"] == 10
    assert resumed[0].cfg["training"]["train_seconds"] == 10.0


def test_time_budget_warm_up_is_short():
    # Warm-up by steps (at most 20; the decay to 0 over the last 20% of the budget follows the
    # clock, in train_transcoders).
    assert train_mod._lr_factor(0, 1000, decay=False) == pytest.approx(1 / 20)
    assert train_mod._lr_factor(19, 1000, decay=False) == 1.0
    assert train_mod._lr_factor(999, 1000, decay=False) == 1.0
    assert train_mod._lr_factor(0, 40, decay=False) == 0.5


def test_buffer_serves_every_token_once_per_pass_and_runs_the_model_once_per_fill():
    calls = []

    def fetch(ids):
        calls.append(ids.tolist())
        # Token t of context c: the value 100 * c + t, at every "layer" (2 layers, d = 1).
        tok = (100 * ids[:, None] + torch.arange(3)[None]).reshape(-1).float()
        x = torch.stack([tok, tok])[..., None]
        return x, -x

    def batch_ids(step):
        return torch.tensor([2 * step, 2 * step + 1])  # 2 contexts (6 tokens) a step

    buf = ActivationBuffer(fetch, batch_ids, n_batches=3, reuse=2, seed=0, chunk=2)
    served = [buf.get(step) for step in range(12)]
    assert buf.forwards == 6 and len(calls) == 6  # 2 fills x 3 chunks of 2 contexts
    assert calls[:3] == [[0, 1], [2, 3], [4, 5]] and calls[3:] == [[6, 7], [8, 9], [10, 11]]
    for x, y in served:
        assert x.shape == (2, 6, 1) and x.dtype == torch.float32 and torch.equal(y, -x)
    everything = sorted(100 * c + t for c in range(6) for t in range(3))
    for first in (0, 3):  # each pass (3 steps) over the first fill's 18 tokens serves each once
        got = torch.cat([served[s][0][0, :, 0] for s in range(first, first + 3)])
        assert sorted(got.tolist()) == everything
    assert not torch.equal(served[0][0], served[3][0])  # a new order in the second pass
    again = ActivationBuffer(fetch, batch_ids, n_batches=3, reuse=2, seed=0, chunk=2)
    assert torch.equal(again.get(4)[0], served[4][0])  # a step's tokens depend on the step only


def test_reused_activations_learn_and_resume_exactly(model, texts, tmp_path):
    settings = dict(steps=12, checkpoint_every=4, reuse=3, buffer_batches=2, lr=1e-2, **SMALL)
    full = tc.train_transcoders(model, texts, out_dir=tmp_path / "a", **settings)
    assert sum(t.cfg["metrics"]["fvu"] for t in full) / 3 < 0.9
    assert full[0].cfg["training"]["reuse"] == 3

    def interrupt(step, metrics):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tc.train_transcoders(model, texts, out_dir=tmp_path / "b", callback=interrupt, **settings)
    resumed = tc.train_transcoders(model, texts, out_dir=tmp_path / "b", **settings)
    for a, b in zip(_weights(full), _weights(resumed)):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)


def test_bad_budgets_raise_config_errors(model, texts):
    with pytest.raises(ConfigError, match="time_budget=0.0"):
        tc.train_transcoders(model, texts, steps=1, time_budget=0.0, **SMALL)
    with pytest.raises(ConfigError, match="reuse=0"):
        tc.train_transcoders(model, texts, steps=1, reuse=0, **SMALL)


def _checkpoint_step(ckpt: Path) -> int:
    try:
        return int(json.loads((ckpt / "state.json").read_text())["step"])
    except (OSError, ValueError):  # not written yet, or being replaced right now
        return -1


def test_a_checkpoint_caught_between_its_two_renames_is_recovered(tmp_path):
    # A kill between atomic_path's two renames leaves the previous checkpoint under its
    # ".old-PID" name and none at the final path: it is taken back, not lost.
    from tl_circuits.training.checkpoint import recover_checkpoint

    ckpt = tmp_path / ".tc.checkpoint"
    old = tmp_path / "..tc.checkpoint.old-1234"  # atomic_path: f".{name}.old-{pid}"
    old.mkdir()
    (old / "state.json").write_text('{"step": 9}')
    assert recover_checkpoint(ckpt) and _checkpoint_step(ckpt) == 9 and not old.exists()
    assert not recover_checkpoint(tmp_path / ".other.checkpoint")


KILLED_RUN = """
import random, sys, time
import torch
import tl_circuits as tc
from tests.core.tiny import VOCAB, tiny_model
model = tiny_model("llama", dtype=torch.float32, tokenizer=True, seed=21)
rng = random.Random(0)
phrases = [" ".join(rng.choice(VOCAB[2:]) for _ in range(4)) for _ in range(12)]
texts = [" ".join(rng.choice(phrases) for _ in range(60)) for _ in range(8)]
def slow(step, metrics):
    print(step, flush=True)
    time.sleep(0.15)
tc.train_transcoders(model, texts, steps=400, checkpoint_every=3, out_dir=sys.argv[1],
                     callback=slow, d_sae=32, k=4, batch=4, ctx_len=16, progress=False,
                     bfloat16_model=False)
"""


def test_a_killed_run_resumes_from_its_last_checkpoint_and_leaves_no_half_written_set(
    model, texts, tmp_path
):
    out = tmp_path / "tc"
    ckpt = checkpoint_dir(out)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600  # a loaded machine: the wait ends at the checkpoint
        while _checkpoint_step(ckpt) < 6:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint at step 6 within 10 minutes"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)  # no handler runs: the worst case
        proc.wait()
    assert proc.stdout is not None
    last_step = max(int(s) for s in proc.stdout.read().split())
    saved = json.loads((ckpt / "state.json").read_text())["step"]
    assert saved >= 6 and last_step + 1 - saved < 3  # at most one checkpoint interval lost
    assert not out.exists()  # the output appears whole at the end, or not at all
    ran = []
    resumed = tc.train_transcoders(model, texts, steps=400, checkpoint_every=3, out_dir=out,
                                   callback=lambda s, m: ran.append(s), **SMALL)
    assert ran[0] == saved and ran[-1] == 399
    assert (out / "layer_2").is_dir() and not ckpt.exists()
    assert isinstance(resumed, TranscoderSet)


def test_a_fill_that_would_overrun_the_budget_is_not_started(model, texts, tmp_path, clock,
                                                             monkeypatch):
    # Each fill of the buffer (the model forwards) "takes" 3 s of the fake clock, each step 1 s:
    # with 2 steps per fill, fills start at 0 s and 5 s; at 10 s one more fill would end past
    # the 11 s budget, so training stops there instead of overrunning it.
    from tl_circuits.training import buffer as buffer_mod

    monkeypatch.setattr(buffer_mod, "time", clock)
    real_fill = buffer_mod.ActivationBuffer._fill

    def slow_fill(self, cycle):
        start = clock.t
        real_fill(self, cycle)
        clock.t += 3.0
        self.fill_seconds = clock.t - start

    monkeypatch.setattr(buffer_mod.ActivationBuffer, "_fill", slow_fill)
    ran = []

    def tick(step, metrics):
        ran.append(step)
        clock.t += 1.0

    result = tc.train_transcoders(model, texts, steps=1000, time_budget=11.0, reuse=2,
                                  buffer_batches=1, callback=tick, **SMALL)
    assert ran == [0, 1, 2, 3] and result[0].cfg["training"]["steps_done"] == 4


def test_demo_budget_trains_for_minutes_in_a_folder_named_by_its_settings():
    from tl_circuits.loading import BUDGETS, demo_dir, train_settings

    settings = train_settings("default")
    assert settings["time_budget"] == 60 * BUDGETS["default"]["minutes"]
    assert "minutes" not in settings and settings["reuse"] == BUDGETS["default"]["reuse"]
    name = demo_dir("default").name
    assert name.endswith(f"-m{BUDGETS['default']['minutes']:g}-r{BUDGETS['default']['reuse']}-facts-gen1")
    assert "time_budget" not in train_settings("small")


def test_cli_minutes_and_reuse_reach_train_transcoders(monkeypatch, tmp_path):
    import tl_circuits.training as training_pkg
    from tl_circuits.cli import build as build_mod
    from tl_circuits.cli import main

    seen = {}
    monkeypatch.setattr(build_mod, "model_loader", lambda spec: lambda: "model")
    monkeypatch.setattr(training_pkg, "train_transcoders", lambda model, texts, **kw: seen.update(kw))
    text = tmp_path / "t.txt"
    text.write_text("some text")
    assert main(["train", "--out", str(tmp_path / "o"), "--texts", str(text), "--minutes", "2.5",
                 "--reuse", "3"]) == 0
    assert seen["time_budget"] == 150.0 and seen["reuse"] == 3
    assert main(["train", "--out", str(tmp_path / "o"), "--texts", str(text)]) == 0
    assert seen["time_budget"] is None and seen["reuse"] == 1


def test_a_time_budgeted_run_checkpoints_every_minute(model, texts, tmp_path, clock):
    seen = []

    def tick(step, metrics):
        clock.t += 25.0  # 25 s a step: a minute has passed after step 3 (75 s) and step 6 (150 s)
        ckpt = checkpoint_dir(tmp_path / "a") / "state.json"
        seen.append(json.loads(ckpt.read_text())["step"] if ckpt.is_file() else None)
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tc.train_transcoders(model, texts, steps=1000, time_budget=600.0, checkpoint_every=50,
                             out_dir=tmp_path / "a", callback=tick, **SMALL)
    assert seen == [None, None, None, 4, 4, 4, 7, 7]  # a checkpoint holds the steps done
