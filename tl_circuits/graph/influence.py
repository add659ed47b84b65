"""Influence of nodes on the targets: ``w (A' + A'^2 + ...)`` with ``A'`` the row-normalised |A|.

Rows of ``A`` are targets of edges, columns their sources, so ``w A'`` spreads each target's
weight over its direct sources in proportion to |edge|, and each further power one step further
back. Attribution graphs are acyclic, so the series ends after at most depth-many terms.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int


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
    """``adjacency`` as a coalesced sparse COO tensor (itself when it already is one)."""
    return (adjacency if adjacency.is_sparse else adjacency.to_sparse()).coalesce()


def abs_entries(
    adjacency: Float[torch.Tensor, "n_nodes n_nodes"],
) -> tuple[Int[torch.Tensor, " nnz"], Int[torch.Tensor, " nnz"], Float[torch.Tensor, " nnz"],
           Int[torch.Tensor, " nnz"] | None]:
    """``(rows, cols, |values| in float64, entries)`` of the stored nonzero entries.

    ``entries`` are their positions among the coalesced adjacency's stored entries, or None when
    every stored entry is nonzero (then ``rows`` and ``cols`` are views of the adjacency's
    indices, not copies: a graph of 10^8 edges is not duplicated).
    """
    adj = coalesced(adjacency)
    rows, cols = adj.indices()
    vals = adj.values().abs().to(torch.float64)
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

    Works on a sparse COO or dense ``adjacency`` without forming anything ``n_nodes x n_nodes``.
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
