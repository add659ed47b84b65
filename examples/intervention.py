"""Suppress the features feeding the top logit and watch the prediction change (tl_circuits.intervene).

For "The capital of France is" the graph names the features with the largest direct positive
effect on the top target (" Paris"). The script zeroes the top 1, 2, 4, ... of them at once (open
loop: later features respond; attention and norms frozen) until the top next token changes, and
reports the smallest such group, or, honestly, that none up to the largest group changed it.
Run: ``python examples/intervention.py [--budget small]``.
"""

from __future__ import annotations

import tl_circuits as tc
from tl_circuits.demo import MAX_FEATURE_NODES, example_args, load_demo, say

PROMPT = "The capital of France is"
MAX_GROUP = 64


def main(argv: list[str] | None = None) -> str:
    """Attribute, rank the features feeding the top target, suppress growing groups."""
    args = example_args(__doc__, argv)
    model, transcoders, budget = load_demo(args.budget)
    graph = tc.attribute(model, transcoders, PROMPT, max_feature_nodes=MAX_FEATURE_NODES[budget])
    top = graph.targets[0]
    top_id = top.token_ids[0]
    row = graph.adjacency.to_dense()[int(graph.indices("target")[0])]
    feats = graph.indices("feature")
    effects = row[feats]
    order = effects.argsort(descending=True)
    order = order[effects[order] > 0][:MAX_GROUP]
    nodes = graph.nodes
    say(f"{PROMPT!r} -> {top.label!r} (p = {top.probability:.2f}); "
        f"{len(order)} features push it directly (of {graph.n_features} active)")
    clean = tc.intervene(model, transcoders, PROMPT, []).logits[-1].softmax(-1)
    tokens = model.tokenizer  # type: ignore[attr-defined]
    size, finding = 1, ""
    while size <= len(order):
        group = [nodes[int(feats[i])] for i in order[:size]]
        edits = [(n.layer, n.position, n.index, 0.0) for n in group]
        probs = tc.intervene(model, transcoders, PROMPT, edits).logits[-1].softmax(-1)
        new_top = int(probs.argmax())
        say(f"  zeroing the top {size:>2}: p({top.label!r}) {float(clean[top_id]):.3f} -> "
            f"{float(probs[top_id]):.3f}, top token {tokens.decode([new_top])!r}")
        if new_top != top_id:
            finding = (f"FINDING: zeroing the {size} features that feed {top.label!r} most changes the "
                       f"top token to {tokens.decode([new_top])!r} (p({top.label!r}) "
                       f"{float(clean[top_id]):.2f} -> {float(probs[top_id]):.2f})")
            break
        last = float(probs[top_id])
        size *= 2
    if not finding:
        n = min(size // 2, len(order))
        finding = (f"FINDING: zeroing up to {n} features that feed {top.label!r} did not change the top "
                   f"token (p({top.label!r}) {float(clean[top_id]):.2f} -> "
                   f"{last if n else float(clean[top_id]):.2f}); the rest runs through error nodes")
    say(finding)
    return finding


if __name__ == "__main__":
    main()
