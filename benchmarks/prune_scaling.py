"""Time of attribute + prune and peak memory against prompt length (16 to 4,096 tokens; past 2,048
the model is loaded with a context as long as the prompt).

Each run is its own subprocess, so its peak resident memory (``ru_maxrss``) is its own. The model
is SmolLM2 (``load_default``) with the cached demo transcoders (``--transcoders demo``, the
default; random TopK ones with ``random``), or a small random HookedTransformer with
``--model random``. The prompt is English text after a BOS token.

The baseline is the same run with every active feature kept as a node (``feature_pool`` as large
as the number of active features, what tl_circuits did before feature pools): for lengths up to
``--baseline-up-to`` both run and the table prints pooled / baseline ratios. With ``--reference``
the baseline is instead the same pooled run with the straightforward backward passes
(``tl_circuits.attribution.engine.REFERENCE``: no batched frozen-attention products, no causal
prefix), so the ratios are those of the batched backward pass. ``--plot`` draws
docs/images/long_prompt.png.

    python benchmarks/prune_scaling.py --lengths 16 64 256 1024 2048 --max-feature-nodes 256 \\
        --batch-size 16 --baseline-up-to 256 --plot
"""

# ruff: noqa: T201  (a command-line script: printing is its output)
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
EVERY_FEATURE = 10**9  # a feature_pool no prompt reaches: every active feature stays a node


def build(kind: str, transcoders: str, n_ctx: int = 2048):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _setup import benchmark_transcoders, bos_prompt, random_model, random_transcoders

    if kind == "random":
        model = random_model(n_layers=4, d_model=128)
        return model, random_transcoders(model, d_sae=1024), "random 4-layer model", bos_prompt
    from tl_circuits.models import load_default

    model = load_default(n_ctx=max(2048, n_ctx))  # the default context is 2,048 tokens
    tcs, what = benchmark_transcoders(model, transcoders == "demo")
    return model, tcs, f"SmolLM2-135M-Instruct + {what}", bos_prompt


def one(length: int, args: argparse.Namespace, pool: int | None) -> dict:
    import tl_circuits as tc
    from tl_circuits.attribution import engine

    engine.REFERENCE = args.reference_run
    model, transcoders, what, prompt = build(args.model, args.transcoders, length)
    tokens = prompt(model, length)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counter = contextlib.nullcontext()
    if args.flops:
        from _setup import flop_counter

        counter = flop_counter()
    t0 = time.perf_counter()
    with counter:
        graph = tc.attribute(model, transcoders, tokens, max_feature_nodes=args.max_feature_nodes,
                             feature_pool=pool, batch_size=args.batch_size, progress=args.progress,
                             pattern_dtype=args.pattern_dtype)
    t1 = time.perf_counter()
    pruned = graph.prune()
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "length": length, "what": what, "n_active": graph.settings["n_active_features"],
        "n_nodes": graph.n_nodes, "n_edges": int(graph.adjacency._nnz()),
        "pruned_nodes": pruned.n_nodes, "attribute_s": t1 - t0, "prune_s": t2 - t1,
        "peak_mb": peak / 1024, "model_mb": base_rss / 1024, **graph.scores(),
        "gflop": counter.get_total_flops() / 1e9 if args.flops else None,
    }


def run(length: int, args: argparse.Namespace, pool: int | None, reference: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--one", str(length), "--model", args.model,
           "--transcoders", args.transcoders, "--max-feature-nodes", str(args.max_feature_nodes),
           "--batch-size", str(args.batch_size)] + ([] if pool is None else ["--pool", str(pool)])
    cmd += ["--progress"] if args.progress else []
    cmd += ["--reference-run"] if reference else []
    cmd += ["--pattern-dtype", args.pattern_dtype] if args.pattern_dtype else []
    cmd += ["--flops"] if args.flops else []
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(f"  {length} tokens, pool {pool or 'default'}{' (reference backward)' * reference}: attribute {result['attribute_s']:.1f}s "
          f"prune {result['prune_s']:.2f}s peak {result['peak_mb']:.0f} MB", flush=True)
    if result["gflop"] is not None:
        from _setup import matmul_rate

        rate = matmul_rate(2048, 2048, 2048)
        print(f"  attribution counted {result['gflop'] / 1e3:,.1f} TFLOP ({result['gflop'] / result['attribute_s']:.0f} "
              f"GFLOP/s); at this machine's float32 product rate ({rate:.0f} GFLOP/s, 2,048 square) "
              f"they take at least {result['gflop'] / rate:.0f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("default", "random"), default="default")
    parser.add_argument("--transcoders", choices=("demo", "random"), default="demo")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--max-feature-nodes", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--baseline-up-to", type=int, default=128)
    parser.add_argument("--plot", action="store_true")
    parser.add_argument("--progress", action="store_true", help="show each run's progress bars")
    parser.add_argument("--reference", action="store_true",
                        help="baseline: the straightforward backward passes, not every feature kept")
    parser.add_argument("--pattern-dtype", choices=("bfloat16", "float16"), default=None,
                        help="attribute(..., pattern_dtype=): frozen patterns held in 16 bits")
    parser.add_argument("--flops", action="store_true",
                        help="count attribution's FLOPs (PyTorch's counter) and the time they need "
                             "at this machine's matrix-product rate")
    parser.add_argument("--reference-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pool", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args, args.pool)))
        return
    rows = []
    for length in sorted(args.lengths):
        pooled = run(length, args, None)
        base = (None if length > args.baseline_up_to else
                run(length, args, None, reference=True) if args.reference else run(length, args, EVERY_FEATURE))
        rows.append((pooled, base))
    print(f"\n{rows[0][0]['what']}; max_feature_nodes={args.max_feature_nodes}, "
          f"batch_size={args.batch_size}; peak = whole process (model alone: "
          f"{rows[0][0]['model_mb']:.0f} MB)\n")
    print("| tokens | active features | graph nodes | edges | attribute (s) | prune (s) | peak RSS (MB) "
          "| replacement / completeness | baseline: time ratio | peak ratio | prune ratio |")
    print("|---" * 11 + "|")
    for r, b in rows:
        ratios = ("| - | - | - |" if b is None else
                  f"| {(r['attribute_s'] + r['prune_s']) / (b['attribute_s'] + b['prune_s']):.2f} "
                  f"| {r['peak_mb'] / b['peak_mb']:.2f} | {r['prune_s'] / b['prune_s']:.2f} |")
        print(f"| {r['length']} | {r['n_active']:,} | {r['n_nodes']:,} | {r['n_edges']:,} "
              f"| {r['attribute_s']:.1f} | {r['prune_s']:.2f} | {r['peak_mb']:.0f} "
              f"| {r['replacement']:.3f} / {r['completeness']:.3f} {ratios}")
    if args.plot:
        _plot(rows, args)


def _plot(rows, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["length"] for r, _ in rows]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    ax_t.plot(x, [r["attribute_s"] + r["prune_s"] for r, _ in rows], "o-", label="feature pool (default)")
    ax_m.plot(x, [r["peak_mb"] / 1024 for r, _ in rows], "o-", label="feature pool (default)")
    xb = [(r["length"], b) for r, b in rows if b is not None]
    ax_t.plot([n for n, _ in xb], [b["attribute_s"] + b["prune_s"] for _, b in xb], "s--",
              label="every feature a node")
    ax_m.plot([n for n, _ in xb], [b["peak_mb"] / 1024 for _, b in xb], "s--", label="every feature a node")
    ax_t.set_ylabel("attribute + prune (s)")
    ax_m.set_ylabel("peak RSS (GiB)")
    for ax in (ax_t, ax_m):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("prompt tokens")
        ax.legend()
    fig.suptitle(f"SmolLM2-135M, max_feature_nodes={args.max_feature_nodes}, 2-core CPU")
    fig.tight_layout()
    out = Path(__file__).resolve().parents[1] / "docs" / "images" / "long_prompt.png"
    fig.savefig(out, dpi=110)
    print(f"\nplot: {out}")


if __name__ == "__main__":
    main()
