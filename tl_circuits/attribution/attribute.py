"""``attribute``: one forward pass of the replacement model, then batched backward passes."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..graph import Graph, TargetInfo
from ..graph.adjacency import csr_from_counts, index_dtype
from ..hosts import as_host
from ..hosts.base import Host
from ..hosts.prompts import PromptLike
from ..replacement import prepare, read_prompt, run_replacement
from ..replacement.inputs import run_dtype
from ..transcoders import Transcoders
from . import engine as row_engine
from .engine import RowEngine, feature_reads, target_reads
from .layout import build_layout
from .pool import choose_pool, fold_features, pool_size
from .schedule import feature_rows
from .targets import TargetSpec, custom_targets, default_targets


def attribute(
    model: Any,
    transcoders: Any,
    prompt: PromptLike,
    *,
    prepend_bos: bool = True,
    targets: Sequence[TargetSpec] | None = None,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    max_feature_nodes: int | None = None,
    feature_pool: int | None = None,
    batch_size: int = 32,
    update_interval: int = 4,
    progress: bool = True,
    remote: bool | str = False,
    head_loadings: bool = False,
    dtype: torch.dtype | str = "model",
    pattern_dtype: torch.dtype | str | None = None,
) -> Graph:
    """The attribution graph of ``prompt``: direct effects between features, errors, tokens, targets.

    Args:
        model: a ``HookedTransformer`` (or any object a host adapts).
        transcoders: any :class:`~tl_circuits.transcoders.Transcoders` (a ``TranscoderSet``, a
            ``CrossLayerTranscoder``, a loaded release), or a list of per-layer transcoders.
            They are never changed (cast copies are used). Layers they do not cover become one
            error node per position.
        prompt: a string, chat messages (``[{"role": "user", "content": ...}]``, rendered by
            the tokenizer's chat template with the generation prompt) or token ids (used as
            given); see :mod:`tl_circuits.hosts.prompts` for the one tokenization rule.
        prepend_bos: a string prompt starts with the model's BOS token (whether or not the
            tokenizer adds one); False gives the text's tokens alone.
        targets: None for the most likely next tokens (until their probabilities reach
            ``desired_logit_prob``, at most ``max_n_logits``), or a list of token ids,
            single-token strings, pairs ``(a, b)`` for logit(a) - logit(b), or d_model vectors.
        max_feature_nodes: at most this many feature rows; chosen by influence on the targets,
            re-ranked every ``update_interval`` batches. None computes a row for every active
            feature.
        feature_pool: under a node budget, the features that stay nodes: the rows are chosen
            among the ``feature_pool`` features with the largest direct influence on the targets,
            and the other active features fold into the error node at their layer and position
            (the graph stays exact; see docs/graphs.md). Default ``max(8 * max_feature_nodes,
            8192)``; it only matters when more features are active than that.
        batch_size: read-outs per backward pass (one forward pass; the backward pass is vmapped
            over them, and the frozen attention patterns multiply all of them at once, on the
            causal prefix the batch reaches). It also sets how many rows make a step of the
            ranking and the progress bar. Memory grows with it on long prompts (the gradients
            at every layer: ``batch_size x positions x d_model`` each); docs/performance.md.
        update_interval: under a node budget, batches of rows between influence re-rankings.
        progress: show a tqdm bar over the backward passes (not shown for remote runs).
        remote: nnsight models only: run the whole attribution (forward and backward passes)
            inside one nnsight trace with ``remote=`` this value: True (NDIF), ``"local"``
            (nnsight's serialize-and-run stand-in) or a server URL. The request carries the
            transcoders' weights; see docs/hosts.md.
        head_loadings: also store the heads that carry the cross-position edges the viewer
            shows and the QK explanations of the top heads (:mod:`tl_circuits.attention`;
            local runs only; adds several times the attribution's own time: head loadings
            alone took 3.5x on the demo graph, docs/performance.md).
        dtype: the dtype of the whole pass (forward and backward passes, the transcoders, the
            edges): ``"model"`` (the model's own), or a floating dtype (``torch.bfloat16``, or
            its name), for which a cast copy of the model is made (local runs; the user's model is
            untouched). A bfloat16 pass halves the memory of the forward pass; its edges differ
            from float32's by rounding (docs/performance.md: median and 99th percentile).
        pattern_dtype: hold the frozen attention patterns for the backward passes in this dtype
            (``torch.bfloat16`` or ``torch.float16``: half their memory, 2.3 instead of 4.5 GB at
            2,048 tokens on SmolLM2); None holds them as computed (exact). The forward pass is
            unchanged; the edges move by the rounding of the patterns (SmolLM2, 64 tokens:
            float16 median 1.2e-4 relative, 99th percentile 1.3e-3; bfloat16 8x that).

    Returns:
        A :class:`Graph` whose adjacency rows are filled for the targets and the chosen features.
    """
    user_transcoders = transcoders
    if remote is not False and run_dtype(dtype) is not None:
        raise ConfigError(f"dtype={dtype!r} casts a copy of the model, which a remote run cannot "
                          "do: leave dtype='model' (the remote model's own)")
    own = as_host(model)
    host, transcoders = prepare(own, transcoders, dtype=dtype)
    cast = host is not own  # a cast copy of the model
    patterns = run_dtype(pattern_dtype)
    if patterns is not None and patterns.itemsize >= host.dtype.itemsize:
        patterns = None  # as computed: no smaller
    if head_loadings and remote is not False:
        raise ConfigError("head_loadings=True needs a local run (remote=False): the attention "
                          "explanations read queries, keys and values the trace does not return")
    if feature_pool is not None and feature_pool < 1:
        raise ConfigError(f"feature_pool must be at least 1 (features kept as nodes), got {feature_pool}")
    if batch_size < 1 or update_interval < 1:
        raise ConfigError(
            f"batch_size and update_interval must be at least 1, got {batch_size}, {update_interval}"
        )
    encoded = read_prompt(host, prompt, prepend_bos=prepend_bos)
    tokens, prompt_text = encoded.tokens, encoded.text
    has_bos = host.bos_token_id is not None and int(tokens[0]) == host.bos_token_id
    if has_bos and tokens.numel() == 1:
        raise ConfigError("the prompt holds only the BOS token; give it some text")
    job = functools.partial(
        _attribute_job, transcoders=transcoders, tokens=tokens, has_bos=has_bos, targets=targets,
        max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob,
        max_feature_nodes=max_feature_nodes, feature_pool=feature_pool, batch_size=batch_size,
        update_interval=update_interval, progress=progress and not remote, pattern_dtype=patterns,
    )
    if remote is False:
        out = job(host)
    else:
        run_traced = getattr(host, "run_traced", None)
        if run_traced is None:
            raise ConfigError(
                f"remote={remote!r} needs an nnsight model (remote execution is nnsight's); "
                f"this is a {type(model).__qualname__}: leave remote=False"
            )
        out = run_traced(tokens, job, remote=remote)
    graph = Graph.from_tables(
        kind=out["kind"], layer=out["layer"], position=out["position"], index=out["index"],
        adjacency=out["adjacency"], activations=out["activations"],
        targets=[TargetInfo(*t) for t in out["targets"]], target_vectors=out["target_vectors"],
        prompt=prompt_text, tokens=tokens.tolist(), str_tokens=host.token_strings(tokens.tolist()),
        settings={
            "max_n_logits": max_n_logits, "desired_logit_prob": desired_logit_prob,
            "max_feature_nodes": max_feature_nodes, "batch_size": batch_size,
            "update_interval": update_interval, "n_active_features": out["n_active_features"],
            "feature_pool": out["feature_pool"],
            "transcoder_layers": list(transcoders.layers), "n_layers": host.n_layers,
            "has_bos": has_bos, "dtype": str(host.dtype).removeprefix("torch."),
            "pattern_dtype": None if patterns is None else str(patterns).removeprefix("torch."),
            "prompt_encoding": encoded.header(),
        },
        rows_computed=out["rows_computed"],
    )
    if head_loadings:
        from ..attention.annotate import annotate_graph

        # on the cast copy when there is one: the loadings split the edges this pass computed
        annotate_graph(host if cast else model, transcoders if cast else user_transcoders, graph,
                       progress=progress)
    return graph


def _attribute_job(
    host: Host, *, transcoders: Transcoders, tokens: Int[torch.Tensor, " pos"], has_bos: bool,
    targets: Sequence[TargetSpec] | None, max_n_logits: int, desired_logit_prob: float,
    max_feature_nodes: int | None, feature_pool: int | None, batch_size: int, update_interval: int,
    progress: bool, pattern_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """The forward pass and all backward passes on ``host``: the graph's tensors, as a dict of
    tensors and plain values (it may run inside a remote nnsight trace and travel back)."""
    state = run_replacement(host, transcoders, tokens, batched_patterns=not row_engine.REFERENCE,
                            pattern_dtype=pattern_dtype)
    last = state.logits[0, -1].detach()
    if targets is None:
        target_list, vectors = default_targets(
            host, last, max_n_logits=max_n_logits, desired_logit_prob=desired_logit_prob
        )
    else:
        target_list, vectors = custom_targets(host, last, targets)
    layout = build_layout(state, tokens, host.n_layers, has_bos=has_bos, n_targets=len(target_list))
    n_active = layout.n_features
    budget = n_active if max_feature_nodes is None else min(max(0, max_feature_nodes), n_active)
    pool = pool_size(feature_pool, budget) if budget < n_active else n_active
    reads = target_reads(vectors, int(tokens.numel()) - 1)
    weights = torch.tensor([t.weight for t in target_list], dtype=torch.float64)
    target_batches = -(-len(target_list) // batch_size)
    bar = tqdm(total=target_batches * (2 if pool < n_active else 1) + -(-budget // batch_size),
               desc="attribution passes", disable=not progress, unit="pass")
    errors = None
    if pool < n_active:
        # Every active feature is a column of these target rows: one pass, writes built per layer.
        full = RowEngine(state, layout, transcoders, batch_size, keep_writes=False).rows(reads)
        bar.update(target_batches)
        keep = choose_pool(full, torch.arange(layout.target_offset, layout.n_nodes), weights,
                           n_active, pool)
        del full
        layout, errors = fold_features(layout, transcoders, state.errors, keep)
    engine = RowEngine(state, layout, transcoders, batch_size, errors=errors)
    n_feat = layout.n_features
    target_rows = engine.rows(reads)
    bar.update(target_batches)
    rows, computed = feature_rows(
        lambda ids, rows_of=engine.rows: rows_of(feature_reads(layout, transcoders, ids)),
        target_rows, torch.arange(layout.target_offset, layout.n_nodes), weights, n_feat,
        budget=budget, batch_size=batch_size, update_interval=update_interval,
        on_batch=lambda: bar.update(1),
    )
    bar.close()
    del engine, state, errors  # the forward graph (most of the memory) before the sparse copy
    return {
        **layout.node_tables(),
        "adjacency": _sparse_adjacency(rows.detach().cpu(), computed, layout.n_nodes),
        "activations": layout.feat_act.detach().cpu(),
        "targets": [(t.label, t.kind, t.token_ids, t.probability, t.weight) for t in target_list],
        "target_vectors": vectors.detach().cpu(),
        "rows_computed": computed, "n_active_features": n_active,
        "feature_pool": pool if pool < n_active else None,
    }


def _sparse_adjacency(
    rows: Float[torch.Tensor, "n_rows n_nodes"], nodes: Int[torch.Tensor, " n_rows"], n: int,
    *, chunk: int = 256,
) -> Float[torch.Tensor, "n_nodes n_nodes"]:
    """The square CSR adjacency (int32 indices) holding ``rows`` at their nodes, built already
    sorted and written into preallocated column/value tensors (no second copy of the nonzeros)."""
    order = nodes.argsort()
    counts = torch.cat([(rows[order[lo : lo + chunk]] != 0).sum(1)
                        for lo in range(0, order.numel(), chunk)] or [torch.zeros(0, dtype=torch.long)])
    nnz = int(counts.sum())
    per_node = torch.zeros(n, dtype=torch.long)
    per_node[nodes[order]] = counts
    cols = torch.empty(nnz, dtype=index_dtype(n, nnz))
    values = torch.empty(nnz, dtype=rows.dtype)
    at = 0
    for lo in range(0, order.numel(), chunk):
        block = rows[order[lo : lo + chunk]]
        r, c = block.nonzero(as_tuple=True)  # row-major, so the entries stay sorted
        cols[at : at + r.numel()] = c
        values[at : at + r.numel()] = block[r, c]
        at += r.numel()
    return csr_from_counts(per_node, cols, values, n)
