"""Export a Graph to the attribution-graph JSON that Neuronpedia-style frontends read.

Field names and node-id conventions follow circuit-tracer's ``frontend/graph_models.py``:
features ``{layer}_{feature}_{pos}``, errors ``{layer}_-1_{pos}``, embeddings ``E_{token}_{pos}``,
logits ``{n_layers+1}_{token}_{pos}``. The JSON is a view of a pruned graph, never a second
computation: an unpruned graph is pruned with :meth:`Graph.prune` (``node_threshold``,
``edge_threshold``), a pruned one is shown as it is, and every node and edge of that graph
becomes one JSON node or link. A node's ``influence`` is its cumulative share of the graph's
feature and error influence (:func:`tl_circuits.graph.influence.cumulative_share`), scaled by the
node threshold the graph was pruned with, so it reads on the full graph's scale as in
circuit-tracer's frontend: the viewer's node slider at that threshold shows every exported node.
"""

from __future__ import annotations

import json
import os
import warnings
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float

from .._atomic import atomic_path
from ..errors import ConfigError, FileFormatError
from ..graph.adjacency import edge_list
from ..graph.influence import cumulative_share, node_influence, target_seed
from ..graph.nodes import NodeKind, feature_rank, kind_mask

if TYPE_CHECKING:
    from ..graph import Graph

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


def node_scores(graph: Graph) -> Float[torch.Tensor, " n_nodes"]:
    """Deprecated (the alias goes in the next release): ``graph.influence()`` plus each target's
    weight at its node (:func:`~tl_circuits.graph.influence.target_seed`)."""
    warnings.warn("tl_circuits.viewer.export.node_scores is deprecated: use graph.influence() (plus "
                  "tl_circuits.graph.influence.target_seed(graph) for the targets' weights)",
                  DeprecationWarning, stacklevel=2)
    return node_influence(graph) + target_seed(graph)


def exported_graph(
    graph: Graph,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    max_feature_nodes: int | None = None,
) -> Graph:
    """The graph :func:`graph_to_json` shows: ``graph.prune(node_threshold, edge_threshold)``, or
    ``graph`` itself when it is already pruned (the thresholds then do not apply); with
    ``max_feature_nodes``, only that many of its features, the most influential
    (:meth:`Graph.restrict`; every other node stays).

    Example:
        >>> shown = exported_graph(graph, 0.8, 0.98)  # doctest: +SKIP
        >>> exported_graph(shown, 0.5, 0.5) is shown  # already pruned: shown as it is  # doctest: +SKIP
        True
    """
    for name, t in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 < t <= 1.0:
            raise ConfigError(f"{name} must be in (0, 1], got {t}; 1.0 keeps everything.")
    if max_feature_nodes is not None and max_feature_nodes < 0:
        raise ConfigError(f"max_feature_nodes must be 0 or more (or None for all), got {max_feature_nodes}")
    g = graph if graph.is_pruned else graph.prune(node_threshold, edge_threshold)
    features = g.indices(NodeKind.FEATURE)
    if max_feature_nodes is not None and features.numel() > max_feature_nodes:
        ranked = features[g.influence()[features].argsort(descending=True, stable=True)]
        others = (~kind_mask(g.node_kind, NodeKind.FEATURE)).nonzero().flatten()
        g = g.restrict(torch.cat([ranked[:max_feature_nodes], others]))
    return g


def graph_to_json(
    graph: Graph,
    *,
    slug: str = "graph",
    scan: str = "tl_circuits",
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    max_feature_nodes: int | None = None,
    annotations: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Neuronpedia-style dict of ``graph`` (see the module docstring): the nodes and edges of
    :func:`exported_graph` (``graph`` pruned with these thresholds unless it is already pruned).
    ``annotations`` (labels, pinnedIds, supernodes, as the viewer saves them) go into ``clerp``
    and ``qParams``; the metadata records the thresholds the shown graph was pruned with.
    """
    g = exported_graph(graph, node_threshold, edge_threshold, max_feature_nodes)
    pruning = g.settings["pruning"]
    n_layers = int(g.settings.get("n_layers", int(g.node_layer.max())))
    kinds = [NodeKind(k) for k in g.node_kind.tolist()]
    layer, pos, index = g.node_layer.tolist(), g.node_position.tolist(), g.node_index.tolist()
    share = cumulative_share(g.influence(), kind_mask(g.node_kind, NodeKind.FEATURE, NodeKind.ERROR))
    share = (share * float(pruning.get("node_threshold", 1.0))).tolist()
    rank = feature_rank(g.node_kind).tolist()
    activations = g.activations.tolist()
    labels = dict((annotations or {}).get("labels", {}))
    target_number = {int(i): t for t, i in enumerate(g.indices(NodeKind.TARGET).tolist())}
    n_pos = len(g.str_tokens)
    ids: dict[int, str] = {}
    seen: set[str] = set()
    nodes: list[dict[str, Any]] = []
    for i, k in enumerate(kinds):
        la, p, ix = layer[i], pos[i], index[i]
        node: dict[str, Any] = {"ctx_idx": p, "run_idx": 0, "reverse_ctx_idx": 0, "clerp": "",
                                "influence": share[i], "activation": None,
                                "token_prob": 0.0, "is_target_logit": False}
        if k == NodeKind.FEATURE:
            node.update(node_id=f"{la}_{ix}_{p}", feature=cantor(la, ix), layer=str(la),
                        feature_type=FEATURE_TYPES[k], jsNodeId=f"{la}_{ix}-0",
                        activation=float(activations[rank[i]]), feature_index=ix)
        elif k == NodeKind.ERROR:
            node.update(node_id=f"{la}_-1_{p}", feature=-1, layer=str(la), feature_type=FEATURE_TYPES[k],
                        jsNodeId=f"{la}_-1-{p}")
        elif k == NodeKind.TOKEN:
            node.update(node_id=f"E_{ix}_{p}", feature=p, layer="E", feature_type=FEATURE_TYPES[k],
                        jsNodeId=f"E_{ix}-{p}", clerp=g.str_tokens[p] if p < n_pos else "")
        else:
            t = g.targets[target_number[i]]
            vocab = t.token_ids[0] if len(t.token_ids) == 1 else -2 - target_number[i]
            p = p if 0 <= p < n_pos else n_pos - 1
            node.update(node_id=f"{n_layers + 1}_{vocab}_{p}", feature=vocab, layer=str(n_layers + 1),
                        ctx_idx=p, feature_type=FEATURE_TYPES[k], jsNodeId=f"L_{vocab}-{p}",
                        token_prob=float(t.probability), is_target_logit=target_number[i] == 0,
                        influence=float(t.weight), clerp=f'Output "{t.label}" (p={t.probability:.3f})')
        if node["node_id"] in seen:  # two targets on one token (e.g. logit differences)
            node["node_id"] = f"{n_layers + 1}_{-2 - target_number[i]}_{p}"
        seen.add(node["node_id"])
        node["clerp"] = labels.get(node["node_id"], node["clerp"])
        ids[i] = node["node_id"]
        nodes.append(node)
    rows, cols, weights = edge_list(g.adjacency)
    weights = weights.to(torch.float64)
    stored = weights != 0
    links = [{"source": ids[c], "target": ids[r], "weight": w}
             for r, c, w in zip(rows[stored].tolist(), cols[stored].tolist(), weights[stored].tolist())]
    add_heads(g, links, ids)

    supernodes = [list(s) for s in (annotations or {}).get("supernodes", [])]
    for label, members in g.supernodes.items():  # from graph.add_supernode
        supernodes.append([str(label), *(ids[m] for m in members)])
    return {
        "metadata": {
            "slug": slug, "scan": scan, "transcoder_list": [], "prompt": g.prompt or "",
            "prompt_tokens": list(g.str_tokens), "node_threshold": pruning["node_threshold"],
            "edge_threshold": pruning["edge_threshold"], "schema_version": 1, "n_layers": n_layers,
            "scores": pruning.get("scores"),
            "generator": "tl_circuits",
        },
        "qParams": {"pinnedIds": list((annotations or {}).get("pinnedIds", [])), "supernodes": supernodes,
                    "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": nodes,
        "links": links,
        **({"qk": list(g.settings["qk"])} if g.settings.get("qk") else {}),
    }


def add_heads(g: Graph, links: list[dict[str, Any]], ids: dict[int, str]) -> None:
    """Put each link's stored head loadings (``tl_circuits.head_loadings``) on it: ``heads``
    (layer, head, weight; largest first) and ``heads_rest`` (the weight no listed head carries)."""
    stored = g.settings.get("head_loadings")
    if not stored:
        return
    by_node = {tuple(n): ids[i] for i, n in enumerate(g.nodes)}
    entries = {(by_node.get(tuple(e["source"])), by_node.get(tuple(e["target"]))): e for e in stored}
    for link in links:
        entry = entries.get((link["source"], link["target"]))
        if entry is not None:
            link["heads"] = [{"layer": la, "head": h, "weight": w} for la, h, w in entry["heads"]][:8]
            link["heads_rest"] = link["weight"] - sum(h["weight"] for h in link["heads"])


def feature_path(root: str | os.PathLike[str], layer: int, index: int) -> Path:
    """Where :func:`export_graph` writes one feature's dashboard JSON."""
    return Path(root) / f"{layer}_{index}.json"


def export_graph(
    graph: Graph | str | os.PathLike[str],
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
