"""Hosts: thin adapters from a user's model to the protocol the core is written against."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import HookFn, Host

__all__ = ["Host", "HookFn", "as_host"]


def as_host(model: Any) -> Host:
    """Pick the adapter for ``model`` by its type, importing the host library only then."""
    if isinstance(model, Host):
        return model
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(model).__mro__}
    if any(n.startswith("transformer_lens.HookedTransformer") for n in names) or any(
        n.endswith(".HookedTransformer") for n in names
    ):
        from .hooked_transformer import HookedTransformerHost

        return HookedTransformerHost(model)
    raise ConfigError(
        f"tl_circuits does not know how to hook a {type(model).__qualname__}; supported models: "
        "transformer_lens.HookedTransformer (TransformerBridge and nnsight models come with "
        "their hosts); or pass an object implementing tl_circuits.hosts.Host"
    )
