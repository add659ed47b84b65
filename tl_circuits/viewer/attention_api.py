"""The viewer's attention endpoints: ``/api/heads`` (the heads carrying a link) and ``/api/qk`` (why
a head attends from a query position to a key position), read from the graph JSON when it holds
them, else computed when the server holds the model (``tl-circuits serve GRAPH --model ...``).

``GET /api/heads?source=ID&target=ID`` -> ``{"heads": [{"layer", "head", "weight"}...],
"heads_rest": float}``; ``GET /api/qk?layer=L&head=H&query=Q&key=K`` -> one QK entry (see
:meth:`tl_circuits.attention.QKExplanation.to_json`). Unknown links and missing models give 404,
bad values 400, with ``{"error": "..."}``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

NEED_MODEL = "start the server with --model (and --transcoders) to compute it"

class AttentionAnswers:
    """Answers to ``/api/heads`` and ``/api/qk`` for any graph of a server, as ``(data, status)``;
    what is computed with the model is kept per graph id (the model runs one request at a time)."""

    def __init__(self, model: Any, transcoders: Any, *, lock: threading.Lock | None = None):
        """``lock``: held while the model computes (share the steering lock of the same model)."""
        self.model, self.transcoders = model, transcoders
        self.computed: dict[Any, dict[str, Any]] = {}
        self._lock = lock or threading.Lock()

    def heads(self, gid: str, graph: Any, graph_json: dict[str, Any],
              params: Mapping[str, str]) -> tuple[dict[str, Any], int]:
        """The heads carrying link ``params['source'] -> params['target']`` of ``graph_json``
        (``graph``: its Graph or graph file, None for an exported JSON)."""
        source, target = params.get("source", ""), params.get("target", "")
        link = next((lk for lk in graph_json["links"]
                     if lk["source"] == source and lk["target"] == target), None)
        if link is None:
            return {"error": f"no link from {source!r} to {target!r} in this graph"}, 404
        if "heads" in link:
            return {"heads": link["heads"], "heads_rest": link["heads_rest"]}, 200
        if self.model is None or self.transcoders is None:
            return {"error": f"no head loadings stored for this link; {NEED_MODEL}"}, 404
        if graph is None:
            return {"error": "no head loadings stored for this link, and an exported JSON cannot be "
                             "re-attributed: serve the graph file (Graph.save)"}, 404
        key = (gid, "heads", source, target)
        with self._lock:
            if key not in self.computed:
                try:
                    self.computed[key] = _heads(graph, self.model, self.transcoders, source, target,
                                                link["weight"])
                except (ConfigError, KeyError) as err:
                    return {"error": str(err)}, 400
        return self.computed[key], 200

    def qk(self, gid: str, graph_json: dict[str, Any], params: Mapping[str, str]) -> tuple[dict[str, Any], int]:
        """Why head ``params['head']`` of ``params['layer']`` attends from ``query`` to ``key``."""
        try:
            layer, head, query, key_pos = (int(params[k]) for k in ("layer", "head", "query", "key"))
        except (KeyError, ValueError):
            return {"error": "give integer layer, head, query and key, e.g. "
                             "/api/qk?layer=3&head=1&query=5&key=2"}, 400
        wanted = (layer, head, query, key_pos)
        for q in graph_json.get("qk", []):
            if (q["layer"], q["head"], q["query_pos"], q["key_pos"]) == wanted:
                return q, 200
        if self.model is None or self.transcoders is None:
            return {"error": f"this QK explanation is not stored in the graph; {NEED_MODEL}"}, 404
        key = (gid, "qk", *wanted)
        with self._lock:
            if key not in self.computed:
                from ..attention import explain_attention

                try:
                    self.computed[key] = explain_attention(
                        self.model, self.transcoders, prompt_tokens(graph_json), *wanted).to_json()
                except ConfigError as err:
                    return {"error": str(err)}, 400
        return self.computed[key], 200


def prompt_tokens(graph_json: dict[str, Any]) -> list[int]:
    """The prompt's token ids, from the viewer JSON's embedding nodes."""
    return [int(n["node_id"].split("_")[1])
            for n in sorted((n for n in graph_json["nodes"] if n["feature_type"] == "embedding"),
                            key=lambda n: n["ctx_idx"])]


def _heads(graph: Any, model: Any, transcoders: Any, source: str, target: str, weight: float) -> dict[str, Any]:
    """Head loadings of one link, computed on the graph it came from."""
    from ..attention import head_loadings
    from ..graph import Graph

    g = graph if isinstance(graph, Graph) else Graph.load(graph)
    s, t = node_index(g, source), node_index(g, target)
    loads = head_loadings(model, transcoders, g, [(s, t)], store=False, progress=False)
    top = [{"layer": la, "head": h, "weight": w} for la, h, w in loads.top(0, 8)]
    return {"heads": top, "heads_rest": weight - sum(h["weight"] for h in top)}


def node_index(graph: Any, node_id: str) -> int:
    """The adjacency index of viewer node ``node_id`` in ``graph`` (KeyError if it has none)."""
    head, mid, pos = node_id.rsplit("_", 2)
    if head == "E":
        return graph.node_index_of("token", -1, int(pos), int(mid))
    if mid == "-1":
        return graph.node_index_of("error", int(head), int(pos))
    n_layers = int(graph.settings.get("n_layers", -2))
    if int(head) == n_layers + 1:  # a target: its token id, or -2 - its number
        for number, t in enumerate(graph.targets):
            if (len(t.token_ids) == 1 and t.token_ids[0] == int(mid)) or -2 - number == int(mid):
                return graph.node_index_of("target", n_layers, int(pos), number)
        raise KeyError(f"no target node {node_id!r} in this graph")
    return graph.node_index_of("feature", int(head), int(pos), int(mid))
