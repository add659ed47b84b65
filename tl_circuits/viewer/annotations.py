"""Annotations of a graph in the viewer: labels, pinned nodes and supernodes, kept in a JSON
sidecar file beside the graph (``<stem>.annotations.json``) and checked against the shipped
``annotations`` JSON Schema. Shared by the server, the standalone HTML export and the CLI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import FileFormatError
from .export import validate

EMPTY_ANNOTATIONS: dict[str, Any] = {"version": 1, "labels": {}, "pinnedIds": [], "supernodes": []}


def sidecar_path(graph_path: str | os.PathLike[str]) -> Path:
    """Where annotations of ``graph_path`` are saved: ``<stem>.annotations.json`` beside it.

    Example:
        >>> sidecar_path("runs/paris.tlc").as_posix()
        'runs/paris.annotations.json'
    """
    p = Path(graph_path)
    return p.with_name(f"{p.stem}.annotations.json")

def read_annotations(path: Path) -> dict[str, Any]:
    """Saved annotations, or empty ones when the sidecar is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        validate(data, "annotations")
        return data
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, FileFormatError):
        return json.loads(json.dumps(EMPTY_ANNOTATIONS))

def apply_annotations(graph_json: dict[str, Any], ann: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``graph_json`` with labels as ``clerp`` and pins/supernodes in ``qParams``."""
    out = json.loads(json.dumps(graph_json))
    labels = ann.get("labels", {})
    for node in out["nodes"]:
        if node["node_id"] in labels:
            node["clerp"] = labels[node["node_id"]]
    out["qParams"]["pinnedIds"] = list(ann.get("pinnedIds", []))
    out["qParams"]["supernodes"] = [list(s) for s in ann.get("supernodes", [])]
    return out
