"""Time attribute + prune and peak memory against prompt length; print ratios to the shortest prompt.

Each prompt length runs in its own subprocess so its peak resident memory (``ru_maxrss``) is its
own. The model is ``tl_circuits.models.load_default()`` (SmolLM2) when that function exists and
``--model auto`` (the default); otherwise, or with ``--model random``, a random float32
HookedTransformer (4 layers, d_model 128, d_mlp 512, vocab 2048). Transcoders are random (the
timings measure the machinery, not feature quality).

    python benchmarks/prune_scaling.py --model random --lengths 32 64 128 256
"""

# ruff: noqa: T201  (a command-line script: printing is its output)
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build(kind: str):
    import torch

    import tl_circuits as tc

    if kind == "auto":
        import tl_circuits.models as models

        kind = "default" if hasattr(models, "load_default") else "random"
    if kind == "default":
        from tl_circuits.models import load_default

        model = load_default()
    else:
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        cfg = HookedTransformerConfig(
            n_layers=4, d_model=128, d_head=32, n_heads=4, d_mlp=512, d_vocab=2048, n_ctx=2048,
            act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
            rotary_dim=32, gated_mlp=True, dtype=torch.float32, seed=0,
        )
        model = HookedTransformer(cfg)
        model.eval()
    d, n_layers = model.cfg.d_model, model.cfg.n_layers
    gen = torch.Generator().manual_seed(0)
    d_sae = 8 * d
    transcoders = tc.TranscoderSet([
        tc.Transcoder(
            torch.randn(d, d_sae, generator=gen) / d**0.5, torch.randn(d_sae, generator=gen) * 0.3 - 1.2,
            torch.randn(d_sae, d, generator=gen) * 0.1, torch.zeros(d),
            hook_name=f"blocks.{la}.ln2.hook_normalized", hook_name_out=f"blocks.{la}.hook_mlp_out",
        )
        for la in range(n_layers)
    ])
    return model, transcoders, kind


def one(length: int, kind: str, max_feature_nodes: int, batch_size: int) -> dict:
    import torch

    import tl_circuits as tc

    model, transcoders, kind = build(kind)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gen = torch.Generator().manual_seed(length)
    tokens = torch.randint(1, model.cfg.d_vocab, (length,), generator=gen)
    t0 = time.perf_counter()
    graph = tc.attribute(model, transcoders, tokens, max_feature_nodes=max_feature_nodes,
                         batch_size=batch_size, progress=False)
    t1 = time.perf_counter()
    pruned = graph.prune()
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "length": length, "model": kind, "n_nodes": graph.n_nodes,
        "n_edges": int(graph.adjacency._nnz()), "pruned_nodes": pruned.n_nodes,
        "attribute_s": t1 - t0, "prune_s": t2 - t1, "peak_mb": peak / 1024,
        "extra_mb": (peak - base_rss) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("auto", "random", "default"), default="auto")
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--max-feature-nodes", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.model, args.max_feature_nodes, args.batch_size)))
        return
    rows = []
    for length in sorted(args.lengths):
        cmd = [sys.executable, __file__, "--one", str(length), "--model", args.model,
               "--max-feature-nodes", str(args.max_feature_nodes), "--batch-size", str(args.batch_size)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    first = rows[0]
    print(f"model: {first['model']}, max_feature_nodes={args.max_feature_nodes}, batch_size={args.batch_size}")
    print(f"{'length':>6} {'nodes':>8} {'edges':>9} {'kept':>5} {'attr s':>8} {'prune s':>8} "
          f"{'peak MB':>8} {'+MB':>7} | ratios: {'len':>4} {'attr':>5} {'prune':>6} {'+MB':>5}")
    for r in rows:
        print(f"{r['length']:>6} {r['n_nodes']:>8} {r['n_edges']:>9} {r['pruned_nodes']:>5} "
              f"{r['attribute_s']:>8.2f} {r['prune_s']:>8.3f} {r['peak_mb']:>8.0f} {r['extra_mb']:>7.0f} | "
              f"        {r['length'] / first['length']:>4.0f} {r['attribute_s'] / first['attribute_s']:>5.1f} "
              f"{r['prune_s'] / first['prune_s']:>6.1f} {r['extra_mb'] / max(first['extra_mb'], 1):>5.1f}")


if __name__ == "__main__":
    main()
