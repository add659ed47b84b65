"""Influence of nodes on the targets: ``w (A' + A'^2 + ...)`` with ``A'`` the row-normalised |A|.

Rows of ``A`` are targets of edges, columns their sources, so ``w A'`` spreads each target's
weight over its direct sources in proportion to |edge|, and each further power one step further
back. Attribution graphs are acyclic, so the series ends after at most depth-many terms.

The one implementation of influence: attribution (re-ranking rows), pruning, scores, queries and
the viewer's export all call the functions here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int

from ..errors import ConfigError
from .adjacency import edge_list
from .nodes import NodeKind

if TYPE_CHECKING:
    from .graph import Graph


def influence_from_rows(
    rows: Float[torch.Tensor, "n_rows n_nodes"],
    row_nodes: Int[torch.Tensor, " n_rows"],
    row_weights: Float[torch.Tensor, " n_rows"],
    *,
    max_steps: int = 1000,
    chunk_rows: int = 256,
) -> Float[torch.Tensor, " n_nodes"]:
    """Influence on every node of the weight placed on the rows' nodes.

    ``rows[i]`` holds the incoming edges of node ``row_nodes[i]``; nodes without a row pass
    nothing further back. Only the given rows are touched, so this works on the partial
    adjacency that exists while attribution is still choosing which rows to compute. The full
    width is read in chunks of ``chunk_rows`` rows, so no copy of the row block is made.
    """
    # Propagation only ever passes through nodes that have rows, so iterate on the small
    # rows-by-rows block M = A'[:, row_nodes] and touch the full width once at the end:
    # sum_k x_k A' = (sum_k x_k) A', with x_{k+1} = x_k M.
    n = rows.shape[0]
    spans = [(lo, min(lo + chunk_rows, n)) for lo in range(0, n, chunk_rows)]
    sums = torch.cat([rows[lo:hi].abs().sum(dim=1) for lo, hi in spans]) if spans else rows.new_zeros(0)
    inv_sum = 1.0 / sums.to(torch.float64).clamp(min=1e-30)
    m = rows[:, row_nodes].abs().to(torch.float64) * inv_sum[:, None]
    x = row_weights.to(torch.float64)
    seen = torch.zeros_like(x)
    for _ in range(max_steps):
        seen += x
        x = x @ m
        if not bool(x.any()):
            break
    w = (seen * inv_sum).to(rows.dtype)
    out = torch.zeros(rows.shape[1], dtype=torch.float64, device=rows.device)
    for lo, hi in spans:
        out += (w[lo:hi] @ rows[lo:hi].abs()).to(torch.float64)
    return out


#: Entries handled at once by the edge-list loops (bounds their float64 transients to ~128 MB).
CHUNK = 1 << 24


def coalesced(adjacency: Float[torch.Tensor, "n_nodes n_nodes"]) -> torch.Tensor:
    """``adjacency`` as a coalesced sparse COO tensor (int64 indices: a copy of a CSR graph's
    adjacency at 20 bytes an edge; the analyses here read :func:`.adjacency.edge_list`)."""
    if adjacency.layout == torch.sparse_csr:
        return adjacency.to_sparse_coo().coalesce()
    return (adjacency if adjacency.is_sparse else adjacency.to_sparse()).coalesce()


def abs_entries(
    adjacency: Float[torch.Tensor, "n_nodes n_nodes"],
) -> tuple[Int[torch.Tensor, " nnz"], Int[torch.Tensor, " nnz"], Float[torch.Tensor, " nnz"],
           Int[torch.Tensor, " nnz"] | None]:
    """``(rows, cols, |values| in float64, entries)`` of the stored nonzero entries.

    ``entries`` are their positions among the adjacency's stored entries (row-major), or None
    when every stored entry is nonzero (then ``cols`` is a view of the CSR adjacency's column
    indices and ``rows`` its row offsets expanded, int32: a graph of 10^8 edges is not duplicated).
    """
    rows, cols, stored_vals = edge_list(adjacency)
    vals = stored_vals.abs().to(torch.float64)
    if not bool((vals == 0).any()):
        return rows, cols, vals, None
    stored = (vals != 0).nonzero().flatten()
    return rows[stored], cols[stored], vals[stored], stored


def row_normalize_(
    rows: Int[torch.Tensor, " nnz"], vals: Float[torch.Tensor, " nnz"], n: int
) -> Float[torch.Tensor, " nnz"]:
    """Divides ``vals`` in place by their row sums (clamped at 1e-10, as circuit-tracer's
    ``normalize_matrix``); returns ``vals``."""
    sums = torch.zeros(n, dtype=vals.dtype, device=vals.device).index_add_(0, rows, vals)
    sums.clamp_(min=1e-10)
    for lo in range(0, vals.numel(), CHUNK):
        vals[lo : lo + CHUNK].div_(sums[rows[lo : lo + CHUNK]])
    return vals


def normalized_edges(
    adjacency: Float[torch.Tensor, "n_nodes n_nodes"],
) -> tuple[Int[torch.Tensor, " nnz"], Int[torch.Tensor, " nnz"], Float[torch.Tensor, " nnz"]]:
    """The nonzero entries of ``A'`` (row-normalised ``|A|``) as ``(rows, cols, values)``.

    Works on a sparse CSR, COO or dense ``adjacency`` without forming anything ``n_nodes x n_nodes``.
    """
    rows, cols, vals, _ = abs_entries(adjacency)
    return rows, cols, row_normalize_(rows, vals, adjacency.shape[0])


def influence_from_edges(
    rows: Int[torch.Tensor, " nnz"],
    cols: Int[torch.Tensor, " nnz"],
    values: Float[torch.Tensor, " nnz"],
    seed: Float[torch.Tensor, " n_nodes"],
    *,
    max_steps: int = 1000,
) -> Float[torch.Tensor, " n_nodes"]:
    """``seed (M + M^2 + ...)`` for the sparse matrix ``M[rows, cols] = values`` (``seed`` excluded).

    Each step moves every node's mass to its sources: ``x'[c] = sum_r x[r] M[r, c]``, an
    ``index_add`` over the nonzeros in chunks, so memory is linear in the number of nodes beyond
    the edge list itself.
    """
    x = seed.to(torch.float64)
    total = torch.zeros_like(x)
    for _ in range(max_steps):
        nxt = torch.zeros_like(x)
        for lo in range(0, values.numel(), CHUNK):
            hi = lo + CHUNK
            nxt.index_add_(0, cols[lo:hi], x[rows[lo:hi]] * values[lo:hi])
        x = nxt
        if not bool(x.any()):
            return total
        total += x
    raise RuntimeError(
        f"influence did not vanish after {max_steps} steps: the adjacency has a cycle, which an "
        "attribution graph cannot have; check how the graph was built"
    )


def target_seed(graph: Graph) -> Float[torch.Tensor, " n_nodes"]:
    """``w`` as a node vector: each target's weight at its node, zero elsewhere."""
    seed = torch.zeros(graph.n_nodes, dtype=torch.float64)
    targets = graph.indices(NodeKind.TARGET)
    weights = graph.target_weights()
    if weights.numel() != targets.numel():
        raise ConfigError(
            f"the graph has {targets.numel()} target nodes but {weights.numel()} target records; "
            "build it with attribute() or pass one TargetInfo per target node"
        )
    seed[targets] = weights
    return seed


def node_influence(graph: Graph) -> Float[torch.Tensor, " n_nodes"]:
    """Influence of every node on the targets, ``w (A' + A'^2 + ...)`` (targets themselves: 0).

    Example (``f <- tok`` 2, ``T <- f`` 3 and ``T <- tok`` 1: ``A'`` gives T's weight 1 to f
    and tok as .75 / .25, then f passes its .75 on to tok):
        >>> import torch
        >>> from tl_circuits import Graph, TargetInfo
        >>> a = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
        >>> g = Graph.from_tables(
        ...     kind=torch.tensor([0, 2, 3], dtype=torch.int8), layer=torch.tensor([0, -1, 1]),
        ...     position=torch.zeros(3, dtype=torch.long), index=torch.tensor([4, 9, 0]),
        ...     adjacency=a.to_sparse(), activations=torch.ones(1),
        ...     targets=[TargetInfo("x", "logit", (9,), 1.0, 1.0)], target_vectors=torch.zeros(1, 2),
        ...     prompt=None, tokens=[9], str_tokens=["x"], settings={})
        >>> node_influence(g).tolist()
        [0.75, 1.0, 0.0]
    """
    rows, cols, vals = normalized_edges(graph.adjacency)
    return influence_from_edges(rows, cols, vals, target_seed(graph))


def cumulative_share(
    scores: Float[torch.Tensor, " n"], among: Bool[torch.Tensor, " n"] | None = None
) -> Float[torch.Tensor, " n"]:
    """Each entry's descending cumulative share: ``sum_{j ranked at or above i} s_j / sum_j s_j``.

    Entries are ranked largest first (ties in index order) among those in ``among`` (all by
    default); the others get 0. The most influential node gets its own share, the least 1.0:
    circuit-tracer's frontend shows this as a node's "influence", and a threshold ``t`` on it keeps
    the nodes that carry the first ``t`` of the total.

    Example:
        >>> cumulative_share(torch.tensor([1.0, 3.0, 0.0, 4.0])).tolist()
        [1.0, 0.875, 1.0, 0.5]
    """
    values = scores.to(torch.float64)
    ids = torch.arange(values.numel()) if among is None else among.nonzero().flatten()
    order = ids[values[ids].argsort(descending=True, stable=True)]
    total = float(values[ids].sum())
    out = torch.zeros_like(values)
    out[order] = values[order].cumsum(0) / (total if total > 0 else 1.0)
    return out
