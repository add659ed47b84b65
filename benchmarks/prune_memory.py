"""Peak memory and time of ``graph.prune()`` on a graph the size of a 2,048-token SmolLM2 graph.

Attributing 2,048 tokens with ``max_feature_nodes=4096`` takes 45 minutes on a 2-core CPU
(``prune_scaling.py --lengths 2048 --max-feature-nodes 4096``, which prunes the real graph). To
measure pruning alone in a few minutes, this benchmark builds a random graph of that shape (the
default sizes are SmolLM2's: 30 layers; the default feature pool of 8 x 4,096 features; 4,096
computed feature rows plus 10 targets; each row dense over the nodes below its layer, about 47,600
edges per row as in the 256 most influential rows of a real 2,048-token graph, denser than the
33,000 per row of the real 4,096-row graph) and prunes it.
Every edge of a feature row at layer L comes from a feature or error node below L or a token, so
the graph is acyclic like a real one.

It prints the peak resident memory that pruning adds over the loaded graph (Linux: the
high-water mark is reset through ``/proc/self/clear_refs`` once the graph is built), its ratio to
the adjacency's own bytes, and what one dense ``n_nodes x n_nodes`` float32 matrix (how
circuit-tracer prunes) would take, for contrast; that dense run is not attempted.

    python benchmarks/prune_memory.py                  # ~195M edges, ~4 GB graph
    python benchmarks/prune_memory.py --rows 256       # the 256-row graph, for a quick check
"""

# ruff: noqa: T201  (a command-line script: printing is its output)
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _worker import reset_peak, rss_mib  # benchmarks/ is on the path when run as a script

from tl_circuits.graph import Graph, TargetInfo


def synthetic_graph(n_layers: int, n_pos: int, n_features: int, n_rows: int, per_row: int,
                    n_targets: int, seed: int = 0) -> Graph:
    """A random acyclic graph laid out as ``attribute`` lays one out (BOS at position 0)."""
    gen = torch.Generator().manual_seed(seed)
    feat_layer = torch.sort(torch.randint(0, n_layers, (n_features,), generator=gen)).values
    feat_pos = torch.randint(1, n_pos, (n_features,), generator=gen)
    err_layer = torch.arange(n_layers).repeat_interleave(n_pos - 1)
    err_pos = torch.arange(1, n_pos).repeat(n_layers)
    n_err = err_layer.numel()
    n = n_features + n_err + n_pos + n_targets
    feats_below = torch.searchsorted(feat_layer, torch.arange(n_layers + 1))
    errs_below = torch.arange(n_layers + 1) * (n_pos - 1)
    row_ids = torch.cat([torch.sort(torch.randperm(n_features, generator=gen)[:n_rows]).values,
                         torch.arange(n - n_targets, n)])
    cols, counts = [], []
    for node in row_ids.tolist():
        layer = int(feat_layer[node]) if node < n_features else n_layers
        eligible = torch.cat([torch.arange(int(feats_below[layer])),
                              n_features + torch.arange(int(errs_below[layer])),
                              n_features + n_err + torch.arange(n_pos)])
        keep = torch.rand(eligible.numel(), generator=gen) < min(1.0, per_row / eligible.numel())
        cols.append(eligible[keep])
        counts.append(int(keep.sum()))
    index = torch.stack([torch.repeat_interleave(row_ids, torch.tensor(counts)), torch.cat(cols)])
    del cols
    values = torch.randn(index.shape[1], generator=gen)
    values[values == 0] = 1.0  # attribute() stores nonzero entries only
    adjacency = torch.sparse_coo_tensor(index, values, (n, n), is_coalesced=True, check_invariants=False)
    del index  # the graph keeps its own layout of the edges (CSR: int32 indices)
    kind = torch.cat([torch.zeros(n_features), torch.ones(n_err), torch.full((n_pos,), 2),
                      torch.full((n_targets,), 3)]).long()
    layer = torch.cat([feat_layer, err_layer, torch.full((n_pos + n_targets,), -1)])
    position = torch.cat([feat_pos, err_pos, torch.arange(n_pos), torch.full((n_targets,), n_pos - 1)])
    index_col = torch.cat([torch.randint(0, 49152, (n_features,), generator=gen),
                           torch.full((n_err,), -1), torch.zeros(n_pos, dtype=torch.long),
                           torch.arange(n_targets)])
    weights = torch.rand(n_targets, generator=gen)
    weights /= weights.sum()
    return Graph.from_tables(
        kind=kind, layer=layer, position=position, index=index_col, adjacency=adjacency,
        activations=torch.rand(n_features), target_vectors=torch.zeros(n_targets, 1),
        targets=[TargetInfo(f"t{i}", "logit", (i,), float(w), float(w)) for i, w in enumerate(weights)],
        prompt=None, tokens=list(range(n_pos)), str_tokens=[str(i) for i in range(n_pos)],
        settings={}, rows_computed=row_ids,
    )


def adjacency_bytes(adj: torch.Tensor) -> int:
    """Bytes the adjacency's tensors hold (indices and values; CSR, COO or dense)."""
    if adj.layout == torch.sparse_csr:
        parts = [adj.crow_indices(), adj.col_indices(), adj.values()]
    elif adj.layout == torch.sparse_coo:
        parts = [adj._indices(), adj._values()]
    else:
        parts = [adj]
    return sum(t.numel() * t.element_size() for t in parts)


def layout_name(adj: torch.Tensor) -> str:
    if adj.layout == torch.sparse_csr:
        return f"CSR ({str(adj.col_indices().dtype).removeprefix('torch.')} indices)"
    return "COO" if adj.layout == torch.sparse_coo else "dense"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--positions", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=4096, help="computed feature rows")
    parser.add_argument("--pool", type=int, default=None, help="feature nodes (default 8 x rows)")
    parser.add_argument("--per-row", type=int, default=100_000,
                        help="edges per row at most (default: every node below the row)")
    args = parser.parse_args()
    pool = args.pool or max(8 * args.rows, 8192)
    t0 = time.perf_counter()
    graph = synthetic_graph(args.layers, args.positions, pool, args.rows, args.per_row, 10)
    nnz = graph.adjacency._nnz()
    adj_mb = adjacency_bytes(graph.adjacency) / 2**20
    print(f"graph: {graph.n_nodes:,} nodes, {nnz:,} edges ({adj_mb:,.0f} MB of {layout_name(graph.adjacency)}, "
          f"{adj_mb * 2**20 / nnz:.2f} bytes an edge), built in {time.perf_counter() - t0:.0f} s, "
          f"peak while building {rss_mib():,.0f} MB")
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("this benchmark resets the peak through /proc/self/clear_refs: run it on Linux")
    reset_peak()  # VmHWM is now the current RSS: the process with the graph loaded
    loaded = rss_mib()
    t0 = time.perf_counter()
    pruned = graph.prune()
    elapsed = time.perf_counter() - t0
    added = rss_mib() - loaded
    dense_mb = graph.n_nodes**2 * 4 / 2**20
    scores = pruned.settings["pruning"]["scores"]
    print(f"prune: {elapsed:.1f} s, kept {pruned.n_nodes:,} nodes and {pruned.adjacency._nnz():,} edges; "
          f"pruned scores {scores['replacement']:.3f} / {scores['completeness']:.3f}")
    print(f"process with the graph loaded: {loaded:,.0f} MB; prune adds at most {added:,.0f} MB "
          f"= {added / adj_mb:.2f} x the adjacency; peak {loaded + added:,.0f} MB")
    print(f"one dense n_nodes x n_nodes float32 matrix would be {dense_mb:,.0f} MB "
          f"({dense_mb / (loaded + added):.1f} x this whole peak)")


if __name__ == "__main__":
    main()
