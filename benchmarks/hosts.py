"""Attribution time of one model on each host, as ratios to the HookedTransformer host.

A random Llama-family model (4 layers, d_model 128, 64 tokens, float32) built offline, the same
weights on every host; median of several repeats. Run:
``python benchmarks/hosts.py [--repeats 5] [--family llama]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import tl_circuits as tc
from tests.core.tiny import tiny_transcoder
from tests.hosts.hf_tiny import hf_model, on_host


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--family", default="llama")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    d_model, n_layers = 128, 4
    model = hf_model(args.family, dtype=torch.float32, n_layers=n_layers, d_model=d_model,
                     n_heads=8, n_ctx=128)
    transcoders = tc.TranscoderSet([
        tiny_transcoder(la, "relu", d_model=d_model, d_sae=512, dtype=torch.float32)
        for la in range(n_layers)
    ])
    prompt = [0] + torch.randint(2, 48, (args.tokens - 1,), generator=torch.Generator().manual_seed(0)).tolist()
    tmp = Path(tempfile.mkdtemp())
    kinds = ["hooked", "bridge", "bridge_compat", "nnsight", "hf"]
    times: dict[str, float] = {}
    for kind in kinds:
        host_model = on_host(kind, model, tmp)
        run = []
        for rep in range(args.repeats + 1):
            start = time.perf_counter()
            graph = tc.attribute(host_model, transcoders, prompt, max_feature_nodes=256,
                                 batch_size=32, progress=False)
            if rep:  # the first run warms up
                run.append(time.perf_counter() - start)
        times[kind] = statistics.median(run)
        n = graph.n_features
    base = times["hooked"]
    print(f"{args.family}: {n_layers} layers, d_model {d_model}, {args.tokens} tokens, "  # noqa: T201
          f"{n} active features, 256 feature rows, median of {args.repeats}")
    for kind in kinds:
        print(f"  {kind:14s} {times[kind]:7.3f} s   x{times[kind] / base:5.2f}")  # noqa: T201
    print(f"  slowest / fastest: {max(times.values()) / min(times.values()):.2f}")  # noqa: T201


if __name__ == "__main__":
    main()
