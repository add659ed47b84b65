"""Trace "The capital of France is" on SmolLM2-135M and name the path that carries " Paris".

Run: ``python examples/capital_of_france.py`` (``--budget small`` trains a tiny transcoder set in
seconds when none is cached; its graphs are mostly error nodes, so read the path with care).
"""

from __future__ import annotations

import tl_circuits as tc
from tl_circuits.demo import MAX_FEATURE_NODES, example_args, load_demo, say
from tl_circuits.graph.describe import path_in_words, strongest_token_path, summarize

PROMPT = "The capital of France is"


def main(argv: list[str] | None = None) -> str:
    """Attribute, prune, summarise; returns (and prints) the one-line finding."""
    args = example_args(__doc__, argv)
    model, transcoders, budget = load_demo(args.budget)
    graph = tc.attribute(model, transcoders, PROMPT, max_feature_nodes=MAX_FEATURE_NODES[budget])
    pruned = graph.prune(node_threshold=0.8, edge_threshold=0.98)
    for line in summarize(graph, pruned):
        say(line)
    top = graph.targets[0]
    finding = (f"FINDING: SmolLM2 completes {PROMPT!r} with {top.label!r} (p = {top.probability:.2f}); "
               f"strongest path: {path_in_words(pruned, strongest_token_path(pruned))}")
    say(finding)
    return finding


if __name__ == "__main__":
    main()
