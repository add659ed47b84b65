"""Local web viewer: a Starlette app serving graphs (one, several, or a folder: :mod:`.gallery`),
their dashboards and annotations, and steering when it holds the model (:mod:`.steering`).

Safety: binds 127.0.0.1 by default, accepts only localhost Host headers (no DNS rebinding),
serves static files only from its own ``static/`` folder, takes annotation saves only as
``application/json`` (so other web pages cannot post to it without a CORS preflight, which it
never grants), refuses bodies over ``MAX_SAVE_BYTES`` or not matching the annotations schema
with a 4xx, and writes the sidecar file atomically so a refused save leaves it intact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._atomic import atomic_path
from ..errors import ConfigError, FileFormatError
from .annotations import (
    EMPTY_ANNOTATIONS,
    apply_annotations,
    feature_summary,
    read_annotations,
    sidecar_path,
)
from .attention_api import AttentionAnswers
from .export import validate
from .gallery import Entry, Gallery
from .steering import Busy, Steering

__all__ = ["CSP", "MAX_SAVE_BYTES", "create_app", "serve", "sidecar_path"]

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
    """The Starlette app viewing ``graph``: a Graph, a graph file (or exported JSON), a list of
    them, or a folder of them (a gallery that picks up graphs written while it runs).

    Annotations go to ``annotations_path`` (default: the sidecar beside each graph file; required
    for an in-memory Graph). With ``model`` and ``transcoders`` the page can steer features
    (:mod:`.steering`). API routes take ``?graph=ID`` (an id from ``/api/graphs``; default: the
    first readable graph).
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from ..dashboards import Dashboards
    from .standalone import standalone_html

    gallery = Gallery(graph, annotations_path=annotations_path,
                      export_kw={"node_threshold": node_threshold, "edge_threshold": edge_threshold,
                                 "max_feature_nodes": max_feature_nodes})
    dash = None
    if dashboards is not None:
        dash = dashboards if isinstance(dashboards, Dashboards) else Dashboards.open(dashboards)
    steering = Steering(model, transcoders) if model is not None and transcoders is not None else None
    summaries: dict[tuple[int, int], dict[str, Any]] = {}

    def headers(extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store", **(extra or {})}

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers())

    def entry_of(request: Request) -> Entry:
        """The gallery entry the request names; raises _Refused with the answer to send."""
        gid = request.query_params.get("graph") or None
        try:
            return gallery.entry(gid)
        except KeyError:
            if gid is None:
                raise _Refused(404, _empty_message(gallery)) from None
            raise _Refused(404, f"no graph {gid!r} here; /api/graphs lists the graphs served") from None
        except FileFormatError as e:
            raise _Refused(422, f"graph {gid!r} cannot be shown: {e}") from None

    def features_of(data: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node in data["nodes"]:
            ix = node.get("feature_index")
            if dash is not None and ix is not None and dash.has(int(node["layer"]), ix):
                out[f"{node['layer']}_{ix}"] = dash.feature(int(node["layer"]), ix)
        return out

    def summary_of(layer: int, ix: int) -> dict[str, Any]:
        key = (layer, ix)
        if key not in summaries:
            summaries[key] = feature_summary(dash.feature(layer, ix)) if dash is not None else {}
        return summaries[key]

    def initial_annotations(data: dict[str, Any]) -> dict[str, Any]:
        # before the first save, start from the graph's own pins and supernodes (graph.add_supernode)
        return {**EMPTY_ANNOTATIONS, "pinnedIds": list(data["qParams"]["pinnedIds"]),
                "supernodes": [list(s) for s in data["qParams"]["supernodes"] if len(s) >= 2]}

    def current_annotations(e: Entry) -> dict[str, Any]:
        return read_annotations(e.annotations_path) if e.annotations_path.exists() else initial_annotations(e.data)

    def api(handler: Any) -> Any:
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except _Refused as r:
                return error(r.status, r.message)
        return wrapped

    # The attention panel's answers; computing them holds the model like a steering request.
    attention = AttentionAnswers(model, transcoders, lock=steering.lock if steering is not None else None)

    async def get_heads(request: Request) -> Response:
        e = await run_in_threadpool(entry_of, request)
        source = graph if e.path is None else (None if e.path.suffix == ".json" else e.path)
        data, status = await run_in_threadpool(attention.heads, e.id, source, e.data, request.query_params)
        return JSONResponse(data, status_code=status, headers=headers())

    async def get_qk(request: Request) -> Response:
        e = await run_in_threadpool(entry_of, request)
        data, status = await run_in_threadpool(attention.qk, e.id, e.data, request.query_params)
        return JSONResponse(data, status_code=status, headers=headers())

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=headers())

    async def list_graphs(request: Request) -> Response:
        items = await run_in_threadpool(gallery.listing)
        return JSONResponse({"folder": str(gallery.folder) if gallery.folder else None, "graphs": items,
                             "message": None if items else _empty_message(gallery)}, headers=headers())

    async def get_graph(request: Request) -> Response:
        e = await run_in_threadpool(entry_of, request)
        return JSONResponse({**e.data, "id": e.id}, headers=headers())

    async def info(request: Request) -> Response:
        e = await run_in_threadpool(entry_of, request)
        return JSONResponse({"has_dashboards": dash is not None, "can_intervene": steering is not None,
                             "can_steer": steering is not None, "annotations_file": e.annotations_path.name,
                             "max_save_bytes": MAX_SAVE_BYTES, "graph": e.id}, headers=headers())

    async def feature(request: Request) -> Response:
        layer, ix = request.path_params["layer"], request.path_params["index"]
        if dash is None or not dash.has(layer, ix):
            return error(404, f"no dashboard for layer {layer} feature {ix}")
        return JSONResponse(dash.feature(layer, ix), headers=headers())

    async def feature_labels(request: Request) -> Response:
        e = await run_in_threadpool(entry_of, request)
        keys = sorted({(int(n["layer"]), int(n["feature_index"])) for n in e.data["nodes"]
                       if n.get("feature_index") is not None and dash is not None
                       and dash.has(int(n["layer"]), int(n["feature_index"]))})
        out = await run_in_threadpool(lambda: {f"{la}_{ix}": summary_of(la, ix) for la, ix in keys})
        return JSONResponse(out, headers=headers())

    async def get_annotations(request: Request) -> Response:
        e = await run_in_threadpool(entry_of, request)
        return JSONResponse(current_annotations(e), headers=headers())

    async def put_annotations(request: Request) -> Response:
        e = await run_in_threadpool(entry_of, request)
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
        except (UnicodeDecodeError, json.JSONDecodeError, FileFormatError) as err:
            return error(422, f"annotations refused: {err}")
        with atomic_path(e.annotations_path) as tmp:
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        return JSONResponse({"saved": e.annotations_path.name}, headers=headers())

    async def export_json(request: Request) -> Response:
        e = await run_in_threadpool(entry_of, request)
        data = apply_annotations(e.data, current_annotations(e))
        name = f"{data['metadata']['slug']}.annotated.json"
        return JSONResponse(data, headers=headers({"Content-Disposition": f'attachment; filename="{name}"'}))

    async def export_html(request: Request) -> Response:
        e = await run_in_threadpool(entry_of, request)
        ann = current_annotations(e)
        data = apply_annotations(e.data, ann)
        html = await run_in_threadpool(standalone_html, data, ann, features_of(data))
        name = f"{data['metadata']['slug']}.html"
        return Response(html, media_type="text/html; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"',
                                 "X-Content-Type-Options": "nosniff"})

    async def read_json(request: Request) -> Any:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise _Refused(415, "send the request as application/json")
        body = await request.body()
        if len(body) > MAX_SAVE_BYTES:
            raise _Refused(413, f"requests larger than {MAX_SAVE_BYTES} bytes are refused")
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _Refused(422, f"the request is not valid JSON: {err}") from None

    async def post_steer(request: Request) -> Response:
        if steering is None:
            return error(404, "no model attached: start the viewer with --model (and --transcoders) to steer")
        e = await run_in_threadpool(entry_of, request)
        body = await read_json(request)
        try:
            result = await run_in_threadpool(steering.run, e.data, body)
        except Busy as err:
            return error(429, str(err))
        except (ValueError, KeyError, TypeError, IndexError) as err:  # ConfigError is a ValueError
            return error(422, f"steering refused: {err}")
        return JSONResponse(result, headers=headers())

    async def post_intervene(request: Request) -> Response:
        if steering is None:
            return error(404, "no model attached; start the viewer with a model to intervene")
        e = await run_in_threadpool(entry_of, request)
        body = await read_json(request)
        try:
            result = await run_in_threadpool(steering.legacy, e.data, body["settings"])
        except Busy as err:
            return error(429, str(err))
        except (ValueError, KeyError, TypeError, IndexError) as err:  # ConfigError is a ValueError
            return error(422, f"intervention refused: {err}")
        return JSONResponse(result, headers=headers())

    routes = [
        Route("/", index),
        Route("/api/graphs", list_graphs),
        Route("/api/graph", api(get_graph)),
        Route("/api/info", api(info)),
        Route("/api/feature/{layer:int}/{index:int}", feature),
        Route("/api/feature_labels", api(feature_labels)),
        Route("/api/annotations", api(get_annotations), methods=["GET"]),
        Route("/api/annotations", api(put_annotations), methods=["PUT", "POST"]),
        Route("/api/export.json", api(export_json)),
        Route("/api/export.html", api(export_html)),
        Route("/api/steer", api(post_steer), methods=["POST"]),
        Route("/api/intervene", api(post_intervene), methods=["POST"]),
        Route("/api/heads", api(get_heads)),
        Route("/api/qk", api(get_qk)),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    hosts = allowed_hosts or ["127.0.0.1", "localhost", "::1", "[::1]"]
    return Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)])


class _Refused(Exception):
    """An API answer other than 200: status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _empty_message(gallery: Gallery) -> str:
    if gallery.folder is not None:
        return (f"No graphs in {gallery.folder} yet. Write one there (tl-circuits attribute PROMPT "
                f"--out {gallery.folder}/NAME.safetensors); this page shows it when it appears.")
    return "None of the graph files given can be read; the list says why."


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
    announce: Callable[[str], object] | None = None,
) -> None:
    """Serve the viewer for ``graph`` (a graph file, several, or a folder of graphs) at
    http://host:port/ until interrupted (Ctrl-C). ``announce`` is called with the URL once the
    server listens (never before, and not at all when the port cannot be bound).

    Example:
        >>> serve("runs/", dashboards="dash", announce=print)  # doctest: +SKIP
    """
    import uvicorn

    hosts = ["127.0.0.1", "localhost", "::1", "[::1]"]
    if host not in hosts:
        hosts.append(host)
    app = create_app(graph, dashboards=dashboards, annotations_path=annotations_path, model=model,
                     transcoders=transcoders, allowed_hosts=hosts)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and announce is not None:
                announce(url)

    server = _Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    try:
        server.run()
    except SystemExit as e:  # uvicorn exits when it cannot bind
        if not server.started:
            raise ConfigError(f"the viewer could not listen on {host}:{port} (in use, or not an address "
                              "of this machine); pass another --port") from e
        raise
