"""Graph files: one ``.safetensors`` holding the tensors, with a JSON header in its metadata.

No pickle: loading a graph someone shared cannot run code. The header carries the format
version; a file from a newer version is refused with a message saying to upgrade. Version 2
stores the adjacency as CSR (``adjacency_crow``, ``adjacency_col``, ``adjacency_values``, int32
indices); version 1 files (sparse COO ``adjacency_indices`` / ``adjacency_values``, or a dense
``adjacency``) still load, converted to CSR.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._atomic import atomic_path
from ..errors import FileFormatError
from .adjacency import to_csr
from .graph import Graph, TargetInfo
from .nodes import NodeKind, kind_mask

FORMAT_VERSION = 2
_KEY = "tl_circuits"


def save_graph(graph: Graph, path: str | os.PathLike[str]) -> None:
    """Write ``graph`` to ``path`` (temporary file, then rename)."""
    adj = to_csr(graph.adjacency)
    tensors: dict[str, torch.Tensor] = {
        "node_kind": graph.node_kind, "node_layer": graph.node_layer,
        "node_position": graph.node_position, "node_index": graph.node_index,
        "activations": graph.activations, "target_vectors": graph.target_vectors,
        "rows_computed": graph.rows_computed,
    }
    tensors["adjacency_crow"] = adj.crow_indices()
    tensors["adjacency_col"] = adj.col_indices()
    tensors["adjacency_values"] = adj.values()
    header = {
        "format_version": FORMAT_VERSION,
        "library_version": _library_version(),
        "prompt": graph.prompt,
        "tokens": graph.tokens,
        "str_tokens": graph.str_tokens,
        "targets": [t._asdict() for t in graph.targets],
        "settings": graph.settings,
        "n_nodes": graph.n_nodes,
        "supernodes": graph.supernodes,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_KEY: json.dumps(header)})


def load_graph(path: str | os.PathLike[str]) -> Graph:
    """Read a graph file, checking its version and contents."""
    if not os.path.isfile(path):
        raise FileFormatError(f"no graph file at {os.fspath(path)!r}: check the path")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise FileFormatError(
            f"{os.fspath(path)!r} is not a readable safetensors graph file ({err}); it may be "
            "truncated or corrupt: re-create it with graph.save()"
        ) from err
    if _KEY not in metadata:
        raise FileFormatError(
            f"{os.fspath(path)!r} is a safetensors file but not a tl_circuits graph (no header)"
        )
    header: dict[str, Any] = json.loads(metadata[_KEY])
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FileFormatError(
            f"{os.fspath(path)!r} uses graph format version {version}, newer than this "
            f"tl_circuits reads (version {FORMAT_VERSION}); upgrade tl_circuits "
            "(pip install -U tl-circuits)"
        )
    n = int(header["n_nodes"])
    missing = {"node_kind", "node_layer", "node_position", "node_index", "activations",
               "target_vectors", "rows_computed"} - set(tensors)
    if missing or not {"adjacency", "adjacency_indices", "adjacency_crow"} & set(tensors):
        raise FileFormatError(
            f"{os.fspath(path)!r} lacks the tensors {sorted(missing) or ['adjacency']}; it is not "
            "a complete tl_circuits graph: re-create it with graph.save()"
        )
    _check_node_tables(path, tensors, n)
    try:
        adjacency = _adjacency(tensors, n)
    except (RuntimeError, ValueError, KeyError) as err:
        raise FileFormatError(
            f"{os.fspath(path)!r} holds an invalid adjacency ({err}); re-create it with graph.save()"
        ) from err
    supernodes = {str(k): [int(i) for i in v] for k, v in header.get("supernodes", {}).items()}
    if any(not 0 <= i < n for ids in supernodes.values() for i in ids):
        raise FileFormatError(
            f"{os.fspath(path)!r} names supernode members outside node ids 0..{n - 1}; the file "
            "is corrupt: re-create it with graph.save()"
        )
    return Graph(
        node_kind=tensors["node_kind"], node_layer=tensors["node_layer"],
        node_position=tensors["node_position"], node_index=tensors["node_index"],
        adjacency=adjacency, activations=tensors["activations"],
        targets=[TargetInfo(**{**t, "token_ids": tuple(t["token_ids"])}) for t in header["targets"]],
        target_vectors=tensors["target_vectors"], prompt=header["prompt"],
        tokens=list(header["tokens"]), str_tokens=list(header["str_tokens"]),
        settings=dict(header["settings"]), rows_computed=tensors["rows_computed"],
        supernodes=supernodes,
    )


def _adjacency(tensors: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    """The file's adjacency as CSR. A shared file is untrusted: the indices are checked (torch's
    sparse invariants) before any sparse kernel runs on them."""
    if "adjacency_crow" in tensors:  # version 2
        crow, col = tensors["adjacency_crow"], tensors["adjacency_col"]
        if crow.dtype not in (torch.int32, torch.int64) or col.dtype != crow.dtype:
            raise ValueError(f"CSR indices of dtypes {crow.dtype} and {col.dtype}; expected int32 or int64")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            return to_csr(torch.sparse_csr_tensor(crow, col, tensors["adjacency_values"], (n, n),
                                                  check_invariants=True))
    if "adjacency" in tensors:  # version 1, dense
        if tuple(tensors["adjacency"].shape) != (n, n):
            raise ValueError(f"a dense adjacency of shape {tuple(tensors['adjacency'].shape)} for {n} nodes")
        return to_csr(tensors["adjacency"])
    return to_csr(torch.sparse_coo_tensor(  # version 1, sparse COO
        tensors["adjacency_indices"], tensors["adjacency_values"], (n, n), check_invariants=True,
    ))


def _check_node_tables(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], n: int) -> None:
    """FileFormatError unless the four node tables have ``n`` entries and every kind code is a
    :class:`NodeKind`."""
    tables = ("node_kind", "node_layer", "node_position", "node_index")
    sizes = {name: tuple(tensors[name].shape) for name in tables}
    if any(size != (n,) for size in sizes.values()):
        raise FileFormatError(
            f"{os.fspath(path)!r} has node tables of shapes {sizes} for {n} nodes; the file is "
            "corrupt: re-create it with graph.save()"
        )
    kinds = tensors["node_kind"]
    integer = not (kinds.is_floating_point() or kinds.is_complex() or kinds.dtype == torch.bool)
    unknown = kinds[~kind_mask(kinds, *NodeKind)].unique().tolist() if integer else [str(kinds.dtype)]
    if unknown:
        valid = {int(k): k.label for k in NodeKind}
        raise FileFormatError(
            f"{os.fspath(path)!r} holds node kind codes {unknown} that are not node kinds {valid}; "
            "it was not written by tl_circuits: re-create it with graph.save()"
        )


def _library_version() -> str:
    from .. import __version__

    return __version__
