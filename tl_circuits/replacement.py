"""The local replacement model, through hooks only: three freezes, the transcoder splice, error terms.

Under the freezes (attention patterns and normalisation scales detached at their clean values)
and with every MLP output replaced by a constant (its transcoder reconstruction plus an error
term, error = true MLP output - reconstruction), the map from what each node writes to what each
node reads is linear. The forward values are the model's own, bit for bit: the splice changes only
which paths gradients may take (Ameisen et al. 2025, "Circuit Tracing", section 2).

A transcoder's linear skip (``W_skip``) is not a node: gradients flow through it, from the MLP
output back to the transcoder input, so a feature's edge includes paths through later skips.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int

from .errors import ConfigError
from .hosts.base import HookFn, Host
from .hosts.base import freeze as freeze_hook
from .transcoders import Transcoders


@dataclass
class ReplacementState:
    """What one forward pass of the replacement model leaves behind (batch = copies of a prompt).

    ``x_in`` / ``writes`` / ``embed`` / ``resid_final`` stay in the autograd graph; ``acts`` and
    ``errors`` are constants read off the first copy.
    """

    logits: Float[torch.Tensor, "batch pos d_vocab"]
    x_in: dict[int, Float[torch.Tensor, "batch pos d_in"]] = field(default_factory=dict)
    writes: dict[int, Float[torch.Tensor, "batch pos d_model"]] = field(default_factory=dict)
    embed: Float[torch.Tensor, "batch pos d_model"] | None = None
    resid_final: Float[torch.Tensor, "batch pos d_model"] | None = None
    acts: dict[int, Float[torch.Tensor, "pos d_sae"]] = field(default_factory=dict)
    errors: dict[int, Float[torch.Tensor, "pos d_model"]] = field(default_factory=dict)
    mlp_out: dict[int, Float[torch.Tensor, "pos d_model"]] = field(default_factory=dict)


def check_compatible(host: Host, transcoders: Transcoders) -> None:
    """Raise ConfigError if the transcoders cannot be spliced into the host's model."""
    for layer in transcoders.layers:
        if not 0 <= layer < host.n_layers:
            raise ConfigError(
                f"a transcoder is for layer {layer}, but the model has layers 0..{host.n_layers - 1}; "
                "load the transcoders that belong to this model"
            )
    for name in {transcoders.hook_in(la) for la in transcoders.layers} | {
        transcoders.hook_out(la) for la in transcoders.out_layers
    }:
        if not host.has_hook(name):
            raise ConfigError(
                f"the transcoders read or write hook {name!r}, which this model does not have; "
                "check the transcoders' metadata.hook_name / hook_name_out against the model's "
                "hook names (e.g. blocks.0.ln2.hook_normalized, blocks.0.hook_mlp_out)"
            )
    if transcoders.d_in != host.d_model or transcoders.d_out != host.d_model:
        raise ConfigError(
            f"transcoder d_in={transcoders.d_in}, d_out={transcoders.d_out} but the model has "
            f"d_model={host.d_model}; these transcoders were trained for a different model"
        )
    for layer in transcoders.out_layers:
        if transcoders.hook_out(layer) != host.mlp_out_hook(layer):
            raise ConfigError(
                f"layer {layer}'s transcoder writes {transcoders.hook_out(layer)!r}; tl_circuits "
                f"replaces MLP outputs at {host.mlp_out_hook(layer)!r}: use transcoders whose "
                "hook_name_out is the MLP output"
            )


@contextlib.contextmanager
def replacement_hooks(
    host: Host,
    transcoders: Transcoders,
    state: ReplacementState,
    *,
    freeze: bool = True,
) -> Iterator[None]:
    """Hooks that freeze, splice and record into ``state`` during one forward pass.

    The embedding becomes a leaf that requires grad; each MLP output becomes
    ``y.detach() + (skip(x) - skip(x).detach())``: the same value, a constant to autograd except
    through the linear skip.
    """
    hooks: list[tuple[str, HookFn]] = []
    if freeze:
        hooks += [(name, freeze_hook) for name in host.freeze_hook_names()]

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
    with host.hooks(hooks):
        yield


def run_replacement(
    host: Host,
    transcoders: Transcoders,
    tokens: Int[torch.Tensor, " pos"],
    *,
    batch: int = 1,
) -> ReplacementState:
    """One forward pass of the replacement model over ``batch`` copies of ``tokens``."""
    state = ReplacementState(logits=torch.empty(0, 0, 0))
    batched = tokens.to(host.device).unsqueeze(0).expand(batch, -1)
    with torch.enable_grad(), replacement_hooks(host, transcoders, state):
        state.logits = host.forward(batched)
    return state


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
        recon = transcoders.reconstruct(layer, state.acts, x_first)
        state.errors[layer] = clean[0] - recon
        if transcoders.has_skip(layer) and x_out is not None:
            skip = transcoders.skip(layer, x_out)
            out = clean + (skip - skip.detach())
        else:
            out = clean.requires_grad_(True)
        state.writes[layer] = out
        return out

    return hook
