"""The frozen replacement model (attribution) and the clean run (interventions): one pass, two uses.

Under the freezes (attention patterns and normalisation scales detached at their clean values)
and with every MLP output replaced by a constant (its transcoder reconstruction plus an error
term, error = true MLP output - reconstruction, :mod:`.splice`), the map from what each node writes
to what each node reads is linear. The forward values are the model's own, bit for bit: the splice
changes only which paths gradients may take (Ameisen et al. 2025, "Circuit Tracing", section 2).

A transcoder's linear skip (``W_skip``) is not a node: gradients flow through it, from the MLP
output back to the transcoder input, so a feature's edge includes paths through later skips.

:func:`clean_run` is the same pass without gradients that also keeps the values at the freeze
sites: what an intervened run (:mod:`.intervened`) holds fixed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int

from ..hosts.base import HookFn, Host
from ..hosts.base import freeze as freeze_hook
from ..transcoders import Transcoders
from .frozen_attention import PatternScope, frozen_pattern_hook, prefix_pattern_hook
from .splice import error_term


@dataclass
class ReplacementState:
    """What one forward pass of the replacement model leaves behind (batch = copies of a prompt).

    ``x_in`` / ``writes`` / ``embed`` / ``resid_final`` stay in the autograd graph; ``acts``,
    ``errors`` and ``mlp_out`` are constants read off the first copy. ``frozen`` holds the values
    at the freeze sites (attention patterns, norm scales), kept by :func:`clean_run` only.
    ``patterns`` is shared with the frozen attention products (:mod:`.frozen_attention`) when
    :func:`run_replacement` routes them through the batched backward pass; then ``prefix(n)``
    runs the same pass over the first ``n`` positions (:func:`run_prefix`).
    """

    logits: Float[torch.Tensor, "batch pos d_vocab"]
    x_in: dict[int, Float[torch.Tensor, "batch pos d_in"]] = field(default_factory=dict)
    writes: dict[int, Float[torch.Tensor, "batch pos d_model"]] = field(default_factory=dict)
    embed: Float[torch.Tensor, "batch pos d_model"] | None = None
    resid_final: Float[torch.Tensor, "batch pos d_model"] | None = None
    acts: dict[int, Float[torch.Tensor, "pos d_sae"]] = field(default_factory=dict)
    errors: dict[int, Float[torch.Tensor, "pos d_model"]] = field(default_factory=dict)
    mlp_out: dict[int, Float[torch.Tensor, "pos d_model"]] = field(default_factory=dict)
    frozen: dict[str, torch.Tensor] = field(default_factory=dict)
    patterns: PatternScope | None = None
    prefix: Callable[[int], ReplacementState] | None = field(default=None, repr=False)


@contextlib.contextmanager
def replacement_hooks(
    host: Host,
    transcoders: Transcoders,
    state: ReplacementState,
    *,
    freeze: bool = True,
    keep_frozen: bool = False,
    extra: Sequence[tuple[str, HookFn]] = (),
    patterns: PatternScope | None = None,
) -> Iterator[None]:
    """Hooks that freeze, splice and record into ``state`` during one forward pass.

    The embedding becomes a leaf that requires grad; each MLP output becomes
    ``y.detach() + (skip(x) - skip(x).detach())``: the same value, a constant to autograd except
    through the linear skip. With ``keep_frozen`` the frozen values go into ``state.frozen``;
    with ``patterns`` the attention patterns are frozen by :func:`.frozen_pattern_hook`.
    ``extra`` hooks run after these at their sites (:mod:`tl_circuits.attention` reads queries,
    keys and values there, and adds tangents to what nodes write).
    """
    hooks: list[tuple[str, HookFn]] = []
    if freeze:
        for name in host.freeze_hook_names():
            if keep_frozen:
                hooks.append((name, _keep(state.frozen, name)))
            elif patterns is not None and name.endswith("hook_pattern"):
                hooks.append((name, frozen_pattern_hook(patterns, name)))
            else:
                hooks.append((name, freeze_hook))

    def embed_hook(x: torch.Tensor) -> torch.Tensor:
        leaf = x.detach().requires_grad_(True)
        state.embed = leaf
        return leaf

    hooks.append((host.embed_hook(), embed_hook))

    for layer in transcoders.layers:
        hooks.append((transcoders.hook_in(layer), _record_input(state, layer)))
    for layer in range(host.n_layers):
        hooks.append((host.mlp_out_hook(layer), _splice_output(state, transcoders, layer)))

    def final_hook(x: torch.Tensor) -> None:
        state.resid_final = x

    hooks.append((host.resid_final_hook(), final_hook))
    with host.hooks([*hooks, *extra]):
        yield


def run_replacement(
    host: Host,
    transcoders: Transcoders,
    tokens: Int[torch.Tensor, " pos"],
    *,
    batch: int = 1,
    extra: Sequence[tuple[str, HookFn]] = (),
    batched_patterns: bool = True,
    pattern_dtype: torch.dtype | None = None,
) -> ReplacementState:
    """One forward pass of the replacement model over ``batch`` copies of ``tokens``;
    ``batched_patterns``: frozen attention products take :mod:`.frozen_attention`'s backward
    pass (False: plain detached patterns, the reference); ``extra``: more hooks, run after the
    replacement's at their sites; ``pattern_dtype``: the batched backward pass holds the frozen
    patterns in this dtype (None: as computed; :class:`.frozen_attention.PatternScope`)."""
    state = ReplacementState(logits=torch.empty(0, 0, 0))
    state.patterns = PatternScope(storage=pattern_dtype) if batched_patterns else None
    batched = tokens.to(host.device).unsqueeze(0).expand(batch, -1)
    with torch.enable_grad(), replacement_hooks(host, transcoders, state, extra=extra,
                                                 patterns=state.patterns):
        state.logits = host.forward(batched)
    if state.patterns is not None and batch == 1 and not extra:
        scope, full = state.patterns, tokens

        def prefix(n: int) -> ReplacementState:
            return run_prefix(host, transcoders, full[:n], scope)

        state.prefix = prefix
    return state


def run_prefix(
    host: Host, transcoders: Transcoders, tokens: Int[torch.Tensor, " n"], patterns: PatternScope
) -> ReplacementState:
    """The replacement model's forward pass over ``tokens``, the first ``n`` positions of the prompt
    whose frozen patterns ``patterns`` kept, for backward passes that stop at position ``n``.

    Causal attention makes position ``i`` of this pass the prompt's own: its frozen patterns are
    views of the prompt's (:func:`~.frozen_attention.prefix_pattern_hook`, no new memory), norm
    scales are frozen at their values here, and each MLP output is a constant except through the
    transcoder's skip, as in :func:`run_replacement`. Only what the backward passes read is kept:
    ``x_in``, ``writes``, ``embed``, ``resid_final`` (no encoding, no error terms; ``logits`` empty).
    """
    state = ReplacementState(logits=torch.empty(0, 0, 0), patterns=patterns)
    hooks: list[tuple[str, HookFn]] = [
        (name, prefix_pattern_hook(patterns, name) if name.endswith("hook_pattern") else freeze_hook)
        for name in host.freeze_hook_names()]

    def embed_hook(x: torch.Tensor) -> torch.Tensor:
        state.embed = leaf = x.detach().requires_grad_(True)
        return leaf

    def splice(layer: int) -> HookFn:
        def hook(y: torch.Tensor) -> torch.Tensor:
            clean, x = y.detach(), state.x_in.get(layer)
            if layer in transcoders.out_layers and transcoders.has_skip(layer) and x is not None:
                skip = transcoders.skip(layer, x)
                state.writes[layer] = clean + (skip - skip.detach())
            else:
                state.writes[layer] = clean.requires_grad_(True)
            return state.writes[layer]

        return hook

    def final_hook(x: torch.Tensor) -> None:
        state.resid_final = x

    hooks.append((host.embed_hook(), embed_hook))
    hooks += [(transcoders.hook_in(la), _record_input(state, la)) for la in transcoders.layers]
    hooks += [(host.mlp_out_hook(la), splice(la)) for la in range(host.n_layers)]
    hooks.append((host.resid_final_hook(), final_hook))
    with torch.enable_grad(), host.hooks(hooks):
        host.forward(tokens.to(host.device)[None])
    return state


def clean_run(host: Host, transcoders: Transcoders, tokens: Int[torch.Tensor, " pos"]) -> ReplacementState:
    """The same pass over one copy of ``tokens``, without gradients, keeping the frozen values:
    what an intervened run (:func:`~tl_circuits.replacement.run_spliced`) holds fixed.

    ``acts`` holds every layer of the set, ``errors`` every layer of the model (the whole MLP
    output where no transcoder writes), ``frozen`` every freeze site of the host.
    """
    state = ReplacementState(logits=torch.empty(0, 0, 0))
    with torch.no_grad(), replacement_hooks(host, transcoders, state, keep_frozen=True):
        state.logits = host.forward(tokens.to(host.device)[None])
    with torch.no_grad():
        for layer in transcoders.layers:  # layers no output layer at or after them needed
            if layer not in state.acts:
                state.acts[layer] = transcoders.encode(layer, state.x_in[layer][0])
    return state


def _keep(where: dict[str, torch.Tensor], name: str) -> HookFn:
    def hook(x: torch.Tensor) -> torch.Tensor:
        where[name] = value = x.detach()
        return value

    return hook


def _record_input(state: ReplacementState, layer: int) -> HookFn:
    def hook(x: torch.Tensor) -> None:
        state.x_in[layer] = x

    return hook


def _splice_output(state: ReplacementState, transcoders: Transcoders, layer: int) -> HookFn:
    def hook(y: torch.Tensor) -> torch.Tensor:
        clean = y.detach()
        state.mlp_out[layer] = clean[0]
        if layer not in transcoders.out_layers:
            state.errors[layer] = clean[0]
            state.writes[layer] = clean.requires_grad_(True)
            return state.writes[layer]
        for source in transcoders.layers:
            if source <= layer and source not in state.acts:
                x = state.x_in[source][0].detach()
                state.acts[source] = transcoders.encode(source, x)
        x_out = state.x_in.get(layer)
        x_first = {la: state.x_in[la][0].detach() for la in state.acts}
        state.errors[layer] = error_term(transcoders, layer, clean[0], state.acts, x_first)
        if transcoders.has_skip(layer) and x_out is not None:
            skip = transcoders.skip(layer, x_out)
            out = clean + (skip - skip.detach())
        else:
            out = clean.requires_grad_(True)
        state.writes[layer] = out
        return out

    return hook
