"""Sport of an athlete: "Fact: Roger Federer is famous for playing the sport of" -> " tennis".

Ranks the input tokens by their influence on the answer (does the name drive it, or the word
"sport"?) and prints the strongest path from the name to the answer.
Run: ``python examples/sport_of_athlete.py [--budget small]``.
"""

from __future__ import annotations

import tl_circuits as tc
from tl_circuits.demo import MAX_FEATURE_NODES, example_args, load_demo, say
from tl_circuits.graph.describe import path_in_words, summarize, token_node, word_position

PROMPT = "Fact: Roger Federer is famous for playing the sport of"


def main(argv: list[str] | None = None) -> str:
    """Attribute, rank the tokens, trace the name; returns (and prints) the finding."""
    args = example_args(__doc__, argv)
    model, transcoders, budget = load_demo(args.budget)
    graph = tc.attribute(model, transcoders, PROMPT, max_feature_nodes=MAX_FEATURE_NODES[budget])
    pruned = graph.prune(node_threshold=0.8, edge_threshold=0.98)
    for line in summarize(graph, pruned):
        say(line)
    ranked = graph.top_nodes(3, kinds=("token",))
    total = float(graph.influence()[graph.indices("token")].sum())
    say("Most influential input tokens: " + ", ".join(
        f"{graph.str_tokens[r.node.position]!r} {r.influence / total:.0%}" for r in ranked))
    name_pos = word_position(graph, "Federer")
    try:
        path = pruned.strongest_path(token_node(pruned, name_pos),
                                     int(pruned.indices("target")[0]))
        via = path_in_words(pruned, path)
    except tc.ConfigError:
        via = "no path from the name survives pruning"
    best = ranked[0]
    finding = (f"FINDING: {graph.targets[0].label!r} (p = {graph.targets[0].probability:.2f}); most "
               f"influential token {graph.str_tokens[best.node.position]!r} "
               f"({best.influence / total:.0%} of token influence); from the name: {via}")
    say(finding)
    return finding


if __name__ == "__main__":
    main()
