"""Seconds per feature row: one backward pass vmapped over a chunk of read-outs vs one per read-out.

For each prompt length one replacement forward pass is built (SmolLM2 with the cached demo
transcoders, or random TopK ones with ``--transcoders random``), then the same random sample of
active features gets its adjacency rows with both strategies of the row engine
(``tl_circuits.attribution.engine.VMAP_BELOW``), in chunks of ``--batch-size``. The vmapped pass is
the baseline; the table prints the looped / vmapped time ratio, the growth of the peak resident
memory during each (looped first, so the vmapped figure is what it needs beyond the looped run),
and the largest difference between the two sets of rows (the same computation in another order).

    python benchmarks/backward.py --lengths 32 128 512 2048 --rows 16
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
    state = run_replacement(host, transcoders, tokens)
    layout = build_layout(state, tokens, host.n_layers, has_bos=True, n_targets=1)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randperm(layout.n_features, generator=gen)[:n_rows].sort().values  # sorted by layer
    reads = engine.feature_reads(layout, transcoders, ids)
    out = {}
    saved = engine.VMAP_BELOW
    try:
        # Looped first: its peak growth is then measured on a heap that the vmapped run has not
        # already grown (freed memory stays with the allocator); the vmapped run's growth is what
        # it needs beyond the looped run's.
        for name, threshold in (("looped", 0), ("vmapped", batch * length**2 + 1)):
            engine.VMAP_BELOW = threshold
            rows_of = engine.RowEngine(state, layout, transcoders, batch)
            reset_peak()
            before = rss_mib()
            t0 = time.perf_counter()
            rows = rows_of.rows(reads)
            out[name] = ((time.perf_counter() - t0) / ids.numel(), rss_mib() - before, rows)
    finally:
        engine.VMAP_BELOW = saved
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--rows", type=int, default=16, help="feature rows timed per strategy")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--transcoders", choices=("demo", "random"), default="demo")
    args = parser.parse_args()
    from tl_circuits.models import load_default

    model = load_default()
    transcoders, what = benchmark_transcoders(model, args.transcoders == "demo")
    print(f"SmolLM2-135M-Instruct + {what}; {args.rows} random active features, chunks of "
          f"{args.batch_size}; torch threads: {torch.get_num_threads()}\n")
    print("| tokens | vmapped (s/row) | looped (s/row) | looped / vmapped | peak growth vmapped / looped (MB) "
          "| max row difference (relative) |")
    print("|---" * 6 + "|")
    for length in args.lengths:
        r = rows_per_strategy(model, transcoders, length, args.rows, args.batch_size)
        (tv, mv, rv), (tl, ml, rl) = r["vmapped"], r["looped"]
        diff = float((rv - rl).abs().max() / rv.abs().max())
        print(f"| {length} | {tv:.3f} | {tl:.3f} | {tl / tv:.2f} | {mv:,.0f} / {ml:,.0f} | {diff:.1e} |",
              flush=True)


if __name__ == "__main__":
    main()
