"""Two-hop facts: "the capital of the state containing Dallas" (-> Austin) and an Eiffel Tower one.

SmolLM2-135M does *not* make the Dallas -> Texas -> Austin jump: it answers " Dallas" or " Texas"
(measured: " Austin" gets about 0.1% probability). This script says so from the model's own numbers,
then traces a two-hop prompt it does get right, "the capital of the country where the Eiffel Tower
is located" -> " Paris", and reports how much the "Eiffel" token drives that answer.

Run: ``python examples/two_hop.py [--budget small]``.
"""

from __future__ import annotations

import torch

import tl_circuits as tc
from tl_circuits.demo import MAX_FEATURE_NODES, example_args, load_demo, say
from tl_circuits.graph.describe import path_in_words, summarize, token_node, word_position

DALLAS = "Fact: the capital of the state containing Dallas is"
EIFFEL = "Fact: the capital of the country where the Eiffel Tower is located is"


def next_token_probs(model: object, prompt: str) -> torch.Tensor:
    """Next-token probabilities of the model itself (no transcoders)."""
    with torch.no_grad():
        return model(prompt)[0, -1].softmax(-1)  # type: ignore[operator]


def main(argv: list[str] | None = None) -> str:
    """Check the Dallas prompt, trace the Eiffel one; returns (and prints) the finding."""
    args = example_args(__doc__, argv)
    model, transcoders, budget = load_demo(args.budget)
    probs = next_token_probs(model, DALLAS)
    tok = model.tokenizer  # type: ignore[attr-defined]
    top_id = int(probs.argmax())
    austin = tok.encode(" Austin", add_special_tokens=False)[0]
    top_word = tok.decode([top_id])
    got_it = top_word == " Austin"
    say(f"{DALLAS!r}: top next token {top_word!r} (p = {float(probs[top_id]):.2f}), "
        f"' Austin' p = {float(probs[austin]):.3f}")
    graph = tc.attribute(model, transcoders, EIFFEL, max_feature_nodes=MAX_FEATURE_NODES[budget])
    pruned = graph.prune(node_threshold=0.8, edge_threshold=0.98)
    for line in summarize(graph, pruned):
        say(line)
    eiffel_pos = word_position(graph, "Eiffel")
    eiffel = token_node(graph, eiffel_pos)
    try:
        path = pruned.strongest_path(token_node(pruned, eiffel_pos),
                                     int(pruned.indices("target")[0]))
        via = path_in_words(pruned, path)
    except tc.ConfigError:
        via = "no path from 'Eiffel' survives pruning"
    share = float(graph.influence()[eiffel] / graph.influence()[graph.indices("token")].sum())
    verdict = ("it answers ' Austin'" if got_it else
               f"it does NOT get ' Austin' (answers {top_word!r}, ' Austin' p = {float(probs[austin]):.3f})")
    finding = (f"FINDING: Dallas two-hop: {verdict}; Eiffel two-hop: {graph.targets[0].label!r} "
               f"(p = {graph.targets[0].probability:.2f}), the token {graph.str_tokens[eiffel_pos]!r} (end of "
               f"'Eiffel') carries {share:.0%} of the token influence; path: {via}")
    say(finding)
    return finding


if __name__ == "__main__":
    main()
