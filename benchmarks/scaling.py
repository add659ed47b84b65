"""Time and peak memory against prompt length and ``max_feature_nodes``: ours and circuit-tracer.

Same set-up as benchmarks/peer.py (SmolLM2, the same transcoders and token ids, one worker
process per implementation, runs alternating). Each point is the median of ``--repeats`` runs;
peak memory is the worker's resident high-water mark during that run (reset before it). Prints
a Markdown table and draws docs/images/scaling.png.

    python benchmarks/scaling.py [--lengths 16 32 64 128] [--nodes 256 512 1024 2048] [--no-peer]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from _setup import benchmark_transcoders, bos_prompt
from peer import Worker, export, peer_python

DOCS = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--nodes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--fixed-nodes", type=int, default=1024)
    parser.add_argument("--fixed-length", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--demo-transcoders", action="store_true",
                        help="use the cached demo set instead of random TopK (k=32) transcoders")
    args = parser.parse_args()
    from tl_circuits import models

    model = models.load_default()
    transcoders, what = benchmark_transcoders(model, args.demo_transcoders)
    all_tokens = bos_prompt(model, max(args.lengths + [args.fixed_length]))
    points = [("length", n, {"tokens": all_tokens[:n], "max_feature_nodes": args.fixed_nodes})
              for n in args.lengths]
    points += [("nodes", k, {"tokens": all_tokens[: args.fixed_length], "max_feature_nodes": k})
               for k in args.nodes]
    results: dict[tuple[str, int, str], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        export(model, transcoders, all_tokens[: args.fixed_length], out,
               argparse.Namespace(max_feature_nodes=args.fixed_nodes, batch_size=args.batch_size))
        del model
        workers = {"ours": Worker(sys.executable, "ours", out)}
        if not args.no_peer:
            workers["circuit-tracer"] = Worker(peer_python(), "peer", out)
        try:
            for w in workers.values():
                w.ask(cmd="run")  # warm-up
            for axis, x, settings in points:
                settings = {**settings, "batch_size": args.batch_size}
                runs: dict[str, list[dict]] = {k: [] for k in workers}
                for _ in range(args.repeats):
                    for name, w in workers.items():
                        runs[name].append(w.ask(cmd="run", settings=settings))
                for name, rs in runs.items():
                    results[(axis, x, name)] = (statistics.median(r["time"] for r in rs),
                                                max(r["rss_peak_mib"] for r in rs))
                line = "  ".join(f"{n} {results[(axis, x, n)][0]:.2f}s" for n in workers)
                print(f"{axis}={x}: {line}", flush=True)
        finally:
            for w in workers.values():
                w.close()
    names = list(workers)
    print(f"\nSmolLM2-135M-Instruct + {what}; batch {args.batch_size}; medians of {args.repeats}\n")
    header = " | ".join(f"{n} time (s) | {n} peak RSS (MiB)" for n in names)
    for axis, label in (("length", "prompt tokens"), ("nodes", "max_feature_nodes")):
        fixed = (f"max_feature_nodes={args.fixed_nodes}" if axis == "length"
                 else f"{args.fixed_length} tokens")
        print(f"\n{label} ({fixed})\n\n| {label} | {header} |" + (" ratio |" if len(names) == 2 else ""))
        print("|---" * (1 + 2 * len(names) + (len(names) == 2)) + "|")
        for x in args.lengths if axis == "length" else args.nodes:
            cells = " | ".join(f"{results[(axis, x, n)][0]:.2f} | {results[(axis, x, n)][1]:.0f}" for n in names)
            ratio = (f" {results[(axis, x, names[0])][0] / results[(axis, x, names[1])][0]:.2f} |"
                     if len(names) == 2 else "")
            print(f"| {x} | {cells} |{ratio}")
    _plot(results, names, args)


def _plot(results, names, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for col, (axis, xs, label) in enumerate((("length", args.lengths, "prompt tokens"),
                                             ("nodes", args.nodes, "max_feature_nodes"))):
        for name in names:
            axes[0, col].plot(xs, [results[(axis, x, name)][0] for x in xs], "o-", label=name)
            axes[1, col].plot(xs, [results[(axis, x, name)][1] / 1024 for x in xs], "o-", label=name)
        axes[0, col].set_ylabel("wall time (s)")
        axes[1, col].set_ylabel("peak RSS (GiB)")
        for row in range(2):
            axes[row, col].set_xlabel(label)
            axes[row, col].set_xscale("log", base=2)
            axes[row, col].legend()
    fig.suptitle("attribution on SmolLM2-135M, 2-core CPU")
    fig.tight_layout()
    DOCS.mkdir(parents=True, exist_ok=True)
    fig.savefig(DOCS / "scaling.png", dpi=110)
    print(f"\nplot: {DOCS / 'scaling.png'}")


if __name__ == "__main__":
    main()
