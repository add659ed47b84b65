"""Training speed in one process: tokens per second with the transcoder products in float32 vs
bfloat16 (same steps, same batches: the held-out FVU must agree within 1% relative), and with
streamed vs buffered activations (``reuse``; same time budget: held-out FVU reached per minute).

    python benchmarks/train_speed.py [--steps 40] [--seconds 120] [--reuse 4]

Defaults train SmolLM2-135M's demo shape (TopK, skip, d_sae 1024, k 32, batch 8 x 128) on the
default corpus. Printed: one line per run, then the ratios against the first run of each pair.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import tl_circuits as tc
from tl_circuits.training.stack import TranscoderStack


def run(model, texts, *, label: str, **kw) -> dict[str, float]:
    t0 = time.perf_counter()
    result = tc.train_transcoders(model, texts, progress=False, **kw)
    wall = time.perf_counter() - t0
    training = result[0].cfg["training"]
    seconds = training["train_seconds"]
    tokens = training["steps_done"] * training["batch"] * (training["ctx_len"] - 1)
    fvu = sum(t.cfg["metrics"]["fvu"] for t in result) / len(result)
    out = {"steps": training["steps_done"], "train_s": seconds, "tok_s": tokens / seconds,
           "fvu": fvu, "wall_s": wall}
    print(f"{label:34s} {out['steps']:5d} steps in {seconds:6.1f} s = {out['tok_s']:7.0f} tokens/s; "
          f"held-out FVU {fvu:.4f} (run incl. evaluation {wall:.0f} s)", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40, help="steps of each float32/bfloat16 run")
    p.add_argument("--seconds", type=float, default=120.0, help="time budget of each streamed/buffered run")
    p.add_argument("--reuse", type=int, default=4)
    p.add_argument("--eval-fraction", type=float, default=0.02,
                   help="held-out share of the corpus (2%%: about 24 contexts)")
    args = p.parse_args()
    torch.set_grad_enabled(True)
    from tl_circuits.loading import BUDGETS, default_model
    from tl_circuits.training.corpus import default_texts

    model = default_model()
    texts = default_texts()
    base = {k: v for k, v in BUDGETS["default"].items() if k not in ("minutes", "reuse", "steps")}
    base["eval_fraction"] = args.eval_fraction
    print(f"torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}; settings {base}")

    TranscoderStack.bf16_products = False
    f32 = run(model, texts, label="float32 products, streamed", steps=args.steps, **base)
    TranscoderStack.bf16_products = True
    bf16 = run(model, texts, label="bfloat16 products, streamed", steps=args.steps, **base)
    streamed = run(model, texts, label="streamed, time budget", steps=100_000,
                   time_budget=args.seconds, **base)
    cached = run(model, texts, label=f"buffered (reuse {args.reuse}), time budget", steps=100_000,
                 time_budget=args.seconds, reuse=args.reuse, **base)
    print(f"bfloat16 / float32: {bf16['tok_s'] / f32['tok_s']:.2f}x tokens/s, held-out FVU "
          f"{bf16['fvu']:.4f} vs {f32['fvu']:.4f} ({(bf16['fvu'] / f32['fvu'] - 1):+.2%} relative)")
    print(f"buffered / streamed: {cached['tok_s'] / streamed['tok_s']:.2f}x tokens/s; held-out FVU "
          f"after {args.seconds:g} s: {cached['fvu']:.4f} vs {streamed['fvu']:.4f}")
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
