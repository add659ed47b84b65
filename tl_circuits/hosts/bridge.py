"""Host adapter for TransformerLens ``TransformerBridge`` (TL 3.x): its hook names are TL names.

The Bridge wraps a Hugging Face model and exposes the TransformerLens hook points, with or
without ``enable_compatibility_mode()``; with compatibility mode's weight processing the model is
the processed one (folded norms, centred weights), exactly as a processed ``HookedTransformer``.

Norm sites (``*.hook_scale``, ``*.hook_normalized``, q/k norms included) are not left to the
Bridge's own hook points: the Bridge runs HF's norm (float32 inside, even in a float64 model) when
a hook only reads and its own recomputation when a hook edits, so a clean pass and a frozen pass
would differ at float32 rounding. Hooks on the Bridge's norm module recompute the output instead,
with the code the HF hosts use (:func:`.hf_modules.norm_forward`): the same arithmetic on every
host and in every pass. The norm kind is the architecture's in :data:`.sites.ARCH_SITES`; for an
architecture without a row, the kind that reproduces the wrapped HF norm on a random input
(:func:`.discover.norm_kind`), else the Bridge's own norm hooks.

The Bridge's hook points are TransformerLens's, adapter by adapter. For an architecture without a
row in :data:`.sites.ARCH_SITES`, the host runs the numeric checks of :mod:`.checks` once per
model before any graph is built (TL 3.9's Granite adapter, for one, drops a hook's returned
tensor when it equals the original by value, so the attribution splice would be off the
autograd path: refused, not a wrong graph).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int

from .base import HookFn
from .checks import require_checked
from .discover import norm_kind
from .hf_modules import chain, norm_forward
from .hooked_transformer import HookedTransformerHost
from .sites import ARCH_SITES

_NORM_SITES = (".hook_scale", ".hook_normalized")


class TransformerBridgeHost(HookedTransformerHost):
    """Adapts a ``transformer_lens.model_bridge.TransformerBridge``; never needs HookedTransformer."""

    def __init__(self, model: Any):
        super().__init__(model)
        hf_model = getattr(model, "original_model", None)
        model_type = getattr(getattr(hf_model, "config", None), "model_type", None)
        row = ARCH_SITES.get(model_type) if isinstance(model_type, str) else None
        #: How this architecture's norms compute, or None to find it per norm (:func:`norm_kind`).
        self._norm_kind: str | None = None if row is None else row.norm
        self._kinds: dict[int, str | None] = {}  # id(HF norm) -> its kind, without a table row
        if row is None:
            require_checked(self, model, f"the TransformerBridge sites of {model_type!r} "
                                         f"({type(hf_model).__name__}), an architecture without a row",
                            fix="attribute the Hugging Face model itself (or through nnsight), whose "
                                "sites tl_circuits places and checks itself; the Bridge's hook points "
                                "come from TransformerLens's adapter for this architecture")

    @property
    def dtype(self) -> torch.dtype:
        return self.model.W_U.dtype

    def has_hook(self, name: str) -> bool:
        return name in self._hook_names_now()

    def freeze_hook_names(self) -> list[str]:
        self._hook_names = self._hook_names_now()
        return super().freeze_hook_names()

    def _hook_names_now(self) -> set[str]:
        # enable_compatibility_mode() rebuilds the hook registry after construction.
        return set(self.model.hook_dict.keys()) | set(self._virtual)

    def _norm_module(self, name: str) -> tuple[Any, str] | None:
        """The Bridge norm module of site ``name`` and its kind if we recompute it, else None."""
        if not name.endswith(_NORM_SITES):
            return None
        try:
            module = self.model.get_submodule(name.rsplit(".", 1)[0])
        except AttributeError:
            return None
        hf_norm = getattr(module, "original_component", None)
        if not (hasattr(module, "hook_in") and hasattr(module, "hook_out") and hasattr(hf_norm, "weight")):
            return None
        kind = self._norm_kind
        if kind is None:
            if id(hf_norm) not in self._kinds:
                self._kinds[id(hf_norm)] = norm_kind(hf_norm)
            kind = self._kinds[id(hf_norm)]
        return None if kind is None else (module, kind)

    @contextlib.contextmanager
    def hooks(self, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        norms: dict[str, tuple[Any, str, dict[str, list[HookFn]]]] = {}
        rest: list[tuple[str, HookFn]] = []
        for name, fn in hooks:
            found = self._norm_module(name)
            if found is None:
                rest.append((name, fn))
                continue
            prefix, site = name.rsplit(".", 1)
            norms.setdefault(prefix, (*found, {}))[2].setdefault(site, []).append(fn)
        with contextlib.ExitStack() as stack:
            stack.enter_context(super().hooks(rest))
            for module, kind, fns in norms.values():
                on_scale = chain(fns.get("hook_scale", []))
                on_normalized = chain(fns.get("hook_normalized", []))
                for handle in _recompute_norm(module, kind, on_scale, on_normalized):
                    stack.callback(handle.remove)
            yield

    def forward(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
        return self.model(tokens, return_type="logits")


def _recompute_norm(module: Any, kind: str, on_scale: Callable[[torch.Tensor], torch.Tensor],
                    on_normalized: Callable[[torch.Tensor], torch.Tensor]) -> list[Any]:
    """Hooks making Bridge norm ``module`` output :func:`.hf_modules.norm_forward` of its input.

    The value is replaced at the norm's ``hook_out``, ahead of any TL hook there: the Bridge
    aliases TL sites to it (Gemma-2's ``blocks.{l}.hook_mlp_out`` is ``ln2_post.hook_out``), so a
    hook on such a site still sees, and may replace, our value. The input is read at ``hook_in``
    after every TL hook there, so an edited input is the one normalised.
    """
    seen: list[torch.Tensor] = []

    def keep_input(hook_point: Any, args: tuple, output: torch.Tensor) -> None:
        seen[:] = [output]

    def replace_output(hook_point: Any, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return norm_forward(kind, module.original_component, seen.pop(), on_scale, on_normalized)

    return [module.hook_in.register_forward_hook(keep_input),
            module.hook_out.register_forward_hook(replace_output, prepend=True)]
