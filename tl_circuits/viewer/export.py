"""Export a Graph to the attribution-graph JSON that Neuronpedia-style frontends read.

Field names and node-id conventions follow circuit-tracer's ``frontend/graph_models.py``:
features ``{layer}_{feature}_{pos}``, errors ``{layer}_-1_{pos}``, embeddings ``E_{token}_{pos}``,
logits ``{n_layers+1}_{token}_{pos}``. Nodes and edges are pruned as circuit-tracer does: a
node's score is its influence on the targets (``w (A' + A'^2 + ...)``, ``A'`` the row-normalised
``|A|``), features and errors are kept while their cumulative share stays within
``node_threshold``, and edges (scored ``A'[t, s] * score[t]``) within ``edge_threshold``.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from .._atomic import atomic_path
from ..errors import ConfigError, FileFormatError

SCHEMA_DIR = Path(__file__).parent / "schema"
FEATURE_TYPES = ("cross layer transcoder", "mlp reconstruction error", "embedding", "logit")


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped with the viewer: ``'graph'`` or ``'annotations'``.

    Example:
        >>> load_schema("graph")["required"]
        ['metadata', 'qParams', 'nodes', 'links']
    """
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


def validate(data: Any, name: str) -> None:
    """Raise FileFormatError if ``data`` does not match schema ``name``, naming the first problem."""
    try:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import best_match
    except ImportError as e:
        raise ConfigError("checking viewer JSON needs the jsonschema package: pip install 'tl-circuits[viewer]'") from e

    error = best_match(Draft202012Validator(load_schema(name)).iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise FileFormatError(f"{name} JSON does not match its schema at {where}: {error.message}")


def cantor(x: int, y: int) -> int:
    """Cantor pairing, circuit-tracer's single integer for (layer, feature).

    Example:
        >>> cantor(1, 2), cantor(0, 0)
        (8, 0)
    """
    return (x + y) * (x + y + 1) // 2 + y


def node_scores(graph: Any) -> Float[torch.Tensor, " n_nodes"]:
    """Influence of every node on the targets, plus each target's own weight."""
    adj = graph.adjacency if graph.adjacency.is_sparse else graph.adjacency.to_sparse()
    adj = adj.coalesce()
    rows, cols = adj.indices()
    vals = adj.values().abs().to(torch.float64)
    sums = torch.zeros(graph.n_nodes, dtype=torch.float64).index_add_(0, rows, vals)
    vals = vals / sums.clamp(min=1e-10)[rows]
    seed = torch.zeros(graph.n_nodes, dtype=torch.float64)
    seed[graph.indices("target")] = graph.target_weights()
    total, x = seed.clone(), seed
    for _ in range(graph.n_nodes + 1):
        x = torch.zeros_like(x).index_add_(0, cols, x[rows] * vals)
        if not bool(x.any()):
            break
        total += x
    return total


def graph_to_json(
    graph: Any,
    *,
    slug: str = "graph",
    scan: str = "tl_circuits",
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    max_feature_nodes: int | None = None,
    annotations: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Neuronpedia-style dict of ``graph`` (see the module docstring); ``annotations``
    (labels, pinnedIds, supernodes, as the viewer saves them) go into ``clerp`` and ``qParams``."""
    for name, t in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 < t <= 1.0:
            raise ConfigError(f"{name} must be in (0, 1], got {t}; 1.0 keeps everything.")
    n_layers = int(graph.settings.get("n_layers", int(graph.node_layer.max())))
    kind, layer = graph.node_kind.tolist(), graph.node_layer.tolist()
    pos, index = graph.node_position.tolist(), graph.node_index.tolist()
    score = node_scores(graph)
    inner = ((graph.node_kind == 0) | (graph.node_kind == 1)).nonzero().flatten()
    order = inner[score[inner].argsort(descending=True)]
    total = float(score[inner].sum()) or 1.0
    cumulative = torch.zeros(graph.n_nodes, dtype=torch.float64)
    cumulative[order] = score[order].cumsum(0) / total
    keep = torch.zeros(graph.n_nodes, dtype=torch.bool)
    keep[(graph.node_kind == 2) | (graph.node_kind == 3)] = True
    kept_inner = order[(cumulative[order] - score[order] / total) < node_threshold]
    if max_feature_nodes is not None:
        feats = kept_inner[graph.node_kind[kept_inner] == 0]
        kept_inner = kept_inner[(graph.node_kind[kept_inner] == 1) | torch.isin(kept_inner, feats[:max_feature_nodes])]
    keep[kept_inner] = True

    adj = (graph.adjacency if graph.adjacency.is_sparse else graph.adjacency.to_sparse()).coalesce()
    rows, cols = adj.indices()
    weights = adj.values().to(torch.float64)
    mask = keep[rows] & keep[cols] & (weights != 0)
    rows, cols, weights = rows[mask], cols[mask], weights[mask]
    row_sums = torch.zeros(graph.n_nodes, dtype=torch.float64).index_add_(0, rows, weights.abs())
    edge_score = weights.abs() / row_sums.clamp(min=1e-10)[rows] * score[rows]
    e_order = edge_score.argsort(descending=True)
    e_cum = edge_score[e_order].cumsum(0) / (float(edge_score.sum()) or 1.0)
    e_keep = e_order[(e_cum - edge_score[e_order] / (float(edge_score.sum()) or 1.0)) < edge_threshold]
    e_keep = e_keep.sort().values
    rows, cols, weights = rows[e_keep], cols[e_keep], weights[e_keep]
    connected = torch.zeros(graph.n_nodes, dtype=torch.bool)
    connected[rows] = True
    connected[cols] = True
    keep &= connected | (graph.node_kind == 2) | (graph.node_kind == 3)

    labels = dict((annotations or {}).get("labels", {}))
    target_number = {int(i): t for t, i in enumerate(graph.indices("target").tolist())}
    n_pos = len(graph.str_tokens)
    activations = graph.activations.tolist()
    ids: dict[int, str] = {}
    seen: set[str] = set()
    nodes: list[dict[str, Any]] = []
    for i in keep.nonzero().flatten().tolist():
        k, la, p, ix = kind[i], layer[i], pos[i], index[i]
        node: dict[str, Any] = {"ctx_idx": p, "run_idx": 0, "reverse_ctx_idx": 0, "clerp": "",
                                "influence": float(cumulative[i]), "activation": None,
                                "token_prob": 0.0, "is_target_logit": False}
        if k == 0:
            node.update(node_id=f"{la}_{ix}_{p}", feature=cantor(la, ix), layer=str(la),
                        feature_type=FEATURE_TYPES[0], jsNodeId=f"{la}_{ix}-0",
                        activation=float(activations[i]), feature_index=ix)
        elif k == 1:
            node.update(node_id=f"{la}_-1_{p}", feature=-1, layer=str(la), feature_type=FEATURE_TYPES[1],
                        jsNodeId=f"{la}_-1-{p}")
        elif k == 2:
            node.update(node_id=f"E_{ix}_{p}", feature=p, layer="E", feature_type=FEATURE_TYPES[2],
                        jsNodeId=f"E_{ix}-{p}", clerp=graph.str_tokens[p] if p < n_pos else "")
        else:
            t = graph.targets[target_number[i]]
            vocab = t.token_ids[0] if len(t.token_ids) == 1 else -2 - target_number[i]
            p = p if 0 <= p < n_pos else n_pos - 1
            node.update(node_id=f"{n_layers + 1}_{vocab}_{p}", feature=vocab, layer=str(n_layers + 1),
                        ctx_idx=p, feature_type=FEATURE_TYPES[3], jsNodeId=f"L_{vocab}-{p}",
                        token_prob=float(t.probability), is_target_logit=target_number[i] == 0,
                        influence=float(t.weight), clerp=f'Output "{t.label}" (p={t.probability:.3f})')
        if node["node_id"] in seen:  # two targets on one token (e.g. logit differences)
            node["node_id"] = f"{n_layers + 1}_{-2 - target_number[i]}_{p}"
        seen.add(node["node_id"])
        node["clerp"] = labels.get(node["node_id"], node["clerp"])
        ids[i] = node["node_id"]
        nodes.append(node)
    links = [{"source": ids[c], "target": ids[r], "weight": w}
             for r, c, w in zip(rows.tolist(), cols.tolist(), weights.tolist()) if r in ids and c in ids]

    supernodes = [list(s) for s in (annotations or {}).get("supernodes", [])]
    for label, members in getattr(graph, "supernodes", {}).items():  # from graph.add_supernode
        names = [ids[m] for m in members if m in ids]
        if len(names) >= 1:
            supernodes.append([str(label), *names])
    return {
        "metadata": {
            "slug": slug, "scan": scan, "transcoder_list": [], "prompt": graph.prompt or "",
            "prompt_tokens": list(graph.str_tokens), "node_threshold": node_threshold,
            "edge_threshold": edge_threshold, "schema_version": 1, "n_layers": n_layers,
            "generator": "tl_circuits",
        },
        "qParams": {"pinnedIds": list((annotations or {}).get("pinnedIds", [])), "supernodes": supernodes,
                    "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": nodes,
        "links": links,
    }


def feature_path(root: str | os.PathLike[str], layer: int, index: int) -> Path:
    """Where :func:`export_graph` writes one feature's dashboard JSON."""
    return Path(root) / f"{layer}_{index}.json"


def export_graph(
    graph: Any,
    path: str | os.PathLike[str],
    *,
    dashboards: Any = None,
    slug: str | None = None,
    scan: str = "tl_circuits",
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    max_feature_nodes: int | None = None,
    annotations: dict[str, Any] | None = None,
) -> Path:
    """Write ``graph`` (a Graph or a path to a saved one) as Neuronpedia-style JSON at ``path``.

    With ``dashboards`` (a :class:`~tl_circuits.Dashboards` or its path), each feature node's
    dashboard goes to ``<path stem>_features/{layer}_{index}.json``. Files are written atomically
    and the graph JSON is checked against the shipped schema first. Returns ``path``.

    Example:
        >>> export_graph(graph, "out/graph.json", dashboards="dash")  # doctest: +SKIP
    """
    from ..dashboards import Dashboards

    if isinstance(graph, str | os.PathLike):
        from ..graph import Graph

        graph = Graph.load(graph)
    path = Path(path)
    data = graph_to_json(graph, slug=slug or path.stem, scan=scan, node_threshold=node_threshold,
                         edge_threshold=edge_threshold, max_feature_nodes=max_feature_nodes,
                         annotations=annotations)
    validate(data, "graph")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data), encoding="utf-8")
    if dashboards is not None:
        dash = dashboards if isinstance(dashboards, Dashboards) else Dashboards.open(dashboards)
        with atomic_path(path.with_name(f"{path.stem}_features"), directory=True) as tmp:
            for node in data["nodes"]:
                la, ix = node.get("layer"), node.get("feature_index")
                if ix is not None and dash.has(int(la), ix):
                    feature_path(tmp, int(la), ix).write_text(
                        json.dumps(dash.feature(int(la), ix)), encoding="utf-8")
    return path
