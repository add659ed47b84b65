"""Local web viewer of attribution graphs: Neuronpedia-style JSON export, server, standalone HTML."""

from .export import export_graph, graph_to_json, load_schema, validate
from .standalone import export_html, standalone_html

__all__ = ["create_app", "export_graph", "export_html", "graph_to_json", "load_schema", "serve",
           "standalone_html", "validate"]


def serve(*args, **kwargs):
    """Serve the viewer (see :func:`tl_circuits.viewer.server.serve`); imports Starlette lazily."""
    from .server import serve as _serve

    return _serve(*args, **kwargs)


def create_app(*args, **kwargs):
    """The Starlette app (see :func:`tl_circuits.viewer.server.create_app`)."""
    from .server import create_app as _create_app

    return _create_app(*args, **kwargs)
