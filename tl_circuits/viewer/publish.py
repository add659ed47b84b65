"""Graphs as the viewer shows them: the viewer JSON of a graph or graph file, and the files a
user exports (Neuronpedia-style JSON with per-feature dashboard files, or one self-contained HTML
page with the annotations saved beside the graph)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import FileFormatError
from .annotations import apply_annotations, read_annotations, sidecar_path
from .export import export_graph, graph_to_json, validate
from .standalone import export_html


def load_graph_json(graph: Any, **export_kw: Any) -> dict[str, Any]:
    """The viewer JSON of a Graph, a saved graph file, or an already exported ``.json``."""
    if isinstance(graph, str | os.PathLike):
        path = Path(graph)
        if not path.is_file():
            raise FileFormatError(f"no graph at {path}: pass a graph file saved with Graph.save or "
                                  "a JSON written by tl_circuits.viewer.export_graph")
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise FileFormatError(f"{path} is not valid JSON ({e}); re-export the graph.") from e
            validate(data, "graph")
            return data
        from ..graph import Graph

        graph = Graph.load(path)
    data = graph_to_json(graph, **export_kw)
    validate(data, "graph")
    return data




def export_file(graph: str | os.PathLike[str], out: str | os.PathLike[str], *,
                dashboards: str | os.PathLike[str] | None = None, node_threshold: float = 0.8,
                edge_threshold: float = 0.98) -> Path:
    """Export the graph file ``graph`` to ``out``: a ``.html`` page that opens with no server
    (:func:`.standalone.export_html`), else Neuronpedia-style JSON (:func:`.export.export_graph`),
    with the annotations saved beside the graph and, given ``dashboards``, the features' dashboards.
    Returns ``out``.
    """
    annotations = read_annotations(sidecar_path(graph))
    if not str(out).endswith(".html"):
        return export_graph(graph, out, dashboards=dashboards, node_threshold=node_threshold,
                            edge_threshold=edge_threshold, annotations=annotations)
    from ..dashboards import Dashboards

    data = apply_annotations(load_graph_json(graph, node_threshold=node_threshold,
                                             edge_threshold=edge_threshold, slug=Path(graph).stem),
                             annotations)
    features = {}
    if dashboards:
        dash = Dashboards.open(dashboards)
        for n in data["nodes"]:
            ix = n.get("feature_index")
            if ix is not None and dash.has(int(n["layer"]), ix):
                features[f"{n['layer']}_{ix}"] = dash.feature(int(n["layer"]), ix)
    return export_html(data, out, annotations=annotations, features=features)
