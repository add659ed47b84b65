"""Seconds per feature row: the batched backward pass against the straightforward one.

For each prompt length a replacement forward pass is built per strategy (SmolLM2 with the cached
demo transcoders, or random TopK ones with ``--transcoders random``), then the same random sample
of active features gets its adjacency rows, in chunks of ``--batch-size``:
- ``reference``: what the engine did before the batched frozen-attention products
  (``tl_circuits.attribution.engine.REFERENCE``): a vmapped pass per chunk while
  ``batch * positions**2 < VMAP_BELOW``, else one pass per read-out;
- ``batched``: the engine now (:mod:`tl_circuits.replacement.frozen_attention`): one vmapped pass
  per chunk, the patterns multiplying all read-outs at once, on the chunk's causal prefix.
The table prints both times per row, their ratio, the batched time per row relative to the first
length's, the growth of peak resident memory during each (reference first), and the largest
difference between the two sets of rows (the same computation in another order).

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
        for name in ("reference", "batched"):
            engine.REFERENCE = name == "reference"
            state = run_replacement(host, transcoders, tokens, batched_patterns=name == "batched")
            layout = build_layout(state, tokens, host.n_layers, has_bos=True, n_targets=1)
            gen = torch.Generator().manual_seed(0)
            ids = torch.randperm(layout.n_features, generator=gen)[:n_rows].sort().values  # by layer
            reads = engine.feature_reads(layout, transcoders, ids)
            rows_of = engine.RowEngine(state, layout, transcoders, batch)
            reset_peak()
            before = rss_mib()
            t0 = time.perf_counter()
            rows = rows_of.rows(reads)
            out[name] = ((time.perf_counter() - t0) / ids.numel(), rss_mib() - before, rows)
            del state, rows_of
    finally:
        engine.REFERENCE = False
    return out


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
    print("| tokens | reference (s/row) | batched (s/row) | reference / batched | batched per row / "
          "first length's | peak growth reference / batched (MB) | max row difference (relative) |")
    print("|---" * 7 + "|")
    first = None
    for length in args.lengths:
        r = rows_per_strategy(model, transcoders, length, args.rows, args.batch_size)
        (tr, mr, rr), (tb, mb, rb) = r["reference"], r["batched"]
        first = tb if first is None else first
        diff = float((rb - rr).abs().max() / rr.abs().max())
        print(f"| {length} | {tr:.3f} | {tb:.3f} | {tr / tb:.2f} | {tb / first:.1f} | {mr:,.0f} / {mb:,.0f} "
              f"| {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
