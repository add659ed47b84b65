"""Graphs in words (tl_circuits/graph/describe.py): the strongest path starts at a prompt token."""

from __future__ import annotations

import tl_circuits as tc
from tests.core.tiny import tiny_model, tiny_set
from tl_circuits.graph.describe import path_in_words, strongest_token_path, summarize


def test_the_strongest_token_path_never_starts_at_the_bos_sink():
    model = tiny_model("llama", tokenizer=True, seed=6)
    graph = tc.attribute(model, tiny_set("relu"), "w3 w17 Paris w9 London", progress=False)
    assert graph.settings["has_bos"] and graph.tokens[0] == 0
    # Make the BOS token's direct edge to the top target the strongest edge of all.
    bos = int(graph.indices(tc.NodeKind.TOKEN)[0])
    top = int(graph.indices(tc.NodeKind.TARGET)[0])
    dense = graph.adjacency.to_dense()
    dense[top, bos] = 100 * dense[top].abs().max()
    graph.adjacency = dense.to_sparse()
    path = strongest_token_path(graph)
    assert path is not None and graph.nodes[path.nodes[0]].kind == "token"
    assert graph.nodes[path.nodes[0]].position > 0 and path.nodes[-1] == top
    best = max(graph.strongest_path(int(t), top).score for t in graph.indices(tc.NodeKind.TOKEN)[1:])
    assert path.score == best
    words = path_in_words(graph, path)
    assert words.startswith("the token ") and "<bos>" not in words
    assert any(line.startswith("  strongest path: the token") for line in summarize(graph))


def test_a_direct_strongest_path_comes_with_the_strongest_path_through_features():
    model = tiny_model("llama", tokenizer=True, seed=6)
    graph = tc.attribute(model, tiny_set("relu"), "w3 w17 Paris w9 London", progress=False)
    top = int(graph.indices(tc.NodeKind.TARGET)[0])
    last = int(graph.indices(tc.NodeKind.TOKEN)[-1])
    dense = graph.adjacency.to_dense()
    dense[top, last] = 100 * dense[top].abs().max()  # the direct edge dwarfs every other path
    graph.adjacency = dense.to_sparse()
    assert strongest_token_path(graph).nodes == [last, top]
    through = strongest_token_path(graph, via_features=True)
    assert through is not None and len(through.nodes) > 2
    assert all(graph.nodes[n].kind == "feature" for n in through.nodes[1:-1])
    lines = summarize(graph)
    assert lines[-1] == f"  strongest path through features: {path_in_words(graph, through)}"
