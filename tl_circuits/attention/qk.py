"""QK attribution: one head's pre-softmax score split into (query source, key source) pair terms.

Under the freezes of the replacement model (attention patterns, every norm scale, q/k norms
included; MLP outputs constant except through transcoder skips) the query vector of head ``h`` at
position ``q`` is affine in what the nodes write, and so is the key at ``k``:

    q_vec = sum_s a_s + a_0,      a_s = (d q_vec / d y(site_s)) v_s
    k_vec = sum_s b_s + b_0,      b_s = (d k_vec / d y(site_s)) v_s

with ``v_s`` what node ``s`` writes (features, errors, tokens, as in the graph's edges) and
``a_0``, ``b_0`` what the query and key hold when every node writes zero (projection and norm
biases, transcoder decoder biases: the source ``"bias"``). On models with learned position
embeddings (GPT-2) the token nodes' writes are split: the token embedding stays with the token
node, the position embeddings of all positions form the source ``"position"``. Rotary
embeddings are fixed rotations at the two positions, grouped-query attention picks the key head
``h // (n_heads / n_kv_heads)``, so the pre-softmax score is exactly bilinear:

    score = scale <q_vec, k_vec> = sum_{s, s'} scale <a_s, b_s'>   (s, s' over nodes and "bias")

The rows ``a_s`` (one per dimension of the head) come from the attribution row engine, reading
the query and the key instead of a transcoder input. A soft-capped model (Gemma-2) applies
``cap * tanh(score / cap)`` afterwards; the pre-cap score is decomposed and ``softcapped`` says so.
Everything is summed in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float

from ..attribution.engine import ReadOuts, RowEngine
from ..attribution.layout import NodeLayout, build_layout
from ..hosts.base import HookFn
from ..replacement import ReplacementState, run_replacement
from .inputs import (
    AttentionInputs,
    check_graph_run,
    check_head,
    check_positions,
    node_ids,
    read_inputs,
)

BIAS = "bias"
POSITION = "position"


@dataclass
class QKPair:
    """One term of the score: ``scale <a_query, b_key>``."""

    query: str
    key: str
    term: float


@dataclass
class QKExplanation:
    """The decomposed pre-softmax score of (``layer``, ``head``) from ``query_pos`` to ``key_pos``.

    ``pairs``: the largest terms by |term|; ``other``: named remainder terms (``"other pairs"``:
    every pair not listed), so ``sum(pairs) + sum(other) == score``. ``query_sources`` /
    ``key_sources``: each source's total on its side (``scale <a_s, k_vec>``, ``scale <q_vec,
    b_s>``), largest first. ``softcap``: the model's cap (None if it has none);
    ``capped_score`` is what the softmax sees, ``pattern`` the attention weight itself.
    """

    layer: int
    head: int
    query_pos: int
    key_pos: int
    score: float
    capped_score: float
    softcap: float | None
    pattern: float
    pairs: list[QKPair]
    other: dict[str, float]
    query_sources: list[tuple[str, float]] = field(default_factory=list)
    key_sources: list[tuple[str, float]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def softcapped(self) -> bool:
        return self.softcap is not None

    def to_json(self) -> dict[str, Any]:
        """The viewer's ``QKEntry`` (docs/viewer.md)."""
        return {"layer": self.layer, "head": self.head, "query_pos": self.query_pos,
                "key_pos": self.key_pos, "score": self.score, "softcapped": self.softcapped,
                "pairs": [{"query": p.query, "key": p.key, "term": p.term} for p in self.pairs],
                "other": dict(self.other)}

    def label(self, node: str) -> str:
        return f"{node} ({self.labels[node]})" if self.labels.get(node) else node

    def __str__(self) -> str:
        cap = f", soft-capped to {self.capped_score:+.4f} (cap {self.softcap:g})" if self.softcap else ""
        lines = [f"L{self.layer}H{self.head} query {self.query_pos} -> key {self.key_pos}: score "
                 f"{self.score:+.4f}{cap}, attention {self.pattern:.3f}"]
        lines += [f"  {p.term:+.4f}  {self.label(p.query)}  x  {self.label(p.key)}" for p in self.pairs]
        lines += [f"  {v:+.4f}  {k}" for k, v in self.other.items()]
        return "\n".join(lines)


def explain_attention(
    model: Any, transcoders: Any, prompt_or_graph: Any, layer: int, head: int, query_pos: int,
    key_pos: int, *, top: int = 20, labels: Mapping[str, str] | None = None, prepend_bos: bool = True,
) -> QKExplanation:
    """Why head ``head`` of ``layer`` attends from ``query_pos`` to ``key_pos``: its pre-softmax
    score split exactly into (query-side source, key-side source) terms (see the module docs).

    Args:
        model, transcoders: as for :func:`tl_circuits.attribute` (HookedTransformer, Hugging
            Face or local nnsight models).
        prompt_or_graph: a prompt (as for ``attribute``) or a :class:`~tl_circuits.Graph` made
            with this model and these transcoders (its tokens are used; checked).
        top: how many pairs to list (the rest is one ``"other pairs"`` term).
        labels: node id -> label (e.g. feature descriptions) for the printed table; token
            nodes are labelled with their token.

    Returns:
        A :class:`QKExplanation`; ``print`` it for a table, ``.to_json()`` for the viewer.

    Example:
        >>> ex = tc.explain_attention(model, transcoders, graph, 12, 3, 5, 2)  # doctest: +SKIP
        >>> print(ex)  # score, then the top pairs: term, query source x key source  # doctest: +SKIP
    """
    inp = read_inputs(model, transcoders, prompt_or_graph, prepend_bos=prepend_bos)
    return explain_many(inp, [(layer, head, query_pos, key_pos)], top=top, labels=labels)[0]


def explain_many(inp: AttentionInputs, requests: Sequence[tuple[int, int, int, int]], *, top: int = 20,
                 labels: Mapping[str, str] | None = None) -> list[QKExplanation]:
    """:func:`explain_attention` for several (layer, head, query_pos, key_pos), one forward pass."""
    n_pos = int(inp.tokens.numel())
    for layer, head, q, k in requests:
        check_head(inp.sites, inp.host.n_layers, layer, head)
        check_positions(n_pos, q, k)
    layers = sorted({r[0] for r in requests})
    captured: dict[str, torch.Tensor] = {}
    hooks: list[tuple[str, HookFn]] = []
    for la in layers:
        for name in (inp.sites.q(la), inp.sites.k(la), inp.sites.pattern(la)):
            hooks.append((name, _capture(captured, name)))
    pos_site = inp.sites.pos_embed()
    if pos_site is not None:
        hooks.append((pos_site, _capture(captured, pos_site)))
    state = run_replacement(inp.host, inp.transcoders, inp.tokens, extra=hooks)
    pos_embed = captured[pos_site][0].detach() if pos_site in captured else None
    if inp.graph is not None:
        check_graph_run(inp.graph, state)
    layout = build_layout(state, inp.tokens, inp.host.n_layers, has_bos=inp.has_bos, n_targets=0)
    ids = node_ids(layout)
    tensors = {}
    for i, la in enumerate(layers):
        tensors[-2 * i - 2] = captured[inp.sites.q(la)].flatten(2)
        tensors[-2 * i - 3] = captured[inp.sites.k(la)].flatten(2)
    engine = _ReadEngine(state, layout, inp.transcoders, 64, tensors=tensors)
    names = dict(labels or {})
    for p, s in enumerate(inp.host.token_strings(inp.tokens.tolist())):
        names.setdefault(ids[layout.token_offset + p], repr(s))
    out = []
    for layer, head, q, k in requests:
        i = layers.index(layer)
        qt, kt = captured[inp.sites.q(layer)], captured[inp.sites.k(layer)]
        kv = head // (qt.shape[2] // kt.shape[2])
        a = _side(engine, -2 * i - 2, q, head, qt.shape[-1], layout, pos_embed)
        b = _side(engine, -2 * i - 3, k, kv, kt.shape[-1], layout, pos_embed)
        scale, cap = inp.sites.scaling(layer)
        pattern = float(captured[inp.sites.pattern(layer)][0, head, q, k])
        out.append(_decompose(layer, head, q, k, a, b, qt[0, q, head], kt[0, k, kv], scale, cap,
                              pattern, ids, top, names))
    return out


def _decompose(layer: int, head: int, q: int, k: int, a: torch.Tensor, b: torch.Tensor,
               q_vec: torch.Tensor, k_vec: torch.Tensor, scale: float, cap: float | None,
               pattern: float, ids: list[str], top: int, labels: dict[str, str]) -> QKExplanation:
    """The explanation from each source's query part ``a`` and key part ``b`` (float64; with a
    last "position" row when the model has learned position embeddings)."""
    q_vec, k_vec = q_vec.detach().double().cpu(), k_vec.detach().double().cpu()
    a = torch.cat([a, (q_vec - a.sum(0))[None]])  # the last row: "bias"
    b = torch.cat([b, (k_vec - b.sum(0))[None]])
    names = [*ids, POSITION, BIAS] if a.shape[0] == len(ids) + 2 else [*ids, BIAS]
    score = scale * float(q_vec @ k_vec)
    qa = (a != 0).any(1).nonzero().flatten()
    kb = (b != 0).any(1).nonzero().flatten()
    pairs = _top_pairs(scale * a[qa], b[kb], top)
    listed = [QKPair(names[int(qa[r])], names[int(kb[c])], t) for r, c, t in pairs]
    q_tot, k_tot = scale * (a @ k_vec), scale * (b @ q_vec)

    def ranked(tot: torch.Tensor) -> list[tuple[str, float]]:
        order = tot.abs().argsort(descending=True)[:top]
        return [(names[int(j)], float(tot[j])) for j in order if tot[j] != 0]

    capped = score if cap is None else cap * float(torch.tanh(torch.tensor(score / cap, dtype=torch.float64)))
    return QKExplanation(
        layer, head, q, k, score, capped, cap, pattern, listed,
        {"other pairs": score - sum(p.term for p in listed)}, ranked(q_tot), ranked(k_tot),
        {n: labels[n] for n in {p.query for p in listed} | {p.key for p in listed} if n in labels},
    )


def _top_pairs(a: Float[torch.Tensor, "n d"], b: Float[torch.Tensor, "m d"], top: int,
               block: int = 2048) -> list[tuple[int, int, float]]:
    """The ``top`` entries of ``a @ b.T`` by magnitude, as (row, column, value), a block of rows
    at a time (the full matrix of two sides' sources may not fit in memory)."""
    best: list[tuple[float, int, int]] = []
    for lo in range(0, a.shape[0], block):
        terms = a[lo : lo + block] @ b.T
        flat = terms.abs().flatten()
        vals, idx = flat.topk(min(top, flat.numel()))
        for v, j in zip(vals.tolist(), idx.tolist()):
            best.append((v, lo + j // b.shape[0], j % b.shape[0]))
        best = sorted(best, reverse=True)[:top]
    return [(r, c, float(a[r] @ b[c])) for _, r, c in best]


def _side(engine: RowEngine, site: int, pos: int, head: int, d_head: int, layout: NodeLayout,
          pos_embed: torch.Tensor | None) -> Float[torch.Tensor, "n_sources d_head"]:
    """Each source's part of one head's query (or key) vector at ``pos``: d_head rows; with
    ``pos_embed`` (learned positions), the token rows lose their position embedding's part,
    which becomes one more row ("position") at the end."""
    width = engine.read_tensor(site).shape[-1]
    vectors = torch.zeros(d_head, width, dtype=engine.state.logits.dtype)
    vectors[:, head * d_head : (head + 1) * d_head] = torch.eye(d_head)
    reads = ReadOuts([site] * d_head, [pos] * d_head, vectors.to(engine.state.logits.device))
    parts = engine.rows(reads)[:, : layout.target_offset].detach().double().cpu().T
    if pos_embed is None:
        return parts
    g_embed = engine.gradients(reads)[-1]  # the gradient at the embedding: d_head pos d_model
    if g_embed is None:
        return torch.cat([parts, parts.new_zeros(1, d_head)])
    by_pos = (g_embed * pos_embed[None]).sum(-1).detach().double().cpu()  # d_head pos
    parts[layout.token_offset : layout.target_offset] -= by_pos.T
    return torch.cat([parts, by_pos.sum(1)[None]])


class _ReadEngine(RowEngine):
    """The row engine, reading extra tensors (queries, keys) at negative sites."""

    def __init__(self, state: ReplacementState, layout: NodeLayout, transcoders: Any, batch: int, *,
                 tensors: dict[int, torch.Tensor]):
        super().__init__(state, layout, transcoders, batch)
        self.tensors = tensors

    def read_tensor(self, site: int | None) -> Float[torch.Tensor, "batch pos d"]:
        if site is not None and site in self.tensors:
            return self.tensors[site]
        return super().read_tensor(site)


def _capture(into: dict[str, torch.Tensor], name: str) -> HookFn:
    def hook(x: torch.Tensor) -> None:
        into[name] = x

    return hook
