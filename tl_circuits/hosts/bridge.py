"""Host adapter for TransformerLens ``TransformerBridge`` (TL 3.x): its hook names are TL names.

The Bridge wraps a Hugging Face model and exposes the TransformerLens hook points, with or
without ``enable_compatibility_mode()``; with compatibility mode's weight processing the model is
the processed one (folded norms, centred weights), exactly as a processed ``HookedTransformer``.

Norm sites (``*.hook_scale``, ``*.hook_normalized``) are not left to the Bridge's own hook points
on architectures of :data:`.sites.ARCH_SITES`: the Bridge runs HF's norm (float32 inside, even in
a float64 model) when a hook only reads and its own recomputation when a hook edits, so a clean
pass and a frozen pass would differ at float32 rounding. Hooks on the Bridge's norm module
recompute the output instead, with the code the HF hosts use
(:func:`.hf_modules.norm_forward`): the same arithmetic on every host and in every pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int

from .base import HookFn
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
        #: How this architecture's norms compute, or None to use the Bridge's own norm hooks.
        self._norm_kind: str | None = None if row is None else row.norm

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

    def _norm_module(self, name: str) -> Any:
        """The Bridge norm module of site ``name`` if we recompute it, else None."""
        if self._norm_kind is None or not name.endswith(_NORM_SITES):
            return None
        try:
            module = self.model.get_submodule(name.rsplit(".", 1)[0])
        except AttributeError:
            return None
        hf_norm = getattr(module, "original_component", None)
        hook_points = hasattr(module, "hook_in") and hasattr(module, "hook_out")
        return module if hook_points and hasattr(hf_norm, "weight") else None

    @contextlib.contextmanager
    def hooks(self, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        norms: dict[str, tuple[Any, dict[str, list[HookFn]]]] = {}
        rest: list[tuple[str, HookFn]] = []
        for name, fn in hooks:
            module = self._norm_module(name)
            if module is None:
                rest.append((name, fn))
                continue
            prefix, site = name.rsplit(".", 1)
            norms.setdefault(prefix, (module, {}))[1].setdefault(site, []).append(fn)
        with contextlib.ExitStack() as stack:
            stack.enter_context(super().hooks(rest))
            for module, fns in norms.values():
                on_scale = chain(fns.get("hook_scale", []))
                on_normalized = chain(fns.get("hook_normalized", []))
                for handle in _recompute_norm(module, self._norm_kind or "", on_scale, on_normalized):
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
