"""Hand-made viewer graph JSON (no model): any number of positions and layers, for layout tests,
and attention data in the format of docs/viewer.md ("Attention") for the attention panel."""

from __future__ import annotations

import random
from typing import Any


def graph_json(n_pos: int, n_layers: int, n_features: int, *, seed: int = 0, slug: str = "synthetic",
               attention: bool = False) -> dict[str, Any]:
    """A valid viewer JSON: tokens ``t0..``, ``n_features`` features at random (layer, position)
    in the later half of the positions, an error node per used cell, 5 outputs at the last
    position, and edges from every node to a few nodes above it."""
    rng = random.Random(seed)
    tokens = [f"t{i}" for i in range(n_pos)]
    nodes: list[dict[str, Any]] = []

    def add(node_id: str, layer: str, pos: int, kind: str, **kw: Any) -> dict[str, Any]:
        node = {"node_id": node_id, "feature": 0, "layer": layer, "ctx_idx": pos, "feature_type": kind,
                "jsNodeId": node_id, "clerp": "", "influence": kw.pop("influence", 0.5), "activation": None, **kw}
        nodes.append(node)
        return node

    for p in range(n_pos):
        add(f"E_{100 + p}_{p}", "E", p, "embedding", clerp=tokens[p])
    cells = set()
    for i in range(n_features):
        la, p = rng.randrange(n_layers), rng.randrange(n_pos // 2, n_pos) if rng.random() < 0.7 else rng.randrange(n_pos)
        add(f"{la}_{i}_{p}", str(la), p, "cross layer transcoder", feature_index=i, activation=rng.random() * 5,
            influence=rng.random() * 0.8)
        cells.add((la, p))
    for la, p in sorted(cells)[::3]:
        add(f"{la}_-1_{p}", str(la), p, "mlp reconstruction error", influence=rng.random() * 0.8)
    for k in range(5):
        add(f"{n_layers + 1}_{200 + k}_{n_pos - 1}", str(n_layers + 1), n_pos - 1, "logit",
            clerp=f'Output "out{k}" (p={0.5 / (k + 1):.3f})', token_prob=0.5 / (k + 1), influence=0.5 / (k + 1))

    def rank(n: dict[str, Any]) -> int:
        return 0 if n["layer"] == "E" else int(n["layer"]) + 1

    links = []
    for a in nodes:
        above = [b for b in nodes if rank(b) > rank(a) and b["ctx_idx"] >= a["ctx_idx"] and b["layer"] != "E"]
        for b in rng.sample(above, min(4, len(above))):
            links.append({"source": a["node_id"], "target": b["node_id"], "weight": rng.uniform(-1, 1)})
    data: dict[str, Any] = {
        "metadata": {"slug": slug, "scan": "synthetic", "transcoder_list": [], "prompt": " ".join(tokens),
                     "prompt_tokens": tokens, "node_threshold": 0.8, "schema_version": 1, "n_layers": n_layers},
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": nodes, "links": links,
    }
    if attention:
        add_attention(data)
    return data


def add_attention(data: dict[str, Any]) -> dict[str, Any]:
    """Heads on the first cross-position link into a feature, and one QK entry for its top head."""
    by_id = {n["node_id"]: n for n in data["nodes"]}
    link = next(lk for lk in data["links"] if by_id[lk["source"]]["ctx_idx"] != by_id[lk["target"]]["ctx_idx"]
                and by_id[lk["target"]]["feature_type"] == "cross layer transcoder")
    w = link["weight"]
    link["heads"] = [{"layer": 1, "head": 3, "weight": 0.6 * w}, {"layer": 0, "head": 2, "weight": 0.3 * w}]
    link["heads_rest"] = w - 0.9 * w
    src, tgt = by_id[link["source"]], by_id[link["target"]]
    data["qk"] = [{"layer": 1, "head": 3, "query_pos": tgt["ctx_idx"], "key_pos": src["ctx_idx"], "score": 2.5,
                   "softcapped": False,
                   "pairs": [{"query": tgt["node_id"], "key": src["node_id"], "term": 1.5},
                             {"query": "bias", "key": src["node_id"], "term": 0.7}],
                   "other": {"position": 0.2, "norm": 0.1}}]
    return link
