"""The viewer's attention endpoints: ``/api/heads`` (the heads carrying a link) and ``/api/qk`` (why
a head attends from a query position to a key position), read from the graph JSON when it holds
them, else computed when the server holds the model (``tl-circuits serve GRAPH --model ...``).

``GET /api/heads?source=ID&target=ID`` -> ``{"heads": [{"layer", "head", "weight"}...],
"heads_rest": float}``; ``GET /api/qk?layer=L&head=H&query=Q&key=K`` -> one QK entry (see
:meth:`tl_circuits.attention.QKExplanation.to_json`). Unknown links and missing models give 404,
bad values 400, with ``{"error": "..."}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

#: ``respond(data, status)``: the server's JSON response with its security headers.
Respond = Callable[[dict[str, Any], int], Any]


def attention_routes(graph: Any, graph_json: dict[str, Any], model: Any, transcoders: Any,
                     respond: Respond) -> list[Any]:
    """Starlette routes for ``/api/heads`` and ``/api/qk`` over ``graph_json`` (and ``graph``, a
    Graph or a graph file, when head loadings must be computed)."""
    from starlette.requests import Request
    from starlette.routing import Route

    links = {(lk["source"], lk["target"]): lk for lk in graph_json["links"]}
    stored_qk = {(q["layer"], q["head"], q["query_pos"], q["key_pos"]): q for q in graph_json.get("qk", [])}
    computed: dict[Any, dict[str, Any]] = {}
    tokens = [int(n["node_id"].split("_")[1])
              for n in sorted((n for n in graph_json["nodes"] if n["feature_type"] == "embedding"),
                              key=lambda n: n["ctx_idx"])]
    need_model = "start the server with --model (and --transcoders) to compute it"

    def heads(request: Request) -> Any:
        source, target = request.query_params.get("source", ""), request.query_params.get("target", "")
        link = links.get((source, target))
        if link is None:
            return respond({"error": f"no link from {source!r} to {target!r} in this graph"}, 404)
        if "heads" in link:
            return respond({"heads": link["heads"], "heads_rest": link["heads_rest"]}, 200)
        if model is None or transcoders is None:
            return respond({"error": f"no head loadings stored for this link; {need_model}"}, 404)
        if graph is None:
            return respond({"error": "no head loadings stored for this link, and an exported JSON "
                                     "cannot be re-attributed: serve the graph file (Graph.save)"}, 404)
        if (source, target) not in computed:
            try:
                computed[source, target] = _heads(graph, model, transcoders, source, target, link["weight"])
            except (ConfigError, KeyError) as err:
                return respond({"error": str(err)}, 400)
        return respond(computed[source, target], 200)

    def qk(request: Request) -> Any:
        try:
            layer, head, query, key_pos = (int(request.query_params[k]) for k in ("layer", "head", "query", "key"))
        except (KeyError, ValueError):
            return respond({"error": "give integer layer, head, query and key, e.g. "
                                     "/api/qk?layer=3&head=1&query=5&key=2"}, 400)
        key = (layer, head, query, key_pos)
        if key in stored_qk:
            return respond(stored_qk[key], 200)
        if model is None or transcoders is None:
            return respond({"error": f"this QK explanation is not stored in the graph; {need_model}"}, 404)
        if key not in computed:
            from ..attention import explain_attention

            try:
                computed[key] = explain_attention(model, transcoders, tokens, *key).to_json()
            except ConfigError as err:
                return respond({"error": str(err)}, 400)
        return respond(computed[key], 200)

    return [Route("/api/heads", heads), Route("/api/qk", qk)]


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
