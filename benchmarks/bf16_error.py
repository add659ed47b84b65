"""Edge error of bfloat16 attribution against float32: which edges are off, and by how much.

SmolLM2 (``load_default``) in float32, attributed in float32 (the reference) and in each variant:
``pass``: ``attribute(..., dtype=torch.bfloat16)``, the whole pass in bfloat16 on a cast copy of
the model (as a bfloat16 model runs: the transcoders are cast too); ``bf16-patterns`` /
``fp16-patterns``: the float32 pass with the frozen attention patterns held in bfloat16 / float16
(``pattern_dtype``). The cached demo transcoders (random TopK ones without them), the same
prompt, the same targets (the float32 run's), the same node budget. Rows are chosen by
influence in each run, so the comparison is over the edges both graphs computed, matched by node
identity (features by layer, position, index; errors; tokens; targets). Printed per kind of edge
(source kind -> target kind): how many, the median and 99th percentile of
``|bf16 - f32| / |f32|`` over edges above 1e-3 of the largest edge of their row (smaller ones
are all rounding), the error relative to the largest edge of the row, and the share of the
float32 graph's strongest 1,000 edges that are among the bfloat16 graph's strongest 1,000.

    python benchmarks/bf16_error.py --tokens 64 --max-feature-nodes 512
    python benchmarks/bf16_error.py --variants bf16-patterns fp16-patterns --tokens 256
"""

# ruff: noqa: T201  (a command-line script: printing is its output)
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from _setup import benchmark_transcoders, bos_prompt

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def edges(graph) -> dict[tuple, float]:
    """{(source identity, target identity): weight} over the computed rows."""
    nodes = graph.nodes
    tgt, src, val = graph.edge_list()
    return {(tuple(nodes[s][:4]), tuple(nodes[t][:4])): float(v)
            for t, s, v in zip(tgt.tolist(), src.tolist(), val.tolist(), strict=True)}


def _quantile(x: torch.Tensor, p: float) -> float:
    return float(np.quantile(x.numpy(), p)) if x.numel() else float("nan")  # no size limit


VARIANTS = {
    "pass": ("whole pass in bfloat16 (dtype=torch.bfloat16)", {"dtype": torch.bfloat16}),
    "bf16-patterns": ("float32 pass, patterns held in bfloat16", {"pattern_dtype": torch.bfloat16}),
    "fp16-patterns": ("float32 pass, patterns held in float16", {"pattern_dtype": torch.float16}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--max-feature-nodes", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--transcoders", choices=("demo", "random"), default="demo")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--feature-pool", type=int, default=10**9,
                        help="features kept as nodes (default: all, so every run's error nodes hold "
                        "the same vectors; a pool chosen per run folds different features into them)")
    args = parser.parse_args()
    import tl_circuits as tc
    from tl_circuits.models import load_default

    model = load_default(dtype=torch.float32)
    transcoders, what = benchmark_transcoders(model, args.transcoders == "demo")
    tokens = bos_prompt(model, args.tokens)

    def run(**options):
        t0 = time.perf_counter()
        graph = tc.attribute(model, transcoders, tokens, targets=targets, batch_size=args.batch_size,
                             max_feature_nodes=args.max_feature_nodes, feature_pool=args.feature_pool,
                             progress=False, **options)
        return graph, time.perf_counter() - t0

    targets = None
    reference, t_ref = run()
    targets = [t.token_ids[0] for t in reference.targets]
    f32 = edges(reference)
    print(f"SmolLM2-135M-Instruct + {what}; {args.tokens} tokens; max_feature_nodes "
          f"{args.max_feature_nodes}; float32 reference: {t_ref:.1f} s, {len(f32):,} edges")
    for name in args.variants:
        label, options = VARIANTS[name]
        graph, elapsed = run(**options)
        report(f"{label}: {elapsed:.1f} s", f32, edges(graph))


def report(title: str, f32: dict[tuple, float], b16: dict[tuple, float]) -> None:
    """The per-kind table of one variant against the float32 edges."""
    row_max: dict[tuple, float] = {}
    for (_, t), v in f32.items():
        row_max[t] = max(row_max.get(t, 0.0), abs(v))
    shared = [k for k in f32 if k in b16]
    print(f"\n{title}; edges {len(b16):,}, shared with float32 {len(shared):,}\n")
    print("| edge (source -> target) | shared edges | relative error, median | 99th percentile "
          "| error / largest edge of its row, 99th percentile | max |")
    print("|---" * 6 + "|")
    groups: dict[str, list[tuple[float, float]]] = {}
    for k in shared:
        (src, tgt), ref = k, f32[k]
        scale = row_max[tgt]
        if scale == 0:
            continue
        err = abs(b16[k] - ref)
        name = f"{src[0]} -> {tgt[0]}"
        for key in (name, "all"):
            groups.setdefault(key, []).append(
                (err / abs(ref) if abs(ref) > 1e-3 * scale else float("nan"), err / scale))
    for name, vals in sorted(groups.items(), key=lambda kv: kv[0] == "all"):
        t = torch.tensor(vals, dtype=torch.float64)
        rel = t[:, 0][~t[:, 0].isnan()]
        print(f"| {name} | {len(vals):,} | {_quantile(rel, 0.5):.2e} | {_quantile(rel, 0.99):.2e} "
              f"| {_quantile(t[:, 1], 0.99):.2e} | {float(t[:, 1].max()):.2e} |")
    top = {k for k, _ in sorted(f32.items(), key=lambda kv: -abs(kv[1]))[:1000]}
    top_b = {k for k, _ in sorted(b16.items(), key=lambda kv: -abs(kv[1]))[:1000]}
    print(f"\nstrongest 1,000 edges of the float32 graph also among this graph's: "
          f"{len(top & top_b) / max(1, len(top)):.1%}")


if __name__ == "__main__":
    main()
