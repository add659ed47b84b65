"""Backward time per row by chunk size on a long prompt, as FLOP rates beside the machine's
matrix-product rate: how fast the row engine's passes are, and which chunk size serves them best
(``engine.CHUNK_POSITIONS``).

For each (layer, last position) asked, rows of that layer at the 64 positions before it are read
in chunks of each size; printed per chunk size: ms per row (``RowEngine.gradients``, the best of
two), GFLOP per row (PyTorch's FLOP counter, with the frozen-pattern products counted as the
triangular blocks they multiply) and GFLOP/s. The first lines are the float32 matrix-product rate
of this machine (a square 2,048 product, and the shape of a projection's backward) measured in the
same process: the ceiling the passes are compared with.

    python benchmarks/chunk_size.py --tokens 2048 --at 15:1024 29:1024 15:2048 --sizes 1 2 4 16
"""

# ruff: noqa: T201  (a command-line script: printing is its output)
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from _setup import benchmark_transcoders, bos_prompt, flop_counter, matmul_rate, timed

    from tl_circuits.attribution.engine import RowEngine, feature_reads
    from tl_circuits.attribution.layout import build_layout
    from tl_circuits.hosts import as_host
    from tl_circuits.models import load_default
    from tl_circuits.replacement import run_replacement

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--at", nargs="+", default=["15:1024", "29:1024", "15:2048"],
                   help="layer:last position of the rows read")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--random-transcoders", action="store_true")
    args = p.parse_args()
    torch.set_grad_enabled(True)

    square, proj = matmul_rate(2048, 2048, 2048), matmul_rate(576, 576, 16384)
    print(f"float32 matrix products: {square:.0f} GFLOP/s (2,048 square), {proj:.0f} GFLOP/s "
          f"(576 x 576 x 16,384); torch threads {torch.get_num_threads()}", flush=True)

    model = load_default(n_ctx=max(2048, args.tokens))
    transcoders, what = benchmark_transcoders(model, not args.random_transcoders)
    tokens = torch.tensor(bos_prompt(model, args.tokens))
    t0 = time.perf_counter()
    state = run_replacement(as_host(model), transcoders, tokens)
    layout = build_layout(state, tokens, model.cfg.n_layers, has_bos=True, n_targets=1)
    print(f"SmolLM2 + {what}; {args.tokens} tokens, {layout.n_features} active features; forward "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    engine = RowEngine(state, layout, transcoders, max(args.sizes), keep_writes=False)
    gen = torch.Generator().manual_seed(0)
    for spec in args.at:
        layer, last = map(int, spec.split(":"))
        near = (layout.feat_layer == layer) & (layout.feat_pos < last) & (layout.feat_pos >= last - 64)
        ids = near.nonzero().flatten()
        for size in args.sizes:
            chosen = ids[torch.randperm(ids.numel(), generator=gen)[:size]].sort().values
            if chosen.numel() < size:
                continue
            reads = feature_reads(layout, transcoders, chosen)
            engine.gradients(reads)  # warm-up
            took = min(timed(lambda: engine.gradients(reads), 2))  # noqa: B023 - called right here
            with flop_counter() as counter:
                engine.gradients(reads)
            flops = counter.get_total_flops()
            print(f"layer {layer}, positions {last - 64}-{last - 1}, chunk {size:3d}: "
                  f"{took / size * 1e3:6.0f} ms/row, {flops / size / 1e9:6.1f} GFLOP/row, "
                  f"{flops / took / 1e9:4.0f} GFLOP/s", flush=True)


if __name__ == "__main__":
    main()
