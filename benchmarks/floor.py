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
from tl_circuits.attribution.engine import ReadOuts, RowEngine, feature_reads, target_reads
from tl_circuits.attribution.layout import build_layout
from tl_circuits.hosts import as_host
from tl_circuits.replacement import run_replacement


def floor(model, transcoders, tokens: list[int], graph: tc.Graph, batch_size: int,
          sort_all: bool = False) -> None:
    """The forward pass and ceil(rows / batch) backward passes to the write sites, as the row
    engine runs them.

    The batches are the ones attribution ran (``graph.rows_computed`` is in computation order),
    or, with ``sort_all``, all feature rows sorted by layer: the cheapest order possible, which
    attribution under a node budget cannot use (it learns which rows to compute as it goes).
    """
    host = as_host(model)
    toks = torch.tensor(tokens)
    state = run_replacement(host, transcoders, toks)
    layout = build_layout(state, toks, host.n_layers, has_bos=graph.settings["has_bos"],
                          n_targets=len(graph.targets))
    reads = [target_reads(graph.target_vectors, len(tokens) - 1)]
    if graph.n_features < layout.n_features:
        # A feature pool: attribution read the targets once over every active feature, then
        # kept the graph's features. Node ids are ids in that smaller layout.
        reads.append(reads[0])
        layout = layout.subset(pooled_ids(layout, graph))
    n_feat = layout.n_features
    rows = graph.rows_computed
    feats = rows[rows < n_feat]
    if sort_all:
        feats = feats.sort().values
    for lo in range(0, feats.numel(), batch_size):
        reads.append(feature_reads(layout, transcoders, feats[lo : lo + batch_size]))
    # The engine's own backward passes (batched frozen-attention products on the chunk's causal
    # prefix), without its edge assembly: RowEngine.gradients per chunk.
    engine = RowEngine(state, layout, transcoders, batch_size, keep_writes=False)
    for r in reads:
        for lo in range(0, len(r.pos), batch_size):
            hi = lo + batch_size
            engine.gradients(ReadOuts(r.layer[lo:hi], r.pos[lo:hi], r.vectors[lo:hi]))


def pooled_ids(layout, graph: tc.Graph) -> torch.Tensor:
    """Ids in the full ``layout`` of the graph's feature nodes (sorted, as the pool keeps them)."""
    feats = graph.indices(tc.NodeKind.FEATURE)
    width = int(max(layout.feat_idx.max(), graph.node_index[feats].max())) + 1
    n_pos = int(layout.feat_pos.max()) + 1

    def key(layer, pos, idx):
        return (layer.long() * n_pos + pos.long()) * width + idx.long()

    full = key(layout.feat_layer, layout.feat_pos, layout.feat_idx)
    order = full.argsort()
    want = key(graph.node_layer[feats], graph.node_position[feats], graph.node_index[feats])
    at = torch.searchsorted(full[order], want)
    assert torch.equal(full[order][at], want), "the graph's features are not this prompt's"
    return order[at].sort().values


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
