"""A custom target: what makes SmolLM2 prefer " Paris" over " London" after "The capital of France is"?

The target is the logit difference logit(" Paris") - logit(" London") (``targets=[(" Paris",
" London")]``); the graph explains that one number. Run: ``python examples/custom_target.py``.
"""

from __future__ import annotations

import torch

import tl_circuits as tc
from tl_circuits.demo import MAX_FEATURE_NODES, example_args, load_demo, say
from tl_circuits.graph.describe import describe_node, path_in_words, strongest_token_path, summarize

PROMPT = "The capital of France is"
PAIR = (" Paris", " London")


def main(argv: list[str] | None = None) -> str:
    """Attribute the logit difference; returns (and prints) the finding."""
    args = example_args(__doc__, argv)
    model, transcoders, budget = load_demo(args.budget)
    graph = tc.attribute(model, transcoders, PROMPT, targets=[PAIR],
                         max_feature_nodes=MAX_FEATURE_NODES[budget])
    pruned = graph.prune(node_threshold=0.8, edge_threshold=0.98)
    for line in summarize(graph, pruned)[2:]:
        say(line)
    a, b = graph.targets[0].token_ids
    with torch.no_grad():
        logits = model(PROMPT)[0, -1]  # type: ignore[operator]
    diff = float(logits[a] - logits[b])
    driver = graph.top_nodes(1)[0] if graph.n_features else None
    driver_words = describe_node(graph, driver.id) if driver else "no feature"
    finding = (f"FINDING: logit(' Paris') - logit(' London') = {diff:.2f}; top feature: "
               f"{driver_words}; strongest path: {path_in_words(pruned, strongest_token_path(pruned))}")
    say(finding)
    return finding


if __name__ == "__main__":
    main()
