"""The graphs a viewer serves: one graph, several files, or every graph in a folder.

A folder is scanned again on every listing, so graphs written while the server runs appear and
deleted ones go. Each file's viewer JSON is built once per (size, mtime) and cached; a file that
cannot be read is listed as unreadable with the reason, and the others keep working.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError, FileFormatError
from .annotations import sidecar_path
from .publish import load_graph_json

#: File suffixes read as graphs in a folder (Graph.save files, exported viewer JSON).
GRAPH_SUFFIXES = (".safetensors", ".tlc", ".json")
#: Names in a folder that are never graphs (sidecars, dashboards and feature files).
_SKIP_SUFFIXES = (".annotations.json", ".annotated.json")


@dataclass
class Entry:
    """One graph of the gallery: where it comes from, its summary, its viewer JSON once built."""

    id: str
    path: Path | None
    annotations_path: Path
    stamp: tuple[int, int] = (0, 0)
    summary: dict[str, Any] = field(default_factory=dict)
    graph_json: dict[str, Any] | None = None
    error: str | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The viewer JSON (built by :meth:`Gallery.entry`)."""
        if self.graph_json is None:
            raise FileFormatError(f"graph {self.id!r} has not been read yet")
        return self.graph_json


def _is_graph_file(path: Path) -> bool:
    name = path.name
    return (path.is_file() and name.endswith(GRAPH_SUFFIXES) and not name.endswith(_SKIP_SUFFIXES)
            and name != "index.json" and not name.startswith("."))


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def summarize_json(data: dict[str, Any]) -> dict[str, Any]:
    """Prompt, top output (label and probability), scores and size of a viewer JSON.

    Example:
        >>> summarize_json({"metadata": {"prompt": "Hi"}, "nodes": [], "links": []})["prompt"]
        'Hi'
    """
    md = data.get("metadata", {})
    logits = [n for n in data.get("nodes", []) if n.get("feature_type") == "logit"]
    top = max(logits, key=lambda n: n.get("token_prob", 0.0), default=None)
    label = None
    if top is not None:
        clerp = str(top.get("clerp", ""))
        label = clerp[len('Output "'):clerp.rfind('" (p=')] if clerp.startswith('Output "') and '" (p=' in clerp else clerp
    return {
        "prompt": md.get("prompt", ""),
        "top_output": label,
        "top_prob": None if top is None else float(top.get("token_prob", 0.0)),
        "scores": md.get("scores"),
        "n_features": sum(n.get("feature_type") == "cross layer transcoder" for n in data.get("nodes", [])),
        "n_links": len(data.get("links", [])),
    }


class Gallery:
    """The graphs served: ``source`` is a Graph, a graph file, a folder, or a list of files.

    Example:
        >>> g = Gallery("runs/")  # doctest: +SKIP
        >>> [e["id"] for e in g.listing()]  # doctest: +SKIP
        ['demo-0.safetensors', 'demo-1.safetensors']
    """

    def __init__(self, source: Any, *, annotations_path: str | os.PathLike[str] | None = None,
                 export_kw: dict[str, Any] | None = None):
        self._kw = dict(export_kw or {})
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self.folder: Path | None = None
        self._files: list[Path] = []
        if isinstance(source, str | os.PathLike) and Path(source).is_dir():
            self.folder = Path(source)
        elif isinstance(source, list | tuple):
            self._files = [Path(p) for p in source]
            if not self._files:
                raise ConfigError("no graph files given: pass a graph file, several, or a folder of graphs")
            for p in self._files:
                if p.is_dir():
                    raise ConfigError(f"{p} is a folder: serve one folder on its own, or list graph files")
        elif isinstance(source, str | os.PathLike):
            path = Path(source)
            if not path.is_file():
                raise FileFormatError(f"no graph at {path}: pass a graph file saved with Graph.save, a "
                                      "JSON written by tl_circuits.viewer.export_graph, or a folder of them")
            self._files = [path]
        else:  # an in-memory Graph
            if annotations_path is None:
                raise ConfigError("an in-memory Graph needs annotations_path=...; or pass the graph's file path.")
            data = load_graph_json(source, slug="graph", **self._kw)
            self._entries["graph"] = Entry("graph", None, Path(annotations_path), graph_json=data,
                                           summary=summarize_json(data))
        if annotations_path is not None and len(self._files) == 1:
            self._fixed_annotations: Path | None = Path(annotations_path)
        else:
            self._fixed_annotations = None

    def _paths(self) -> list[Path]:
        if self.folder is not None:
            if not self.folder.is_dir():
                return []
            return sorted(p for p in self.folder.iterdir() if _is_graph_file(p))
        return [p for p in self._files if p.is_file()]

    def _id(self, path: Path) -> str:
        return path.name if self.folder is not None else (path.name if len(self._files) == 1 else str(path))

    def _refresh(self) -> None:
        """Rescan the files; new or changed ones get a fresh summary (graph JSON built lazily)."""
        if not self._files and self.folder is None:
            return
        seen: set[str] = set()
        for path in self._paths():
            gid = self._id(path)
            seen.add(gid)
            try:
                stamp = _stamp(path)
            except OSError:
                continue
            old = self._entries.get(gid)
            if old is not None and old.stamp == stamp:
                continue
            ann = self._fixed_annotations or sidecar_path(path)
            self._entries[gid] = Entry(gid, path, ann, stamp=stamp, summary=_header_summary(path))
        for gid in [g for g in self._entries if g not in seen]:
            del self._entries[gid]

    def listing(self) -> list[dict[str, Any]]:
        """Every graph: id, file name, prompt, top output, scores, date, and ``error`` if unreadable."""
        with self._lock:
            self._refresh()
            entries = list(self._entries.values())
        out = []
        for e in entries:
            item = {"id": e.id, "name": e.path.name if e.path else e.id, "prompt": None, "top_output": None,
                    "top_prob": None, "scores": None, **e.summary, "date": None, "error": e.error}
            if e.path is not None:
                item["date"] = datetime.fromtimestamp(e.stamp[1] / 1e9, UTC).isoformat(timespec="seconds")
            if item.get("error") is None and e.summary.get("error"):
                item["error"] = e.summary["error"]
            out.append(item)
        return out

    def entry(self, gid: str | None) -> Entry:
        """The entry ``gid`` (None: the first readable one) with its viewer JSON built.

        Raises KeyError for an unknown id and FileFormatError for an unreadable file.
        """
        with self._lock:
            self._refresh()
            if gid is None:
                readable = [e for e in self._entries.values() if not e.error and not e.summary.get("error")]
                if not readable:
                    raise KeyError("no graph")
                gid = readable[0].id
            e = self._entries[gid]
        if e.graph_json is None and e.path is not None:
            if e.error:
                raise FileFormatError(e.error)
            try:
                data = load_graph_json(e.path, slug=e.path.stem, **self._kw)
            except (FileFormatError, ConfigError, OSError, ValueError, KeyError) as err:
                e.error = f"unreadable: {err}"
                raise FileFormatError(e.error) from err
            e.graph_json = data
            e.summary = {**e.summary, **summarize_json(data)}
        return e


def _header_summary(path: Path) -> dict[str, Any]:
    """A cheap summary without building the graph: the safetensors JSON header, or the JSON."""
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or "nodes" not in data or "metadata" not in data:
                return {"error": "unreadable: not a viewer graph JSON (no metadata/nodes)"}
            return summarize_json(data)
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if "tl_circuits" not in meta:
            return {"error": "unreadable: a safetensors file but not a tl_circuits graph (no header)"}
        header = json.loads(meta["tl_circuits"])
        targets = header.get("targets") or [{}]
        scores = header.get("settings", {}).get("pruning", {}).get("scores")
        return {"prompt": header.get("prompt") or "", "top_output": targets[0].get("label"),
                "top_prob": targets[0].get("probability"), "scores": scores}
    except Exception as err:  # noqa: BLE001 - any failure to read a user file is "unreadable"
        return {"error": f"unreadable: {type(err).__name__}: {err}"}
