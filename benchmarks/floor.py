"""Attribution time against its floor: the batched backward passes of the frozen model alone.

The floor runs, in the same process, one forward pass of the replacement model and the same
number of backward passes with the same read-outs as ``attribute`` does, with no edge assembly,
influence ranking or graph building. Printed: both times and their ratio (goal: <= 1.5).

    python benchmarks/floor.py [--tokens 16] [--max-feature-nodes 1024] [--batch-size 64] [--random]
"""

from __future__ import annotations

import statistics

import torch
from _setup import attribution_parser, bos_prompt, smollm2_or_random, summary, timed

import tl_circuits as tc
from tl_circuits.attribution.engine import feature_reads, target_reads
from tl_circuits.attribution.layout import build_layout
from tl_circuits.hosts import as_host
from tl_circuits.replacement import run_replacement


def floor(model, transcoders, tokens: list[int], graph: tc.Graph, batch_size: int,
          sort_all: bool = False) -> None:
    """The forward pass and ceil(rows / batch) vmapped backward passes to the write sites.

    The batches are the ones attribution ran (``graph.rows_computed`` is in computation order),
    or, with ``sort_all``, all feature rows sorted by layer: the cheapest order possible, which
    attribution under a node budget cannot use (it learns which rows to compute as it goes).
    """
    host = as_host(model)
    toks = torch.tensor(tokens)
    state = run_replacement(host, transcoders, toks)
    layout = build_layout(state, toks, host.n_layers, has_bos=graph.settings["has_bos"],
                          n_targets=len(graph.targets))
    n_feat = layout.n_features
    rows = graph.rows_computed
    reads = [target_reads(graph.target_vectors, len(tokens) - 1)]
    feats = rows[rows < n_feat]
    if sort_all:
        feats = feats.sort().values
    for lo in range(0, feats.numel(), batch_size):
        reads.append(feature_reads(layout, transcoders, feats[lo : lo + batch_size]))
    inputs = [state.writes[m] for m in range(host.n_layers)] + [state.embed]
    for r in reads:
        for lo in range(0, len(r.pos), batch_size):
            outs, gos = [], []
            for site in {la for la in r.layer[lo : lo + batch_size]}:
                t = state.resid_final if site is None else state.x_in[site]
                g = t.new_zeros(min(batch_size, len(r.pos) - lo), *t.shape)
                for b in range(g.shape[0]):
                    if r.layer[lo + b] == site:
                        g[b, 0, r.pos[lo + b]] = r.vectors[lo + b]
                outs.append(t)
                gos.append(g)
            torch.autograd.grad(outs, inputs, gos, retain_graph=True, allow_unused=True,
                                is_grads_batched=True)


def main() -> None:
    parser = attribution_parser(__doc__.splitlines()[0])
    parser.add_argument("--update-interval", type=int, default=4)
    parser.add_argument("--random", action="store_true", help="use the random model, not SmolLM2")
    args = parser.parse_args()
    model, transcoders, what = smollm2_or_random(not args.random)
    tokens = bos_prompt(model, args.tokens)
    kw = dict(max_feature_nodes=args.max_feature_nodes, batch_size=args.batch_size,
              update_interval=args.update_interval, progress=False)
    graph = tc.attribute(model, transcoders, tokens, **kw)  # warm-up
    ours, base, ideal = [], [], []
    for _ in range(args.repeats):  # alternate, so all see the same machine load
        ours += timed(lambda: tc.attribute(model, transcoders, tokens, **kw), 1)
        base += timed(lambda: floor(model, transcoders, tokens, graph, args.batch_size), 1)
        ideal += timed(lambda: floor(model, transcoders, tokens, graph, args.batch_size, True), 1)
    print(f"model: {what}; {args.tokens} tokens; {graph.n_features} active features; "
          f"{len(graph.rows_computed)} rows; batch {args.batch_size}; torch threads {torch.get_num_threads()}")
    print(f"attribute : {summary(ours)}")
    print(f"floor     : {summary(base)}  (the same batches as attribution)")
    print(f"sorted    : {summary(ideal)}  (all rows sorted by layer, known in advance)")
    print(f"ratio attribute/floor (median): {statistics.median(ours) / statistics.median(base):.2f}; "
          f"attribute/sorted: {statistics.median(ours) / statistics.median(ideal):.2f}")


if __name__ == "__main__":
    main()
