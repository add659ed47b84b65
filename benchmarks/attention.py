"""Cost of explaining attention against the graph's own attribution, in one process.

On SmolLM2-135M with the cached demo transcoders (``--demo``; else random TopK transcoders) and
"The capital of France is", it times
- ``attribute`` (``max_feature_nodes`` as the demo's, 256): the baseline;
- ``explain_attention`` for one (layer, head, query, key): the top head of the top
  cross-position edge, from the query (the last position) to the edge's source position;
- ``head_loadings`` for every cross-position edge of the pruned graph (0.8 / 0.98);
and prints each as a ratio to the attribution time.

    python benchmarks/attention.py --demo --repeats 3
"""

# ruff: noqa: T201  (a command-line script: printing is its output)
from __future__ import annotations

import argparse
import statistics

import torch
from _setup import benchmark_transcoders, summary, timed

import tl_circuits as tc

PROMPT = "The capital of France is"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", action="store_true", help="use the cached demo transcoders")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-feature-nodes", type=int, default=256)
    args = parser.parse_args()
    from tl_circuits import models

    model = models.load_default()
    transcoders, what = benchmark_transcoders(model, args.demo)
    print(f"SmolLM2-135M-Instruct, {what}, prompt {PROMPT!r}, threads {torch.get_num_threads()}")

    graphs: list[tc.Graph] = []

    def attribute() -> None:
        graphs.append(tc.attribute(model, transcoders, PROMPT, max_feature_nodes=args.max_feature_nodes,
                                   progress=False))

    t_attr = timed(attribute, args.repeats)
    graph = graphs[-1]
    pruned = graph.prune(0.8, 0.98)
    t, s, w = pruned.edge_list()
    cross = (pruned.node_position[s] != pruned.node_position[t]) & (w != 0)
    print(f"graph: {graph.n_nodes} nodes, {len(graph.rows_computed)} rows; pruned: {pruned.n_nodes} "
          f"nodes, {int(cross.sum())} cross-position edges")
    loads_box: list[tc.HeadLoadings] = []

    def loadings() -> None:
        loads_box.append(tc.head_loadings(model, transcoders, pruned, progress=False, store=False))

    t_loads = timed(loadings, args.repeats)
    loads = loads_box[-1]
    top = int(loads.edges.abs().argmax())
    layer, head, _ = loads.top(top, 1)[0]
    q, k = int(pruned.node_position[loads.targets[top]]), int(pruned.node_position[loads.sources[top]])
    t_qk = timed(lambda: tc.explain_attention(model, transcoders, pruned, layer, head, q, k),
                 args.repeats)
    base = statistics.median(t_attr)
    print(f"attribute:                      {summary(t_attr)}  (1.00x)")
    print(f"explain_attention L{layer}H{head} {q}->{k}: {summary(t_qk)}  "
          f"({statistics.median(t_qk) / base:.2f}x attribution)")
    print(f"head_loadings, {loads.sources.numel()} edges:   {summary(t_loads)}  "
          f"({statistics.median(t_loads) / base:.2f}x attribution)")
    print(f"max |edge - sum of head loadings| / max |edge|: "
          f"{float(loads.rest.abs().max() / loads.edges.abs().max()):.1e}")


if __name__ == "__main__":
    main()
