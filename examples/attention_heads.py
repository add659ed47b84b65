"""Which heads carry the top cross-position edge of "The capital of France is", and why they attend.

Run: ``python examples/attention_heads.py`` (``--budget small`` trains a tiny transcoder set in
seconds when none is cached). It attributes the prompt, prunes the graph, takes the strongest edge
between two positions (BOS excluded: it is the attention sink), splits it by head
(``tl_circuits.head_loadings``) and explains the top head's attention from the target's position
to the source's (``tl_circuits.explain_attention``), printing a block for docs/graphs.md. Rerun it
whenever the demo transcoders change.
"""

from __future__ import annotations

from typing import Any

import torch

import tl_circuits as tc
from tl_circuits.demo import MAX_FEATURE_NODES, example_args, load_demo, say
from tl_circuits.loading import dashboards_dir

PROMPT = "The capital of France is"


def feature_labels(graph: tc.Graph, budget: str) -> dict[str, str]:
    """A short label per feature node from the demo dashboards: the token it fires most on and
    the tokens it promotes most (empty when no dashboards are cached)."""
    try:
        dash = tc.Dashboards.open(dashboards_dir(budget))
    except tc.FileFormatError:
        return {}
    labels = {}
    for n in graph.nodes:
        if n.kind == "feature" and dash.has(n.layer, n.index):
            d = dash.feature(n.layer, n.index)
            top = next((q["examples"][0] for q in d["examples_quantiles"] if q["examples"]), None)
            fires = ""
            if top is not None:
                acts = top["tokens_acts_list"]
                fires = f"fires on {top['tokens'][max(range(len(acts)), key=acts.__getitem__)]!r}, "
            labels[f"{n.layer}_{n.index}_{n.position}"] = f"{fires}promotes {d['top_logits'][:3]}"
    return labels


def top_cross_edge(graph: tc.Graph) -> tuple[int, int, float]:
    """(source, target, weight) of the largest |edge| between two positions, BOS excluded."""
    t, s, w = graph.edge_list()
    start = 1 if graph.settings.get("has_bos") else 0
    ok = (graph.node_position[s] != graph.node_position[t]) & (graph.node_position[s] >= start)
    w = torch.where(ok, w, 0.0)
    e = int(w.abs().argmax())
    return int(s[e]), int(t[e]), float(w[e])


def describe(graph: tc.Graph, i: int, labels: dict[str, Any]) -> str:
    n = graph.nodes[i]
    where = f"{graph.str_tokens[n.position]!r} (position {n.position})"
    if n.kind == "feature":
        key = f"{n.layer}_{n.index}_{n.position}"
        return f"feature L{n.layer}#{n.index} at {where}" + (f" [{labels[key]}]" if key in labels else "")
    if n.kind == "target":
        return f"logit {graph.targets[n.index].label!r}"
    return f"{n.kind} L{n.layer} at {where}" if n.kind == "error" else f"token {where}"


def main(argv: list[str] | None = None) -> str:
    """Attribute, prune, split the top cross-position edge by head, explain the top head."""
    args = example_args(__doc__, argv)
    model, transcoders, budget = load_demo(args.budget)
    graph = tc.attribute(model, transcoders, PROMPT, max_feature_nodes=MAX_FEATURE_NODES[budget])
    pruned = graph.prune(node_threshold=0.8, edge_threshold=0.98)
    labels = feature_labels(pruned, budget)
    s, t, weight = top_cross_edge(pruned)
    loads = tc.head_loadings(model, transcoders, pruned, [(s, t)], progress=False)
    heads = loads.top(0, 5)
    say(f"Top cross-position edge ({budget} demo transcoders): {describe(pruned, s, labels)} -> "
        f"{describe(pruned, t, labels)}, weight {weight:+.3f}")
    for layer, head, w in heads:
        say(f"  L{layer}H{head}: {w:+.3f} ({w / weight:.0%} of the edge)")
    listed = sum(w for *_, w in heads)
    say(f"  all other heads: {weight - listed:+.3f} (the five listed carry {listed / weight:.0%})")
    layer, head, _ = heads[0]
    q, k = int(pruned.node_position[t]), int(pruned.node_position[s])
    ex = tc.explain_attention(model, transcoders, pruned, layer, head, q, k, top=8, labels=labels)
    say(str(ex))
    say("  top query-side sources: " + ", ".join(f"{n} {v:+.2f}" for n, v in ex.query_sources[:4]))
    say("  top key-side sources: " + ", ".join(f"{n} {v:+.2f}" for n, v in ex.key_sources[:4]))
    pair = ex.pairs[0]
    finding = (f"FINDING: the top cross-position edge ({weight:+.3f}) has top head L{layer}H{head} "
               f"({heads[0][2] / weight:.0%} of it); that head's score from {pruned.str_tokens[q]!r} to "
               f"{pruned.str_tokens[k]!r} is {ex.score:+.2f}, its largest term {pair.term:+.2f} = "
               f"{pair.query} x {pair.key}")
    say(finding)
    return finding


if __name__ == "__main__":
    main()
