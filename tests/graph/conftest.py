"""Fixtures for graph tests: a hand-made 5-node graph and one attributed tiny graph."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_model, tiny_set

PROMPT = [3, 17, 9, 41, 5, 22, 7, 8]


def five_node_graph() -> tc.Graph:
    """f0 (L0) <- tok 4;  f1 (L1) <- f0 3, err 1;  T <- f1 2, err -1, tok 1  (err at L0, pos 0)."""
    a = torch.zeros(5, 5, dtype=torch.float64)
    f0, f1, err, tok, tgt = range(5)
    a[f0, tok] = 4.0
    a[f1, f0], a[f1, err] = 3.0, 1.0
    a[tgt, f1], a[tgt, err], a[tgt, tok] = 2.0, -1.0, 1.0
    return tc.Graph.from_tables(
        kind=torch.tensor([0, 0, 1, 2, 3], dtype=torch.int8), layer=torch.tensor([0, 1, 0, -1, 2]),
        position=torch.zeros(5, dtype=torch.long), index=torch.tensor([5, 7, -1, 11, 0]),
        adjacency=a.to_sparse(), activations=torch.tensor([1.5, 0.5], dtype=torch.float64),
        targets=[tc.TargetInfo("x", "logit", (11,), 1.0, 1.0)],
        target_vectors=torch.zeros(1, 4, dtype=torch.float64), prompt="x", tokens=[11],
        str_tokens=["x"], settings={"n_layers": 2}, rows_computed=torch.tensor([0, 1, 4]),
    )


@pytest.fixture(scope="session")
def tiny_graph():
    model = tiny_model("llama", seed=1)
    transcoders = tiny_set("jumprelu_skip", seed=2)
    return tc.attribute(model, transcoders, PROMPT, progress=False)


@pytest.fixture(scope="session")
def tiny_budget_graph():
    model = tiny_model("gpt2", seed=3)
    transcoders = tiny_set("relu", seed=4)
    return tc.attribute(model, transcoders, PROMPT, max_feature_nodes=40, batch_size=16, progress=False)
