"""Local web viewer: a Starlette app serving one graph, its dashboards and its annotations.

Safety: binds 127.0.0.1 by default, accepts only localhost Host headers (no DNS rebinding),
serves static files only from its own ``static/`` folder, takes annotation saves only as
``application/json`` (so other web pages cannot post to it without a CORS preflight, which it
never grants), refuses bodies over ``MAX_SAVE_BYTES`` or not matching the annotations schema
with a 4xx, and writes the sidecar file atomically so a refused save leaves it intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._atomic import atomic_path
from ..errors import ConfigError, FileFormatError
from .annotations import EMPTY_ANNOTATIONS, apply_annotations, read_annotations, sidecar_path
from .attention_api import attention_routes
from .export import validate
from .publish import load_graph_json

STATIC_DIR = Path(__file__).parent / "static"
MAX_SAVE_BYTES = 10 * 1024 * 1024
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")




def create_app(
    graph: Any,
    *,
    dashboards: Any = None,
    annotations_path: str | os.PathLike[str] | None = None,
    model: Any = None,
    transcoders: Any = None,
    allowed_hosts: list[str] | None = None,
    node_threshold: float = 1.0,
    edge_threshold: float = 1.0,
    max_feature_nodes: int | None = 400,
) -> Any:
    """The Starlette app viewing ``graph`` (a Graph, a graph file or an exported JSON).

    Annotations go to ``annotations_path`` (default: the sidecar beside a graph file; required
    for an in-memory Graph). With ``model`` and ``transcoders`` and a ``tl_circuits.intervene``
    present, the page can set pinned features and show new next-token probabilities.
    """
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from ..dashboards import Dashboards
    from .standalone import standalone_html

    if annotations_path is None:
        if not isinstance(graph, str | os.PathLike):
            raise ConfigError("an in-memory Graph needs annotations_path=...; or pass the graph's file path.")
        annotations_path = sidecar_path(graph)
    ann_path = Path(annotations_path)
    graph_json = load_graph_json(graph, node_threshold=node_threshold, edge_threshold=edge_threshold,
                                 max_feature_nodes=max_feature_nodes,
                                 slug=Path(graph).stem if isinstance(graph, str | os.PathLike) else "graph")
    dash = None
    if dashboards is not None:
        dash = dashboards if isinstance(dashboards, Dashboards) else Dashboards.open(dashboards)
    intervene = _intervention(model, transcoders, graph_json)

    def headers(extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store", **(extra or {})}

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers())

    def features_of(data: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node in data["nodes"]:
            ix = node.get("feature_index")
            if dash is not None and ix is not None and dash.has(int(node["layer"]), ix):
                out[f"{node['layer']}_{ix}"] = dash.feature(int(node["layer"]), ix)
        return out

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=headers())

    async def get_graph(request: Request) -> Response:
        return JSONResponse(graph_json, headers=headers())

    async def info(request: Request) -> Response:
        return JSONResponse({"has_dashboards": dash is not None, "can_intervene": intervene is not None,
                             "annotations_file": ann_path.name, "max_save_bytes": MAX_SAVE_BYTES},
                            headers=headers())

    async def feature(request: Request) -> Response:
        layer, ix = request.path_params["layer"], request.path_params["index"]
        if dash is None or not dash.has(layer, ix):
            return error(404, f"no dashboard for layer {layer} feature {ix}")
        return JSONResponse(dash.feature(layer, ix), headers=headers())

    # before the first save, start from the graph's own pins and supernodes (graph.add_supernode)
    initial = {**EMPTY_ANNOTATIONS, "pinnedIds": list(graph_json["qParams"]["pinnedIds"]),
               "supernodes": [list(s) for s in graph_json["qParams"]["supernodes"] if len(s) >= 2]}

    def current_annotations() -> dict[str, Any]:
        return read_annotations(ann_path) if ann_path.exists() else initial

    async def get_annotations(request: Request) -> Response:
        return JSONResponse(current_annotations(), headers=headers())

    async def put_annotations(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return error(415, "annotations must be sent as application/json")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_SAVE_BYTES):
            return error(413, f"annotations larger than {MAX_SAVE_BYTES} bytes are refused")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_SAVE_BYTES:
                return error(413, f"annotations larger than {MAX_SAVE_BYTES} bytes are refused")
        try:
            data = json.loads(bytes(body).decode("utf-8"))
            validate(data, "annotations")
        except (UnicodeDecodeError, json.JSONDecodeError, FileFormatError) as e:
            return error(422, f"annotations refused: {e}")
        with atomic_path(ann_path) as tmp:
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        return JSONResponse({"saved": ann_path.name}, headers=headers())

    async def export_json(request: Request) -> Response:
        data = apply_annotations(graph_json, current_annotations())
        name = f"{graph_json['metadata']['slug']}.annotated.json"
        return JSONResponse(data, headers=headers({"Content-Disposition": f'attachment; filename="{name}"'}))

    async def export_html(request: Request) -> Response:
        ann = current_annotations()
        data = apply_annotations(graph_json, ann)
        html = standalone_html(data, ann, features_of(data))
        name = f"{graph_json['metadata']['slug']}.html"
        return Response(html, media_type="text/html; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"',
                                 "X-Content-Type-Options": "nosniff"})

    async def post_intervene(request: Request) -> Response:
        if intervene is None:
            return error(404, "no model attached; start the viewer with a model to intervene")
        try:
            body = await request.json()
            result = intervene(body["settings"])
        except (ValueError, KeyError, TypeError, IndexError) as e:  # ConfigError is a ValueError
            return error(422, f"intervention refused: {e}")
        return JSONResponse(result, headers=headers())

    routes = [
        Route("/", index),
        Route("/api/graph", get_graph),
        Route("/api/info", info),
        Route("/api/feature/{layer:int}/{index:int}", feature),
        Route("/api/annotations", get_annotations, methods=["GET"]),
        Route("/api/annotations", put_annotations, methods=["PUT", "POST"]),
        Route("/api/export.json", export_json),
        Route("/api/export.html", export_html),
        Route("/api/intervene", post_intervene, methods=["POST"]),
        *attention_routes(None if str(graph).endswith(".json") else graph, graph_json, model, transcoders,
                          lambda data, status: JSONResponse(data, status_code=status, headers=headers())),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    hosts = allowed_hosts or ["127.0.0.1", "localhost", "::1", "[::1]"]
    return Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)])


def _intervention(model: Any, transcoders: Any, graph_json: dict[str, Any]) -> Any:
    """A function ``settings -> top next tokens`` if a model is attached and interventions exist."""
    if model is None or transcoders is None:
        return None
    import tl_circuits

    run = getattr(tl_circuits, "intervene", None)
    if run is None:
        return None
    import torch

    from ..hosts import as_host

    embeds = sorted((n["ctx_idx"], int(n["node_id"].split("_")[1]))
                    for n in graph_json["nodes"] if n["feature_type"] == "embedding")
    tokens = torch.tensor([t for _, t in embeds], dtype=torch.long)
    host = as_host(model)

    def probs(changes: list[tuple[int, int, int, float]]) -> torch.Tensor:
        return torch.softmax(run(model, transcoders, tokens, changes).logits[-1].double(), -1)

    clean = probs([])

    def do(settings: list[dict[str, Any]]) -> dict[str, Any]:
        changes = [(int(s["layer"]), int(s["position"]), int(s["feature"]), float(s["value"])) for s in settings]
        p = probs(changes)
        top = p.topk(min(10, p.numel()))
        ids = top.indices.tolist()
        return {"top": [{"token": s, "token_id": i, "prob": float(p[i]), "clean_prob": float(clean[i])}
                        for s, i in zip(host.token_strings(ids), ids)]}

    return do


def serve(
    graph: Any,
    *,
    dashboards: Any = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    annotations_path: str | os.PathLike[str] | None = None,
    model: Any = None,
    transcoders: Any = None,
    log_level: str = "warning",
) -> None:
    """Serve the viewer for ``graph`` at http://host:port/ until interrupted (Ctrl-C).

    Example:
        >>> serve("graph.safetensors", dashboards="dash")  # doctest: +SKIP
    """
    import uvicorn

    hosts = ["127.0.0.1", "localhost", "::1", "[::1]"]
    if host not in hosts:
        hosts.append(host)
    app = create_app(graph, dashboards=dashboards, annotations_path=annotations_path, model=model,
                     transcoders=transcoders, allowed_hosts=hosts)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
