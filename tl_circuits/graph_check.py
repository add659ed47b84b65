"""Graph vs model: the effect a graph predicts for zeroing a feature against the measured one.

Under the graph's own assumptions (every layer's features constrained, attention and norms
frozen) zeroing feature ``s`` changes target ``t``'s read-out by exactly ``-A[t, s]``, the direct
edge. Open-loop (later features respond; attention and norms still frozen) the graph's prediction
is the sum over its paths (:func:`path_effects`): each active feature with a computed row changes
linearly with its sources (its edges divided by its activation), and passes the change on. What
that leaves out: features without a computed row (their change is taken as 0; a pruned feature
pool folds some into error nodes), features that switch on or off (a ReLU/JumpReLU crossing its
threshold, a TopK selection changing; :attr:`GraphCheck.switched` counts them per source), and
anything attention or a norm would do (frozen in the measurement too). With every row computed
and no feature switching, the path prediction equals the open-loop measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float

from .errors import ConfigError
from .graph.adjacency import edge_list
from .interventions import Intervention
from .replacement import clean_run, prepare, run_spliced


@dataclass
class GraphCheck:
    """Predicted vs measured effects of zeroing each top feature on each target's read-out.

    ``predicted[i, t] = -A[t, s_i]`` (the direct edge); ``constrained`` is measured with every
    layer constrained and attention and norms frozen (the graph's own assumptions, so it must
    equal ``predicted`` up to round-off); ``open_loop`` lets later features respond (attention
    and norms still frozen); ``path_predicted`` is the graph's prediction of ``open_loop``
    through all its paths (:func:`path_effects`). Correlations: ``pearson_open_loop`` (direct
    edge vs open loop, all pairs), ``pearson_path`` (path prediction vs open loop), and the same
    per target (NaN where a target's values are constant). ``switched[i]``: features that
    switched on or off in the open-loop run of source ``i`` (the path prediction assumes none).
    """

    node_ids: list[int]
    predicted: Float[torch.Tensor, "n n_targets"]
    constrained: Float[torch.Tensor, "n n_targets"]
    open_loop: Float[torch.Tensor, "n n_targets"]
    max_abs_error: float
    pearson_open_loop: float
    path_predicted: Float[torch.Tensor, "n n_targets"] | None = None
    pearson_path: float = float("nan")
    pearson_direct_per_target: list[float] = field(default_factory=list)
    pearson_path_per_target: list[float] = field(default_factory=list)
    switched: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"GraphCheck({len(self.node_ids)} features x {self.predicted.shape[1]} targets: "
            f"constrained max |error| {self.max_abs_error:.3g}; open-loop Pearson r: paths "
            f"{self.pearson_path:.3f}, direct edge {self.pearson_open_loop:.3f})"
        )


def check_graph(model: Any, transcoders: Any, graph: Any, top: int = 20, *, batch_size: int = 8) -> GraphCheck:
    """Compare the graph's predicted effects with interventions on the model.

    For the ``top`` feature nodes by influence, zero each one and measure the change of every
    target's read-out (target direction . final normalised residual at the last position), with
    every layer constrained (against the direct edge) and open-loop (against the direct edge and
    the graph's path prediction, :func:`path_effects`).

    Example:
        >>> report = tl_circuits.check_graph(model, transcoders, graph, top=10)  # doctest: +SKIP
        >>> report.pearson_path, report.pearson_open_loop  # doctest: +SKIP
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
    r, c, adj_values = edge_list(graph.adjacency)
    col_of = torch.full((graph.n_nodes,), -1, dtype=torch.long)
    col_of[torch.tensor(ids, dtype=torch.long)] = torch.arange(len(ids))
    row_of = torch.full((graph.n_nodes,), -1, dtype=torch.long)
    row_of[targets] = torch.arange(targets.numel())
    hit = (col_of[c] >= 0) & (row_of[r] >= 0)
    predicted = torch.zeros(len(ids), targets.numel(), dtype=torch.float64)
    predicted[col_of[c[hit]], row_of[r[hit]]] = -adj_values[hit].to(torch.float64)
    vectors = graph.target_vectors[graph.node_index[targets].long()].to(host.device, torch.float64)
    last = int(tokens.numel()) - 1

    switched: list[int] = []

    def measure(constrained: set[int]) -> torch.Tensor:
        rows = []
        for lo in range(0, len(ids), batch_size):
            chunk = ranked[lo : lo + batch_size]
            edits = [[]] + [[Intervention(r.node.layer, r.node.position, r.node.index, 0.0)] for r in chunk]
            run = run_spliced(host, transcoders, tokens[None].expand(len(edits), -1), clean=clean,
                              edits=edits, constrained=constrained, freeze_attention=True)
            read = run.resid_final[:, last].to(torch.float64) @ vectors.T
            rows.append((read[1:] - read[:1]).cpu())
            if not constrained:
                switched.extend(_switched(run.acts, chunk))
        return torch.cat(rows) if rows else torch.zeros(0, len(targets), dtype=torch.float64)

    constrained = measure(set(range(host.n_layers)))
    open_loop = measure(set())
    err = float((constrained - predicted).abs().max()) if predicted.numel() else 0.0
    paths = path_effects(graph, ids)
    per_target = lambda a: [_pearson(a[:, j], open_loop[:, j]) for j in range(a.shape[1])]  # noqa: E731
    return GraphCheck(ids, predicted, constrained, open_loop, err, _pearson(predicted, open_loop),
                      paths, _pearson(paths, open_loop), per_target(predicted), per_target(paths),
                      switched)


def path_effects(graph: Any, sources: list[int]) -> Float[torch.Tensor, "n n_targets"]:
    """The graph's prediction of each target's change when each source feature is zeroed, with
    every feature that has a computed row responding linearly (see the module docstring).

    With ``r_g`` the relative change of feature ``g`` (``-1`` for the zeroed source, 0 for a
    feature without a row), a feature ``f`` with a row changes by ``sum_g A[f, g] r_g`` (its edges
    are ``a_g`` times the effect per unit of ``g``), so ``r_f = sum_g A[f, g] r_g / a_f``, layer
    after layer; a target changes by ``sum_g A[t, g] r_g``. Returns ``[len(sources), n_targets]``
    in float64.

    Example:
        >>> effects = path_effects(graph, [r.id for r in graph.top_nodes(5)])  # doctest: +SKIP
    """
    n_f = graph.n_features
    act = graph.activations.to(torch.float64)
    r, c, v = edge_list(graph.adjacency)
    r, c, v = r.long(), c.long(), v.to(torch.float64)
    ff = (r < n_f) & (c < n_f) & (act[r.clamp_max(max(n_f - 1, 0))] != 0)
    per_unit = torch.sparse_coo_tensor(torch.stack([r[ff], c[ff]]), v[ff] / act[r[ff]], (n_f, n_f),
                                       check_invariants=False)  # indices from a CSR tensor: sorted, unique
    targets = graph.indices("target")
    row_of = torch.full((graph.n_nodes,), -1, dtype=torch.long)
    row_of[targets] = torch.arange(targets.numel())
    tf = (row_of[r] >= 0) & (c < n_f)
    to_targets = torch.sparse_coo_tensor(torch.stack([row_of[r[tf]], c[tf]]), v[tf],
                                         (targets.numel(), n_f), check_invariants=False)
    start = torch.zeros(n_f, len(sources), dtype=torch.float64)
    start[torch.tensor(sources, dtype=torch.long), torch.arange(len(sources))] = -1.0
    rel = start
    # A path visits at most one feature per layer (cross-layer writes included), so n_layers
    # rounds reach every path's end.
    for _ in range(int(graph.settings.get("n_layers", 0)) or int(graph.node_layer.max()) + 1):
        rel = start + torch.sparse.mm(per_unit, rel)
    return torch.sparse.mm(to_targets, rel).T.contiguous()


def _switched(acts: dict[int, torch.Tensor], chunk: list[Any]) -> list[int]:
    """Per intervened run (batch entries 1..), features whose on/off state differs from the
    unedited run (entry 0), the zeroed source itself left out."""
    counts = []
    for i in range(1, len(chunk) + 1):
        n = sum(int(((a[i] != 0) != (a[0] != 0)).sum()) for a in acts.values())
        counts.append(max(0, n - 1))  # graph features are active: the source itself went off
    return counts


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else float("nan")
