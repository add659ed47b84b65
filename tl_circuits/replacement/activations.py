"""Activations at named sites of the model (transcoder inputs, MLP outputs), for training,
evaluation and dashboards: one forward pass through the host's hooks, stopped once every site has
been seen.

The stop is a private exception raised by the hook of the last site to fire and caught around
``host.forward``, so the layers after it never run. It is checked on every host (HookedTransformer,
TransformerBridge, plain Hugging Face and nnsight, whose trace lets an exception from a module hook
through unchanged); a host that wraps the exception is recognised through the exception's
``__cause__`` / ``__context__`` chain, and a host that swallows it just finishes the pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int

from ..errors import ConfigError
from ..hosts.base import HookFn, Host


class _StopForward(Exception):
    """Every requested site has been seen: end the forward pass here."""


def activations_at(
    host: Host,
    tokens: Int[torch.Tensor, "batch pos"],
    sites: Sequence[str],
    *,
    stop_early: bool = True,
) -> dict[str, Float[torch.Tensor, "batch pos ..."]]:
    """``{site: value}`` at the TransformerLens-named ``sites`` of a forward pass over ``tokens``,
    without gradients (values detached, on the host's device, in its dtype).

    With ``stop_early`` the pass ends as soon as the last of the sites has been seen (for sites at
    layer ``l``, the layers after ``l`` and the unembedding are skipped).

    Example:
        >>> acts = activations_at(as_host(model), tokens, ["blocks.0.hook_mlp_out"])  # doctest: +SKIP
        >>> acts["blocks.0.hook_mlp_out"].shape  # doctest: +SKIP
        torch.Size([2, 7, 576])
    """
    wanted = list(dict.fromkeys(sites))
    missing = [s for s in wanted if not host.has_hook(s)]
    if missing:
        raise ConfigError(
            f"the model has no site(s) {missing[:3]}{'...' if len(missing) > 3 else ''}; use "
            "TransformerLens hook names such as 'blocks.0.ln2.hook_normalized' or "
            "'blocks.0.hook_mlp_out'"
        )
    seen: dict[str, torch.Tensor] = {}

    def grab(name: str) -> HookFn:
        def hook(x: torch.Tensor) -> None:
            seen[name] = x.detach()
            if stop_early and len(seen) == len(wanted):
                raise _StopForward

        return hook

    with torch.no_grad(), host.hooks([(s, grab(s)) for s in wanted]):
        try:
            host.forward(tokens.to(host.device))
        except Exception as exc:
            if not _is_stop(exc):
                raise
    if len(seen) != len(wanted):
        raise ConfigError(
            f"the forward pass never reached site(s) {sorted(set(wanted) - set(seen))[:3]}, though "
            f"the model reports having them; this host ({type(host).__qualname__}) does not call "
            "hooks there"
        )
    return {s: seen[s] for s in wanted}


def _is_stop(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was raised while handling or because of, our stop."""
    for _ in range(16):
        if exc is None:
            return False
        if isinstance(exc, _StopForward):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
