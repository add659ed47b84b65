"""Run by ``torchrun`` from tests/training/test_distributed.py: train the jobs of a JSON spec.

Each job is ``{"out": DIR, "kwargs": {...}, "stop_after": STEP | null}``: ``train_transcoders``
on the tiny Hugging Face Llama of :func:`model` with the spec's texts, stopped (as by Ctrl-C)
after step ``stop_after``; rank 0 writes the result, an interrupted job leaves its checkpoint.
A job's ConfigError is written to ``DIR.error`` (by rank 0) instead of failing the launch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def model():
    """The model every distributed test trains on (the same in the test process)."""
    from tests.core.tiny import tiny_tokenizer
    from tests.hosts.hf_tiny import hf_model
    from tl_circuits.hosts.hf import HFHost

    return HFHost(hf_model("llama", dtype=torch.float32, seed=3), tiny_tokenizer())


def run_job(host, texts, job) -> None:
    import tl_circuits as tc

    def stop(step, metrics):
        if job.get("stop_after") is not None and step == job["stop_after"]:
            raise KeyboardInterrupt

    try:
        tc.train_transcoders(host, texts, out_dir=job["out"], callback=stop, **job["kwargs"])
    except KeyboardInterrupt:
        pass
    except tc.ConfigError as exc:
        import torch.distributed as dist

        if not dist.is_initialized() or dist.get_rank() == 0:
            Path(job["out"] + ".error").write_text(str(exc), encoding="utf-8")


def main(spec_path: str) -> None:
    from tl_circuits.training.stack import TranscoderStack

    # float32 encoders: with bfloat16 pre-activations, TopK meets ties whose winner is arbitrary
    TranscoderStack.bf16_products = False
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    host = model()
    for job in spec["jobs"]:
        run_job(host, spec["texts"], job)


if __name__ == "__main__":
    main(sys.argv[1])
