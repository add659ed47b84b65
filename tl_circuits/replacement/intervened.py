"""The intervened replacement model: every covered MLP writes the splice of live (or edited)
features, for interventions, ``check_graph`` and evaluation.

Each MLP covered by the transcoders writes ``spliced(m) = reconstruct(m, acts, x) + error_m``
(:mod:`.splice`), with ``x`` the live transcoder inputs of this run and ``error_m`` taken from a
clean run of the same tokens, so with no edit the model is reproduced exactly. The features:
- open-loop (the default): ``acts[l] = encode(l, x[l])`` from the live input, so an edit spreads
  through every later feature;
- a layer in ``constrained`` keeps its clean activations (edits still apply); an uncovered layer
  there keeps its clean MLP output;
- ``edits[b]`` sets or scales single features of batch row ``b``.
``freeze_attention`` replaces attention patterns and norm scales by their clean-run values.
Without a clean run the error terms are dropped: the MLP outputs are the bare reconstructions from
the live inputs, the "replacement model" whose fidelity evaluation measures.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int

from ..errors import ConfigError
from ..hosts.base import HookFn, Host
from ..transcoders import Transcoders
from .frozen import ReplacementState
from .splice import spliced


@runtime_checkable
class FeatureEdit(Protocol):
    """Set (``mode='set'``) or multiply (``mode='scale'``) the activation of ``feature`` at
    ``layer`` and ``position``; :class:`tl_circuits.Intervention` is one."""

    @property
    def layer(self) -> int: ...

    @property
    def position(self) -> int | None: ...

    @property
    def feature(self) -> int: ...

    @property
    def value(self) -> float: ...

    @property
    def mode(self) -> str: ...


@dataclass
class SplicedRun:
    """Logits, the feature activations in effect at every covered layer, and the final
    normalised residual of one intervened pass (batch first)."""

    logits: Float[torch.Tensor, "batch pos d_vocab"]
    acts: dict[int, Float[torch.Tensor, "batch pos d_sae"]]
    resid_final: Float[torch.Tensor, "batch pos d_model"]


def run_spliced(
    host: Host,
    transcoders: Transcoders,
    tokens: Int[torch.Tensor, "batch pos"],
    *,
    clean: ReplacementState | None = None,
    edits: Sequence[Sequence[FeatureEdit]] | None = None,
    constrained: Collection[int] = (),
    freeze_attention: bool = False,
) -> SplicedRun:
    """One forward pass, without gradients, of the replacement model described in the module
    docstring; batch row ``b`` gets ``edits[b]`` (positions already non-negative).

    ``clean`` (a :func:`~tl_circuits.replacement.clean_run` of one row of ``tokens``) gives the
    error terms, the constrained activations and outputs and the frozen values; without it
    ``constrained`` and ``freeze_attention`` are refused.
    """
    batch = tokens.shape[0]
    if clean is None and (constrained or freeze_attention):
        raise ConfigError("constrained layers and frozen attention need the clean run of the tokens")
    if edits is not None and len(edits) != batch:
        raise ConfigError(f"got {len(edits)} lists of edits for {batch} rows of tokens; give one per row")
    by_layer: dict[int, list[tuple[int, FeatureEdit]]] = {}
    for b, items in enumerate(edits or []):
        for e in items:
            by_layer.setdefault(e.layer, []).append((b, e))
    acts: dict[int, torch.Tensor] = {}
    x_live: dict[int, torch.Tensor] = {}
    final: list[torch.Tensor] = []

    def read_input(layer: int) -> HookFn:
        def hook(x: torch.Tensor) -> None:
            x_live[layer] = x
            if clean is not None and layer in constrained:
                a = clean.acts[layer].expand(batch, -1, -1).clone()
            else:
                a = transcoders.encode(layer, x)
            for b, e in by_layer.get(layer, []):
                assert e.position is not None
                a[b, e.position, e.feature] = e.value if e.mode == "set" else a[b, e.position, e.feature] * e.value
            acts[layer] = a

        return hook

    def write_output(layer: int) -> HookFn:
        def hook(y: torch.Tensor) -> torch.Tensor:
            error = None if clean is None else clean.errors[layer]
            return spliced(transcoders, layer, acts, x_live, error).to(y.dtype)

        return hook

    def keep_output(value: torch.Tensor) -> HookFn:
        return lambda y: value.expand_as(y)

    hooks: list[tuple[str, HookFn]] = []
    if clean is not None and freeze_attention:
        hooks += [(n, keep_output(clean.frozen[n])) for n in host.freeze_hook_names() if n in clean.frozen]
    hooks += [(transcoders.hook_in(la), read_input(la)) for la in transcoders.layers]
    hooks += [(transcoders.hook_out(la), write_output(la)) for la in transcoders.out_layers]
    if clean is not None:
        hooks += [(host.mlp_out_hook(la), keep_output(clean.mlp_out[la]))
                  for la in sorted(set(constrained) - set(transcoders.out_layers))]
    hooks.append((host.resid_final_hook(), final.append))
    with torch.no_grad(), host.hooks(hooks):
        logits = host.forward(tokens.to(host.device))
    return SplicedRun(logits, acts, final[-1])
