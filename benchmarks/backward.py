"""Seconds per feature row: the batched backward pass against the straightforward one.

For each prompt length a replacement forward pass is built per strategy (SmolLM2 with the cached
demo transcoders, or random TopK ones with ``--transcoders random``), then the same random sample
of active features gets its adjacency rows, in chunks of ``--batch-size``:
- ``reference``: what the engine did before the batched frozen-attention products
  (``tl_circuits.attribution.engine.REFERENCE``): a vmapped pass per chunk while
  ``batch * positions**2 < VMAP_BELOW``, else one pass per read-out;
- ``whole``: the batched pass on the prompt's forward pass (:mod:`tl_circuits.replacement.frozen_attention`):
  one vmapped pass per chunk, the patterns multiplying all read-outs at once on the chunk's
  causal prefix, every other operation over the whole prompt (``engine.PREFIX_STEP`` out of reach);
- ``batched``: the engine now: the same, on a forward pass of the chunk's prefix
  (``engine.PREFIX_STEP``). Making those passes (one per prefix length, kept for the engine's
  life: attribution makes each once for thousands of rows) is timed apart and left out of the
  time per row.
The table prints the times per row, the ratios, the batched time per row relative to the first
length's, the growth of peak resident memory during each, and the largest difference between
the reference's rows and the batched ones (the same computation in another order).

    python benchmarks/backward.py --lengths 128 512 2048 --rows 32 --batch-size 16
"""

# ruff: noqa: T201  (a command-line script: printing is its output)
from __future__ import annotations

import argparse
import os
import time

import torch
from _setup import benchmark_transcoders, bos_prompt  # benchmarks/ is on the path as a script
from _worker import reset_peak, rss_mib

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rows_per_strategy(model, transcoders, length: int, n_rows: int, batch: int) -> dict[str, tuple]:
    from tl_circuits.attribution import engine
    from tl_circuits.attribution.layout import build_layout
    from tl_circuits.hosts import as_host
    from tl_circuits.replacement import run_replacement

    host = as_host(model)
    tokens = torch.tensor(bos_prompt(model, length))
    out = {}
    try:
        # Reference first: its peak growth is then measured on a heap that the batched run has
        # not already grown (freed memory stays with the allocator).
        step = engine.PREFIX_STEP
        for name in ("reference", "whole", "batched"):
            engine.REFERENCE = name == "reference"
            engine.PREFIX_STEP = step if name == "batched" else 10**9
            state = run_replacement(host, transcoders, tokens, batched_patterns=name != "reference")
            layout = build_layout(state, tokens, host.n_layers, has_bos=True, n_targets=1)
            gen = torch.Generator().manual_seed(0)
            ids = torch.randperm(layout.n_features, generator=gen)[:n_rows].sort().values  # by layer
            reads = engine.feature_reads(layout, transcoders, ids)
            rows_of = engine.RowEngine(state, layout, transcoders, batch)
            made = [0.0]
            if state.prefix is not None:
                state.prefix = _timed(state.prefix, made)
            reset_peak()
            before = rss_mib()
            t0 = time.perf_counter()
            rows = rows_of.rows(reads)
            spent = time.perf_counter() - t0 - made[0]
            out[name] = (spent / ids.numel(), rss_mib() - before, rows, made[0], len(rows_of._prefixes))
            del state, rows_of
    finally:
        engine.REFERENCE = False
        engine.PREFIX_STEP = step
    return out


def _timed(fn, spent: list[float]):
    def run(n: int):
        t0 = time.perf_counter()
        try:
            return fn(n)
        finally:
            spent[0] += time.perf_counter() - t0

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--rows", type=int, default=16, help="feature rows timed per strategy")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--transcoders", choices=("demo", "random"), default="demo")
    args = parser.parse_args()
    from tl_circuits.models import load_default

    model = load_default()
    transcoders, what = benchmark_transcoders(model, args.transcoders == "demo")
    print(f"SmolLM2-135M-Instruct + {what}; {args.rows} random active features, chunks of "
          f"{args.batch_size}; torch threads: {torch.get_num_threads()}\n")
    print("| tokens | reference (s/row) | whole prompt (s/row) | batched (s/row) | reference / batched "
          "| whole / batched | batched per row / first length's | peak growth reference / whole / "
          "batched (MB) | prefix passes made (s) | max row difference (relative) |")
    print("|---" * 10 + "|")
    first = None
    for length in args.lengths:
        r = rows_per_strategy(model, transcoders, length, args.rows, args.batch_size)
        (tr, mr, rr, _, _), (tw, mw, rw, _, _), (tb, mb, rb, made, n_made) = (
            r["reference"], r["whole"], r["batched"])
        first = tb if first is None else first
        diff = max(float((x - rr).abs().max() / rr.abs().max()) for x in (rw, rb))
        print(f"| {length} | {tr:.3f} | {tw:.3f} | {tb:.3f} | {tr / tb:.2f} | {tw / tb:.2f} | {tb / first:.1f} "
              f"| {mr:,.0f} / {mw:,.0f} / {mb:,.0f} | {n_made} ({made:.1f} s) | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
