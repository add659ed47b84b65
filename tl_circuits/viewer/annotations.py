"""Annotations of a graph in the viewer: labels, pinned nodes and supernodes, kept in a JSON
sidecar file beside the graph (``<stem>.annotations.json``) and checked against the shipped
``annotations`` JSON Schema. Shared by the server, the standalone HTML export and the CLI.
Features without a label get an automatic one from their dashboard (:func:`feature_summary`).
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


def feature_summary(dashboard: dict[str, Any], k: int = 3) -> dict[str, Any]:
    """The few tokens that name a feature: its top promoted tokens and the tokens it fires on most
    (the highest-activation token of each top example), for the page's automatic labels.

    Example:
        >>> feature_summary({"top_logits": ["a", "b"], "examples_quantiles": [{"examples": [
        ...     {"tokens": ["x", "y"], "tokens_acts_list": [0.1, 2.0]}]}]})
        {'promoted': ['a', 'b'], 'activating': ['y']}
    """
    activating: list[str] = []
    groups = dashboard.get("examples_quantiles") or []
    for ex in (groups[0].get("examples", []) if groups else []):
        acts = ex.get("tokens_acts_list") or []
        if acts:
            tok = ex["tokens"][max(range(len(acts)), key=acts.__getitem__)]
            if tok not in activating:
                activating.append(tok)
        if len(activating) >= k:
            break
    return {"promoted": list(dashboard.get("top_logits") or [])[:k], "activating": activating}
