"""How good transcoders are: per-layer FVU, L0 and dead features, and the replacement model's fidelity.

    FVU_l  = sum ||y - y_hat||^2 / sum ||y - mean(y)||^2     (over every token of the texts)
    L0_l   = mean number of active features per token
    dead_l = share of features that never fire on the texts

The replacement model runs the model with every covered MLP output replaced by the transcoders'
reconstruction from the *live* inputs (error terms removed); its next-token predictions are
compared with the original's: top-1 agreement and KL(original || replacement) per token.

What matters for circuit tracing is how much of a graph the transcoders explain: the mean
replacement and completeness scores (:mod:`tl_circuits.graph.scores`, circuit-tracer's
definitions) of the attribution graphs of a prompt set, :data:`GRAPH_PROMPTS` by default.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int

from tl_circuits.attribution import attribute
from tl_circuits.errors import ConfigError
from tl_circuits.hosts import as_host
from tl_circuits.replacement import prepare, run_spliced, spliced
from tl_circuits.training.corpus import tokenize_contexts
from tl_circuits.training.data import bos_to_prepend, layer_activations, tokenizer_of
from tl_circuits.transcoders import Transcoders

#: Built-in prompts of the graph scores: short completions of the kinds attribution is run on
#: (facts, arithmetic, antonyms, grammar, a story), as plain strings (BOS added by ``attribute``).
GRAPH_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "The opposite of hot is",
    "Water freezes at zero degrees",
    "3 + 4 =",
    "The cats that live next door",
    "Once upon a time, a little girl named",
)


def graph_scores(
    model: Any, transcoders: Any, prompts: Sequence[str] = GRAPH_PROMPTS, *,
    max_feature_nodes: int | None = 1024,
) -> dict[str, Any]:
    """Mean ``replacement_score`` and ``completeness_score`` of the attribution graphs of
    ``prompts`` (unpruned, targets the most likely next tokens), and ``graph_scores``: each
    prompt's ``{"prompt", "replacement", "completeness"}``.

    Example:
        >>> graph_scores(model, transcoders, ["The capital of France is"])  # doctest: +SKIP
        {'replacement_score': 0.81, 'completeness_score': 0.93, 'graph_scores': [...]}
    """
    per_prompt = []
    for prompt in prompts:
        graph = attribute(model, transcoders, prompt, max_feature_nodes=max_feature_nodes,
                          progress=False)
        per_prompt.append({"prompt": prompt, **graph.scores()})
    n = max(1, len(per_prompt))
    return {
        "replacement_score": sum(p["replacement"] for p in per_prompt) / n,
        "completeness_score": sum(p["completeness"] for p in per_prompt) / n,
        "graph_scores": per_prompt,
    }


def layer_metrics(
    model: Any, transcoders: Transcoders, contexts: Int[torch.Tensor, "n pos"],
    *, skip_first: bool = False, batch: int = 8,
) -> dict[str, list[float]]:
    """Per-layer ``fvu``, ``l0`` and ``dead`` (lists indexed by position in ``transcoders.layers``
    order, which for full sets is the layer index) on ``contexts``; ``model`` is any model
    :func:`~tl_circuits.hosts.as_host` adapts, or a host."""
    host = as_host(model)
    hooks_in = [transcoders.hook_in(la) for la in transcoders.layers]
    hooks_out = [transcoders.hook_out(la) for la in transcoders.out_layers]
    return metrics_of_batches(transcoders, (
        layer_activations(host, contexts[lo : lo + batch], hooks_in, hooks_out, skip_first=skip_first)
        for lo in range(0, len(contexts), batch)
    ))


def metrics_of_batches(
    transcoders: Transcoders,
    batches: Iterable[tuple[Float[torch.Tensor, "n_in n d_in"], Float[torch.Tensor, "n_out n d_out"]]],
) -> dict[str, list[float]]:
    """:func:`layer_metrics` of activations already read (e.g. from an activation cache):
    ``(x, y)`` with every layer's inputs and outputs, in ``transcoders.layers`` order."""
    layers = transcoders.layers
    se = torch.zeros(len(layers), dtype=torch.float64)
    sy = torch.zeros(len(layers), dtype=torch.float64)
    syy = torch.zeros(len(layers), dtype=torch.float64)
    l0 = torch.zeros(len(layers), dtype=torch.float64)
    fired = [torch.zeros(transcoders.d_sae(la), dtype=torch.bool) for la in layers]
    sum_y = [torch.zeros(transcoders.d_out, dtype=torch.float64) for _ in layers]
    n_tok = 0
    with torch.no_grad():
        for x, y in batches:
            xs = {la: x[i].to(transcoders.device, transcoders.dtype) for i, la in enumerate(layers)}
            acts = {la: transcoders.encode(la, xs[la]) for la in layers}
            for i, la in enumerate(layers):
                y_hat = spliced(transcoders, la, acts, xs).cpu()
                yl = y[i].double().cpu()
                se[i] += (yl - y_hat.double()).pow(2).sum()
                syy[i] += yl.pow(2).sum()
                sum_y[i] += yl.sum(0)
                l0[i] += (acts[la] > 0).sum().cpu()
                fired[i] |= (acts[la] > 0).any(0).cpu()
            n_tok += x.shape[1]
    for i in range(len(layers)):
        sy[i] = sum_y[i].pow(2).sum() / n_tok
    var = (syy - sy).clamp_min(1e-30)
    return {
        "fvu": (se / var).tolist(),
        "l0": (l0 / n_tok).tolist(),
        "dead": [1.0 - float(f.float().mean()) for f in fired],
    }


def evaluate_transcoders(
    model: Any, transcoders: Any, texts: Sequence[str] | torch.Tensor, *,
    ctx_len: int = 128, batch: int = 8, max_contexts: int | None = None,
    graph_prompts: Sequence[str] | None = GRAPH_PROMPTS, max_feature_nodes: int | None = 1024,
) -> dict[str, Any]:
    """Metrics of ``transcoders`` on ``texts`` (see module docstring).

    ``texts`` may also be token contexts, a long tensor ``[n, pos]`` (BOS first where the model's tokenizer
    adds one), e.g. the held-out contexts of :func:`tl_circuits.training.corpus.split_contexts`.

    Returns:
        ``{"fvu": [...], "l0": [...], "dead": [...]}`` per layer, their means ``mean_fvu``,
        ``mean_l0``, ``mean_dead``, and for the replacement model ``top1_agreement`` and
        ``kl`` (mean KL(original || replacement) per token, in nats), ``n_tokens``; and the
        mean ``replacement_score`` / ``completeness_score`` of the graphs of ``graph_prompts``
        (:func:`graph_scores`, at most ``max_feature_nodes`` feature rows each; None or ``()``
        skips them), with each prompt's in ``graph_scores``.

    Example:
        >>> m = evaluate_transcoders(model, transcoders, ["Some held-out text ..."])  # doctest: +SKIP
        >>> m["mean_fvu"], m["top1_agreement"]  # doctest: +SKIP
    """
    host, transcoders = prepare(model, transcoders)  # checked against the model, a cast copy
    bos = bos_to_prepend(host)
    if isinstance(texts, torch.Tensor):
        if texts.dim() != 2 or texts.dtype != torch.long:
            raise ConfigError(f"token contexts must be a 2-D long tensor, got {texts.dtype} "
                              f"of shape {tuple(texts.shape)}")
        contexts = texts
    else:
        contexts = tokenize_contexts(tokenizer_of(host), texts, ctx_len, bos_token_id=bos)
    if max_contexts is not None:
        contexts = contexts[:max_contexts]
    result: dict[str, Any] = layer_metrics(host, transcoders, contexts, skip_first=bos is not None,
                                           batch=batch)
    agree, kl_sum, n = 0, 0.0, 0
    start = 1 if bos is not None else 0
    with torch.no_grad():
        for lo in range(0, len(contexts), batch):
            tokens = contexts[lo : lo + batch]
            clean = host.forward(tokens.to(host.device))[:, start:].double().log_softmax(-1)
            repl = replacement_logits(host, transcoders, tokens)[:, start:].double().log_softmax(-1)
            agree += int((clean.argmax(-1) == repl.argmax(-1)).sum())
            kl_sum += float((clean.exp() * (clean - repl)).sum())
            n += clean.shape[0] * clean.shape[1]
    result.update(
        mean_fvu=sum(result["fvu"]) / len(result["fvu"]),
        mean_l0=sum(result["l0"]) / len(result["l0"]),
        mean_dead=sum(result["dead"]) / len(result["dead"]),
        top1_agreement=agree / n, kl=kl_sum / n, n_tokens=n,
    )
    if graph_prompts:
        result.update(graph_scores(model, transcoders, graph_prompts,
                                   max_feature_nodes=max_feature_nodes))
    return result


def replacement_logits(
    model: Any, transcoders: Transcoders, tokens: Int[torch.Tensor, "batch pos"]
) -> Float[torch.Tensor, "batch pos d_vocab"]:
    """Logits of the model with covered MLP outputs replaced by reconstructions from live inputs
    (no error terms): :func:`tl_circuits.replacement.run_spliced` without a clean run."""
    return run_spliced(as_host(model), transcoders, tokens).logits
