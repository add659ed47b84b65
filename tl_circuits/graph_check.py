"""Graph vs model: the effect a graph predicts for zeroing a feature against the measured one.

Under the graph's own assumptions (every layer's features constrained, attention and norms
frozen) zeroing feature ``s`` changes target ``t``'s read-out by exactly ``-A[t, s]``; open-loop
(later features respond) the two only correlate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float

from .errors import ConfigError
from .graph.influence import coalesced
from .interventions import Intervention
from .replacement import clean_run, prepare, run_spliced


@dataclass
class GraphCheck:
    """Predicted vs measured effects of zeroing each top feature on each target's read-out.

    ``predicted[i, t] = -A[t, s_i]``; ``constrained`` is measured with every layer constrained and
    attention and norms frozen (the graph's own assumptions, so it must equal ``predicted`` up to
    round-off); ``open_loop`` lets later features respond (attention and norms still frozen).
    """

    node_ids: list[int]
    predicted: Float[torch.Tensor, "n n_targets"]
    constrained: Float[torch.Tensor, "n n_targets"]
    open_loop: Float[torch.Tensor, "n n_targets"]
    max_abs_error: float
    pearson_open_loop: float

    def __str__(self) -> str:
        return (
            f"GraphCheck({len(self.node_ids)} features x {self.predicted.shape[1]} targets: "
            f"constrained max |error| {self.max_abs_error:.3g}, open-loop Pearson r "
            f"{self.pearson_open_loop:.3f})"
        )


def check_graph(model: Any, transcoders: Any, graph: Any, top: int = 20, *, batch_size: int = 8) -> GraphCheck:
    """Compare the graph's predicted direct effects with interventions on the model.

    For the ``top`` feature nodes by influence, zero each one and measure the change of every
    target's read-out (target direction . final normalised residual at the last position).
    """
    if graph.is_pruned:
        raise ConfigError("check_graph needs the full graph (pruning dropped edges); pass the graph attribute() returned")
    host, transcoders = prepare(model, transcoders)
    tokens = torch.tensor(graph.tokens, dtype=torch.long)
    ranked = graph.top_nodes(top)
    ids = [r.id for r in ranked]
    clean = clean_run(host, transcoders, tokens)
    for r in ranked:
        got = float(clean.acts[r.node.layer][r.node.position, r.node.index])
        want = float(graph.activations[r.id])
        if abs(got - want) > 1e-4 * max(1.0, abs(want)):
            raise ConfigError(
                f"feature {r.node} has activation {got:.6g} here but {want:.6g} in the graph: the "
                "model or transcoders differ from the ones the graph was built with"
            )
    targets = graph.indices("target")
    adj = coalesced(graph.adjacency)
    col_of = torch.full((graph.n_nodes,), -1, dtype=torch.long)
    col_of[torch.tensor(ids, dtype=torch.long)] = torch.arange(len(ids))
    row_of = torch.full((graph.n_nodes,), -1, dtype=torch.long)
    row_of[targets] = torch.arange(targets.numel())
    r, c = adj.indices()
    hit = (col_of[c] >= 0) & (row_of[r] >= 0)
    predicted = torch.zeros(len(ids), targets.numel(), dtype=torch.float64)
    predicted[col_of[c[hit]], row_of[r[hit]]] = -adj.values()[hit].to(torch.float64)
    vectors = graph.target_vectors[graph.node_index[targets].long()].to(host.device, torch.float64)
    last = int(tokens.numel()) - 1

    def measure(constrained: set[int]) -> torch.Tensor:
        rows = []
        for lo in range(0, len(ids), batch_size):
            chunk = ranked[lo : lo + batch_size]
            edits = [[]] + [[Intervention(r.node.layer, r.node.position, r.node.index, 0.0)] for r in chunk]
            run = run_spliced(host, transcoders, tokens[None].expand(len(edits), -1), clean=clean,
                              edits=edits, constrained=constrained, freeze_attention=True)
            read = run.resid_final[:, last].to(torch.float64) @ vectors.T
            rows.append((read[1:] - read[:1]).cpu())
        return torch.cat(rows) if rows else torch.zeros(0, len(targets), dtype=torch.float64)

    constrained = measure(set(range(host.n_layers)))
    open_loop = measure(set())
    err = float((constrained - predicted).abs().max()) if predicted.numel() else 0.0
    return GraphCheck(ids, predicted, constrained, open_loop, err, _pearson(predicted, open_loop))


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else float("nan")
