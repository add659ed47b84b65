"""Graphs in words: node descriptions, token positions and the strongest token-to-output path,
for summaries printed by the demo, the command line and the examples.

Example:
    >>> from tl_circuits.graph.describe import summarize
    >>> for line in summarize(graph, graph.prune()):  # doctest: +SKIP
    ...     print(line)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .nodes import NodeKind

if TYPE_CHECKING:
    from .graph import Graph
    from .queries import Path


def describe_node(graph: Graph, node_id: int, tokens: list[str] | None = None) -> str:
    """A node in words: 'feature 123 of layer 4 at " France"', 'the token " is"', ..."""
    words: list[str] = graph.str_tokens if tokens is None else tokens
    node = graph.nodes[node_id]
    kind = NodeKind.parse(node.kind)
    where = f"at {words[node.position]!r}"
    if kind == NodeKind.FEATURE:
        return f"feature {node.index} of layer {node.layer} {where}"
    if kind == NodeKind.ERROR:
        return f"the error node of MLP {node.layer} {where}"
    if kind == NodeKind.TOKEN:
        return f"the token {words[int(node.position)]!r}"
    return f"the output {graph.targets[node.index].label!r}"


def word_position(graph: Graph, word: str) -> int:
    """Position of the token that completes the first occurrence of ``word`` in the prompt."""
    text = ""
    for i, piece in enumerate(graph.str_tokens):
        text += piece
        if word in text:
            return i
    raise ConfigError(f"{word!r} is not in the prompt {graph.prompt!r}")


def token_node(graph: Graph, position: int) -> int:
    """Node id of the input token at ``position``."""
    ids = graph.indices(NodeKind.TOKEN)
    return int(ids[graph.node_position[ids] == position][0])


def strongest_token_path(graph: Graph, target: int = 0, *, via_features: bool = False) -> Path | None:
    """The strongest path (:meth:`Graph.strongest_path`) from a prompt token to target ``target``
    (``via_features``: the strongest one through features only, which dashboards can explain).

    A BOS token in front is not a candidate: it is the same in every prompt and is where attention
    sinks, so its direct path to the output is often the strongest while saying nothing about the
    prompt (the same reason it carries no feature or error nodes).
    """
    dst = int(graph.indices(NodeKind.TARGET)[target])
    best = None
    tokens = graph.indices(NodeKind.TOKEN)
    if graph.settings.get("has_bos"):
        tokens = tokens[graph.node_position[tokens] != 0]
    for src in tokens.tolist():
        try:
            path = graph.strongest_path(src, dst, via_features=via_features)
        except ConfigError:
            continue
        if best is None or path.score > best.score:
            best = path
    return best


def path_in_words(graph: Graph, path: Path | None) -> str:
    """``"the token ' France' -> feature 12 of layer 3 at ' France' -> the output ' Paris'"``."""
    if path is None:
        return "no path from a token to the target survives pruning"
    steps = " -> ".join(describe_node(graph, n) for n in path.nodes)
    return f"{steps} (carries {path.score:.1%} of the target's influence)"


def n_edges(graph: Graph) -> int:
    """Number of nonzero edges of ``graph``."""
    return int(graph.adjacency.values().count_nonzero())


def summarize(graph: Graph, pruned: Graph | None = None) -> list[str]:
    """Short summary lines of a graph: prompt, top target, size, scores, strongest token path
    (and the strongest one through features when that one passes none)."""
    small: Graph = graph if pruned is None else pruned
    top = graph.targets[0]
    scores = small.scores()
    path = strongest_token_path(small)
    return [
        f"Prompt: {graph.prompt!r}",
        f"  top target: {top.label!r} (p = {top.probability:.2f})",
        f"  graph: {graph.n_nodes} nodes, {graph.n_features} active features; pruned: "
        f"{small.n_nodes} nodes, {n_edges(small)} edges",
        f"  replacement score {scores['replacement']:.2f}, completeness {scores['completeness']:.2f}",
        f"  strongest path: {path_in_words(small, path)}",
        *via_features_line(small, path),
    ]


def via_features_line(graph: Graph, path: Path | None) -> list[str]:
    """The strongest path through features, as a summary line, where ``path`` (the strongest
    token path) has no feature on it."""
    if path is not None and any(graph.nodes[n].kind == "feature" for n in path.nodes):
        return []
    through = strongest_token_path(graph, via_features=True)
    return [] if through is None else [f"  strongest path through features: {path_in_words(graph, through)}"]
