"""What an nnsight remote attribution sends and costs, measured through ``remote="local"``.

SmolLM2-135M as an nnsight ``LanguageModel`` with the cached demo transcoders (trained first if
missing, as ``make demo`` does): attribution time locally and through nnsight's serialize-and-run
stand-in for NDIF, alternating, the request size, the transcoders' share of it, and the largest
relative adjacency difference between the two graphs. Run:
``python benchmarks/remote.py [--repeats 3] [--max-feature-nodes 256]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import tl_circuits as tc
from tl_circuits.demo import PROMPT, demo_transcoders, load_model
from tl_circuits.models import load_default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-feature-nodes", type=int, default=256)
    args = parser.parse_args()
    from nnsight.schema import request

    sizes: list[int] = []
    serialize = request.RequestModel.serialize.__func__

    def recording(cls, tracer, compress=False):
        blob = serialize(cls, tracer, compress)
        sizes.append(len(blob))
        return blob

    request.RequestModel.serialize = classmethod(recording)
    transcoders = demo_transcoders(load_model())
    lm = load_default("nnsight")
    kw = dict(max_feature_nodes=args.max_feature_nodes, batch_size=32, progress=False)
    local_s, traced_s, graphs = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        local = tc.attribute(lm, transcoders, PROMPT, **kw)
        t1 = time.perf_counter()
        traced = tc.attribute(lm, transcoders, PROMPT, remote="local", **kw)
        local_s.append(t1 - t0)
        traced_s.append(time.perf_counter() - t1)
        graphs = [local, traced]
    a, b = (g.adjacency.to_dense() for g in graphs)
    weights = sum(t.numel() * t.element_size() for tc_ in transcoders
                  for t in (tc_.W_enc, tc_.W_dec, tc_.b_enc, tc_.b_dec, tc_.W_skip) if t is not None)
    lo, tr = statistics.median(local_s), statistics.median(traced_s)
    print(f"local {lo:.2f} s, remote='local' {tr:.2f} s (median of {args.repeats}): ratio {tr / lo:.2f}")  # noqa: T201
    print(f"request {sizes[-1] / 1e6:.1f} MB, transcoder weights {weights / 1e6:.1f} MB; "  # noqa: T201
          f"graph: {graphs[0].n_nodes} nodes, {graphs[0].adjacency._nnz()} edges")
    print(f"max relative adjacency difference {float((a - b).abs().max() / a.abs().max()):.1e}")  # noqa: T201


if __name__ == "__main__":
    main()
