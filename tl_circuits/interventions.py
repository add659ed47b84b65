"""Feature interventions in the replacement model: set or scale transcoder features, run or generate.

Each MLP covered by a transcoder outputs ``reconstruction(activations) + error``, with the error
term taken from a clean run of the same tokens, so with no change the model is reproduced exactly.
Open-loop (the default) recomputes every later feature from the live transcoder input, so an
intervention's effect spreads through later features; a layer in ``constrained_layers`` keeps its
clean activations (except the intervened ones), and an uncovered layer there keeps its clean MLP
output. ``freeze_attention`` replaces attention patterns and normalisation scales by their
clean-run values. The runs themselves are :mod:`tl_circuits.replacement`'s (``clean_run``,
``run_spliced``); this module reads the user's interventions and checks them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int

from .errors import ConfigError
from .hosts.base import Host
from .hosts.prompts import PromptLike
from .replacement import SplicedRun, clean_run, prepare, prompt_tokens, run_spliced
from .transcoders import Transcoders


@dataclass(frozen=True)
class Intervention:
    """Set (``mode='set'``) or multiply (``mode='scale'``) one feature's activation.

    ``position`` counts from 0 (negative counts from the end); in :func:`generate`, None means the
    last prompt position and every generated position (each position that picks a new token).
    """

    layer: int
    position: int | None
    feature: int
    value: float
    mode: str = "set"

    def __post_init__(self) -> None:
        if self.mode not in ("set", "scale"):
            raise ConfigError(f"intervention mode must be 'set' or 'scale', got {self.mode!r}")


@dataclass
class InterventionResult:
    """Logits, the feature activations in effect at every covered layer, and the final
    normalised residual of the intervened run."""

    logits: Float[torch.Tensor, "pos d_vocab"]
    activations: dict[int, Float[torch.Tensor, "pos d_sae"]] = field(default_factory=dict)
    resid_final: Float[torch.Tensor, "pos d_model"] | None = None


def intervene(
    model: Any,
    transcoders: Any,
    prompt: PromptLike,
    interventions: Iterable[Any],
    *,
    prepend_bos: bool = True,
    constrained_layers: Iterable[int] | None = None,
    freeze_attention: bool = True,
    graph: Any = None,
) -> InterventionResult:
    """Run ``prompt`` with features set or scaled.

    Args:
        prompt: a string, chat messages or token ids, encoded as :func:`tl_circuits.attribute`
            does (``prepend_bos`` likewise; see :mod:`tl_circuits.hosts.prompts`).
        interventions: items of ``(layer, position, feature, value)``, :class:`Intervention`,
            dicts ``{'layer', 'position', 'feature', 'value', 'mode'}``, ``(node, value)`` with a
            graph :class:`~tl_circuits.Node` (features only), or a supernode of ``graph``:
            ``(name, value)`` / ``{'supernode': name, 'value': v, 'mode': 'scale'}``.
        constrained_layers: layers whose features keep their clean activations.
        freeze_attention: hold attention patterns and norm scales at their clean values.
        graph: the graph whose supernodes the interventions name.

    Example:
        >>> out = tl_circuits.intervene(model, transcoders, "The capital of France is",
        ...                             [(3, -1, 1234, 0.0)])  # doctest: +SKIP
        >>> out.logits[-1].argmax()  # doctest: +SKIP
    """
    host, transcoders = prepare(model, transcoders)
    tokens, _ = prompt_tokens(host, prompt, prepend_bos=prepend_bos)
    edits = resolve(interventions, host, transcoders, int(tokens.numel()), graph=graph)
    constrained = _constrained(host, constrained_layers)
    run = _intervened(host, transcoders, tokens, edits, constrained, freeze_attention)
    return InterventionResult(run.logits[0], {la: a[0] for la, a in run.acts.items()}, run.resid_final[0])


def generate(
    model: Any,
    transcoders: Any,
    prompt: PromptLike,
    max_new_tokens: int,
    *,
    prepend_bos: bool = True,
    interventions: Iterable[Any] = (),
    constrained_layers: Iterable[int] | None = None,
    freeze_attention: bool = True,
    graph: Any = None,
) -> list[int]:
    """Greedy decoding with the interventions applied at every step; returns prompt + new token ids.

    ``prompt`` and ``prepend_bos`` are read as :func:`intervene` reads them. Each step is a clean run and an intervened run of the whole sequence so far (no cache), so
    frozen attention and constrained layers refer to the clean run of the current sequence.
    """
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be 0 or more, got {max_new_tokens}")
    host, transcoders = prepare(model, transcoders)
    tokens, _ = prompt_tokens(host, prompt, prepend_bos=prepend_bos)
    n_prompt = int(tokens.numel())
    items = list(interventions)
    edits = resolve(items, host, transcoders, n_prompt + max_new_tokens, graph=graph, allow_none=True)
    constrained = _constrained(host, constrained_layers)
    seq = tokens.clone()
    for _ in range(max_new_tokens):
        length = int(seq.numel())
        step = []
        for e in edits:
            if e.position is None:
                step += [Intervention(e.layer, p, e.feature, e.value, e.mode) for p in range(n_prompt - 1, length)]
            elif e.position < length:
                step.append(e)
        run = _intervened(host, transcoders, seq, step, constrained, freeze_attention)
        seq = torch.cat([seq, run.logits[0, -1].argmax().view(1).cpu()])
    return seq.tolist()


def resolve(
    items: Iterable[Any], host: Host, transcoders: Transcoders, n_pos: int, *,
    graph: Any = None, allow_none: bool = False,
) -> list[Intervention]:
    """Turn user items into checked :class:`Intervention` s (positions made non-negative)."""
    out: list[Intervention] = []
    for item in items:
        for edit in _expand(item, graph):
            out.append(_check(edit, host, transcoders, n_pos, allow_none))
    return out


def _expand(item: Any, graph: Any) -> list[Intervention]:
    if isinstance(item, Intervention):
        return [item]
    if isinstance(item, dict):
        if "supernode" in item:
            return _supernode(graph, item["supernode"], item.get("value", 0.0), item.get("mode", "set"))
        if "node" in item:
            return [_from_node(item["node"], item.get("value", 0.0), item.get("mode", "set"))]
        missing = {"layer", "position", "feature", "value"} - set(item)
        if missing:
            raise ConfigError(f"intervention {item!r} lacks {sorted(missing)}; give layer, position, feature, value")
        return [_make(item["layer"], item["position"], item["feature"], item["value"], item.get("mode", "set"))]
    if isinstance(item, str):
        return _supernode(graph, item, 0.0, "set")
    if isinstance(item, tuple) and len(item) in (2, 3):
        head, value, *mode = item
        mode_s = mode[0] if mode else "set"
        if isinstance(head, str):
            return _supernode(graph, head, value, mode_s)
        return [_from_node(head, value, mode_s)]
    if isinstance(item, (tuple, list)) and len(item) in (4, 5):
        return [_make(*item)]
    raise ConfigError(
        f"cannot read intervention {item!r}: give (layer, position, feature, value[, mode]), an "
        "Intervention, a dict, (node, value) or a supernode name of the graph"
    )


def _from_node(node: Any, value: Any, mode: Any) -> Intervention:
    if not (isinstance(node, tuple) and len(node) == 4 and isinstance(node[0], str)):
        raise ConfigError(f"expected a graph Node (kind, layer, position, index), got {node!r}")
    kind, layer, position, index = node
    if kind != "feature":
        raise ConfigError(
            f"cannot intervene on a {kind} node ({node!r}): only feature nodes have an activation "
            "to set; token and error nodes are fixed inputs of the replacement model"
        )
    return _make(layer, position, index, value, mode)


def _make(layer: Any, position: Any, feature: Any, value: Any, mode: Any = "set") -> Intervention:
    """An Intervention from loosely typed user values (ints from tensors, int values, ...)."""

    def integer(x: Any, what: str) -> int:
        if isinstance(x, bool) or not isinstance(x, (int, torch.Tensor)) or (
            isinstance(x, torch.Tensor) and (x.numel() != 1 or x.is_floating_point())
        ):
            raise ConfigError(f"intervention {what} must be an int, got {x!r}")
        return int(x)

    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise ConfigError(f"intervention value must be a number, got {value!r}")
    if not isinstance(mode, str):
        raise ConfigError(f"intervention mode must be 'set' or 'scale', got {mode!r}")
    pos = None if position is None else integer(position, "position")
    return Intervention(integer(layer, "layer"), pos, integer(feature, "feature"), float(value), mode)


def _supernode(graph: Any, name: Any, value: Any, mode: Any) -> list[Intervention]:
    if graph is None:
        raise ConfigError(f"intervention names supernode {name!r}: pass graph= the graph that defines it")
    if name not in graph.supernodes:
        raise ConfigError(
            f"the graph has no supernode {name!r}; it has {sorted(graph.supernodes)} "
            "(add one with graph.add_supernode)"
        )
    nodes = graph.nodes
    return [_from_node(nodes[i], value, mode) for i in graph.supernodes[name]]


def _check(e: Intervention, host: Host, transcoders: Transcoders, n_pos: int, allow_none: bool) -> Intervention:
    if e.layer not in transcoders.layers:
        raise ConfigError(
            f"no transcoder at layer {e.layer} (in {e}): features exist at layers {transcoders.layers}"
        )
    d_sae = transcoders.d_sae(e.layer)
    if not 0 <= e.feature < d_sae:
        raise ConfigError(f"feature {e.feature} does not exist at layer {e.layer} (in {e}): it has features 0..{d_sae - 1}")
    if e.position is None:
        if not allow_none:
            raise ConfigError(f"position None (every generated position) is only for generate(); in {e} give a position")
        return e
    if not -n_pos <= e.position < n_pos:
        raise ConfigError(f"position {e.position} does not exist (in {e}): the sequence has positions 0..{n_pos - 1}")
    return Intervention(e.layer, e.position % n_pos, e.feature, float(e.value), e.mode)


def _intervened(
    host: Host, transcoders: Transcoders, tokens: Int[torch.Tensor, " pos"], edits: list[Intervention],
    constrained: set[int], freeze_attention: bool,
) -> SplicedRun:
    """A clean run of ``tokens``, then one intervened run with ``edits``."""
    clean = clean_run(host, transcoders, tokens)
    return run_spliced(host, transcoders, tokens[None], clean=clean, edits=[edits],
                       constrained=constrained, freeze_attention=freeze_attention)


def _constrained(host: Host, layers: Iterable[int] | None) -> set[int]:
    chosen = set() if layers is None else {int(la) for la in layers}
    bad = sorted(la for la in chosen if not 0 <= la < host.n_layers)
    if bad:
        raise ConfigError(f"constrained_layers {bad} do not exist: the model has layers 0..{host.n_layers - 1}")
    return chosen


def run_batch(host: Host, transcoders: Transcoders, tokens: Int[torch.Tensor, " pos"],
              edits: list[list[Intervention]], constrained: set[int], freeze_attention: bool,
              clean: Any = None) -> tuple[torch.Tensor, dict[int, torch.Tensor], torch.Tensor]:
    """Deprecated (one release): :func:`tl_circuits.replacement.run_spliced` over ``len(edits)``
    copies of ``tokens``; returns (logits, activations, final residual), batch first."""
    import warnings

    warnings.warn("tl_circuits.interventions.run_batch is deprecated; use "
                  "tl_circuits.replacement.run_spliced", DeprecationWarning, stacklevel=2)
    clean = clean or clean_run(host, transcoders, tokens)
    run = run_spliced(host, transcoders, tokens[None].expand(len(edits), -1), clean=clean,
                      edits=edits, constrained=constrained, freeze_attention=freeze_attention)
    return run.logits, run.acts, run.resid_final
