"""How a graph holds its adjacency: sparse CSR with int32 indices, and the edge lists read from it.

``A[t, s]`` (rows = targets of edges, columns = sources) is stored as a
``torch.sparse_csr_tensor``: one int32 column index and one value per edge plus one int32 row
offset per node, 8 bytes an edge with float32 weights where sparse COO with int64 indices takes
20. Indices are int64 only when a graph outgrows int32 (2^31 nodes or edges). Entries are sorted
by row, then column, with no duplicates (torch's CSR invariants): the same order as a coalesced
COO tensor, so "the i-th stored entry" means the same thing in both.

Analyses (influence, pruning, scores, queries, the viewer's export) read the adjacency as an
edge list, ``(rows, cols, values)``, from :func:`edge_list`: ``cols`` and ``values`` are the
stored tensors themselves (no copy) and ``rows`` is expanded from the row offsets (int32, 4
bytes an edge while the analysis runs).
"""

from __future__ import annotations

import warnings

import torch
from jaxtyping import Float, Int

__all__ = ["csr_from_counts", "edge_list", "index_dtype", "to_csr"]


def index_dtype(n_nodes: int, nnz: int) -> torch.dtype:
    """int32 when every row offset and column index fits in it, else int64."""
    return torch.int32 if max(n_nodes, nnz) < 2**31 else torch.int64


def csr_from_counts(
    counts: Int[torch.Tensor, " n_rows"], cols: Int[torch.Tensor, " nnz"],
    values: Float[torch.Tensor, " nnz"], n_cols: int, *, check: bool = False,
) -> Float[torch.Tensor, "n_rows n_cols"]:
    """A CSR tensor from each row's entry count and the entries in row-major order (columns
    sorted and unique within each row). ``check`` validates the invariants (files from others)."""
    n_rows = int(counts.numel())
    dtype = index_dtype(max(n_rows, n_cols), int(values.numel()))
    crow = torch.zeros(n_rows + 1, dtype=dtype, device=values.device)
    crow[1:] = counts.cumsum(0)
    return _csr(crow, cols.to(dtype), values, (n_rows, n_cols), check)


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int],
         check: bool) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we use its stable core
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=check)


def to_csr(adjacency: Float[torch.Tensor, "n n"]) -> Float[torch.Tensor, "n n"]:
    """``adjacency`` (dense, sparse COO or CSR) as CSR with the smallest index dtype that fits;
    itself when it already is one. Zeros stored in a sparse input stay stored."""
    if adjacency.layout == torch.sparse_csr:
        crow, col = adjacency.crow_indices(), adjacency.col_indices()
        dtype = index_dtype(max(adjacency.shape), adjacency._nnz())
        if crow.dtype == dtype:
            return adjacency
        n_rows, n_cols = adjacency.shape
        return _csr(crow.to(dtype), col.to(dtype), _own(adjacency), (n_rows, n_cols), False)
    if adjacency.layout != torch.sparse_coo:
        adjacency = adjacency.to_sparse()
    coo = adjacency.coalesce()
    rows, cols = coo.indices()
    counts = torch.bincount(rows, minlength=coo.shape[0])
    return csr_from_counts(counts, cols, _own(coo), coo.shape[1])


def _own(sparse: torch.Tensor) -> torch.Tensor:
    """The values of a sparse tensor, sharing their storage but not holding the tensor itself:
    ``values()`` is a view whose base is the sparse tensor, which would keep its indices (int64:
    16 bytes an edge for COO) alive for as long as the new CSR tensor lives."""
    return sparse.values().detach()


def edge_list(
    adjacency: Float[torch.Tensor, "n n"],
) -> tuple[Int[torch.Tensor, " nnz"], Int[torch.Tensor, " nnz"], Float[torch.Tensor, " nnz"]]:
    """``(rows, cols, values)`` of every stored entry, in row-major order.

    ``cols`` and ``values`` are the CSR tensor's own (views, no copy); ``rows`` is expanded from
    the row offsets, in the index dtype (int32). Dense and COO inputs are converted first.

    Example:
        >>> a = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
        >>> [t.tolist() for t in edge_list(a)]
        [[0, 1], [1, 0], [2.0, 3.0]]
    """
    csr = to_csr(adjacency)
    crow, cols = csr.crow_indices(), csr.col_indices()
    counts = crow[1:] - crow[:-1]
    rows = torch.repeat_interleave(torch.arange(counts.numel(), dtype=crow.dtype, device=crow.device),
                                   counts, output_size=int(cols.numel()))
    return rows, cols, csr.values()
