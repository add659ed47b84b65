"""Attribution time of one model on each host, as ratios to the HookedTransformer host.

A random Llama-family model (4 layers, d_model 128, 64 tokens, float32) built offline, the same
weights on every host; median of several repeats. Run:
``python benchmarks/hosts.py [--repeats 5] [--family llama]``.

``--parity`` prints instead, for the tiny test models of tests/hosts (every family, float32 and
float64), each host's largest relative adjacency difference to the plain HF host and to a
brute-force perturb-and-rerun of every edge (``tests/hosts/reference.py``).
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
from tests.hosts.hf_tiny import HF_FAMILIES, float64_softmax, hf_model, on_host

KINDS = ["hooked", "bridge", "bridge_compat", "nnsight", "hf"]


def parity() -> None:
    """Relative adjacency differences between hosts and to brute force, per family and dtype."""
    from tests.hosts.reference import brute_force_rows
    from tests.hosts.test_hosts import HOOK_INS, PROMPT, _transcoders

    tmp = Path(tempfile.mkdtemp())
    print("family  dtype    host           vs hf     vs brute force")  # noqa: T201
    with float64_softmax():
        for family in HF_FAMILIES:
            for dtype in (torch.float32, torch.float64):
                model = hf_model(family, dtype=dtype)
                transcoders = _transcoders(HOOK_INS[HF_FAMILIES.index(family) % 3], dtype)
                graphs = {}
                for kind in KINDS[::-1]:
                    host_model = on_host(kind, model, tmp)
                    graph = graphs[kind] = tc.attribute(host_model, transcoders, PROMPT, progress=False)
                    expected = brute_force_rows(host_model, transcoders, graph)
                    got = graph.adjacency.to_dense()[graph.rows_computed]
                    ref = graphs["hf"].adjacency.to_dense()
                    vs_hf = (graph.adjacency.to_dense() - ref).abs().max() / ref.abs().max()
                    vs_bf = (got - expected).abs().max() / expected.abs().max()
                    print(f"{family:7s} {str(dtype)[6:]:8s} {kind:14s} {vs_hf:8.1e}  {vs_bf:8.1e}")  # noqa: T201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--family", default="llama")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--parity", action="store_true", help="print parity figures, not times")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.parity:
        parity()
        return
    d_model, n_layers = 128, 4
    model = hf_model(args.family, dtype=torch.float32, n_layers=n_layers, d_model=d_model,
                     n_heads=8, n_ctx=128)
    transcoders = tc.TranscoderSet([
        tiny_transcoder(la, "relu", d_model=d_model, d_sae=512, dtype=torch.float32)
        for la in range(n_layers)
    ])
    prompt = [0] + torch.randint(2, 48, (args.tokens - 1,), generator=torch.Generator().manual_seed(0)).tolist()
    tmp = Path(tempfile.mkdtemp())
    kinds = KINDS
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
