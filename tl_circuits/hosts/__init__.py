"""Hosts: thin adapters from a user's model to the protocol the core is written against."""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConfigError
from .base import HookFn, Host

__all__ = ["Host", "HookFn", "as_host"]

#: (class name in the model's MRO, module prefix of that class, "module:Host class"), first match
#: wins; the host module (and its library) is imported only when a model of that kind is seen.
_DISPATCH: list[tuple[str, str, str]] = [
    ("TransformerBridge", "transformer_lens", ".bridge:TransformerBridgeHost"),
    ("HookedTransformer", "", ".hooked_transformer:HookedTransformerHost"),
    ("TransformersModel", "nnsight", ".nnsight_host:NNsightHost"),
    ("PreTrainedModel", "transformers", ".hf:HFHost"),
]


def as_host(model: Any) -> Host:
    """Pick the adapter for ``model`` by its type, importing the host library only then.

    Supported: ``transformer_lens.HookedTransformer`` (TransformerLens 3),
    ``transformer_lens.model_bridge.TransformerBridge`` (TransformerLens 3 and 4, with or without
    compatibility mode), an nnsight ``LanguageModel`` and a plain Hugging Face ``*ForCausalLM``:
    a family of ``tl_circuits.hosts.sites.ARCH_SITES``, or any decoder whose automatically found
    sites pass their numeric checks (docs/hosts.md).

    Example:
        >>> host = as_host(model)  # doctest: +SKIP
    """
    classes = [(c.__qualname__, c.__module__) for c in type(model).__mro__]
    for class_name, module_prefix, target in _DISPATCH:
        if any(q == class_name and m.startswith(module_prefix) for q, m in classes):
            module_name, host_name = target.split(":")
            module = importlib.import_module(module_name, __name__)
            return getattr(module, host_name)(model)
    if isinstance(model, Host):
        return model
    raise ConfigError(
        f"tl_circuits does not know how to hook a {type(model).__qualname__}; supported models: "
        "transformer_lens.HookedTransformer, transformer_lens.model_bridge.TransformerBridge, "
        "nnsight LanguageModel, Hugging Face *ForCausalLM (a family of tl_circuits.hosts.sites."
        "ARCH_SITES, or a decoder whose automatic sites pass their checks); "
        "or pass an object implementing tl_circuits.hosts.Host"
    )
