"""A single self-contained HTML file of the viewer: page, styles, d3, app and data inlined.

The data goes in a ``<script type="application/json">`` block with ``<``, ``>`` and ``&``
escaped as JSON unicode escapes, so no token or label can close the block or inject markup.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .._atomic import atomic_path
from .annotations import EMPTY_ANNOTATIONS, feature_summary

STATIC_DIR = Path(__file__).parent / "static"


def _json_for_script(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _inline_js(path: Path) -> str:
    return path.read_text(encoding="utf-8").replace("</script", "<\\/script")


def standalone_html(graph_json: dict[str, Any], annotations: dict[str, Any],
                    features: dict[str, Any]) -> str:
    """The viewer page with everything inlined; opens from disk with no server."""
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    css = (STATIC_DIR / "style.css").read_text(encoding="utf-8").replace("</style", "<\\/style")
    labels = {key: feature_summary(dash) for key, dash in features.items()}
    payload = {"graph": graph_json, "annotations": annotations, "features": features, "feature_labels": labels}
    link = '<link rel="stylesheet" href="/static/style.css">'
    if link not in page or '<script src="/static/app.js"></script>' not in page:
        raise RuntimeError("viewer index.html lost its stylesheet or app.js tag; the standalone export needs them")
    page = page.replace(link, f"<style>\n{css}\n</style>")
    data = f'<script type="application/json" id="tlc-data">{_json_for_script(payload)}</script>\n'

    def inline(match: re.Match[str]) -> str:
        path = (STATIC_DIR / match.group(1)).resolve()
        if STATIC_DIR.resolve() not in path.parents:
            raise RuntimeError(f"viewer index.html names a script outside static/: {match.group(1)}")
        prefix = data if match.group(1) == "vendor/d3.min.js" else ""
        return f"{prefix}<script>\n{_inline_js(path)}\n</script>"

    return re.sub(r'<script src="/static/([A-Za-z0-9_./-]+)"></script>', inline, page)


def export_html(graph_json: dict[str, Any], path: str | os.PathLike[str], *,
                annotations: dict[str, Any] | None = None, features: dict[str, Any] | None = None) -> Path:
    """Write :func:`standalone_html` to ``path`` atomically and return the path."""
    html = standalone_html(graph_json, annotations or EMPTY_ANNOTATIONS, features or {})
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Path(path)
