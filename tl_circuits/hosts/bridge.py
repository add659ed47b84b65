"""Host adapter for TransformerLens ``TransformerBridge`` (TL 3.x): its hook names are TL names.

The Bridge wraps a Hugging Face model and exposes the TransformerLens hook points, with or
without ``enable_compatibility_mode()``; with compatibility mode's weight processing the model is
the processed one (folded norms, centred weights), exactly as a processed ``HookedTransformer``.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int

from .hooked_transformer import HookedTransformerHost


class TransformerBridgeHost(HookedTransformerHost):
    """Adapts a ``transformer_lens.model_bridge.TransformerBridge``; never needs HookedTransformer."""

    def __init__(self, model: Any):
        super().__init__(model)

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
        return set(self.model.hook_dict.keys())

    def forward(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
        return self.model(tokens, return_type="logits")
