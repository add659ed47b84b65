"""Host adapter for TransformerLens ``HookedTransformer``: hook names are native, so this is thin."""

from __future__ import annotations

import contextlib
import copy
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int

from .base import HookFn, TokenizerMixin

_FREEZE = re.compile(r"(\.|^)(hook_pattern|hook_scale)$")


class HookedTransformerHost(TokenizerMixin):
    """Adapts a ``transformer_lens.HookedTransformer`` (or anything with its hook API)."""

    def __init__(self, model: Any):
        self.model = model
        cfg = model.cfg
        self.n_layers: int = cfg.n_layers
        self.d_model: int = cfg.d_model
        self.n_ctx: int | None = cfg.n_ctx
        tok = model.tokenizer
        self.bos_token_id: int | None = None if tok is None else tok.bos_token_id
        self._hook_names = set(model.hook_dict.keys())
        # Virtual site: the MLP's input after the norm and its weight (a pre-hook on the MLP).
        self._virtual = {
            f"blocks.{la}.mlp.hook_in": la for la in range(self.n_layers)
            if f"blocks.{la}.mlp.hook_in" not in self._hook_names
        }
        self._hook_names |= set(self._virtual)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.cfg.dtype

    @property
    def device(self) -> torch.device:
        return self.model.W_U.device

    @property
    def W_U(self) -> Float[torch.Tensor, "d_model d_vocab"]:
        return self.model.W_U

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def _tokenizer(self) -> Any:
        return self.model.tokenizer

    def bfloat16_copy(self) -> HookedTransformerHost:
        """This host's kind on a bfloat16 deep copy of the model (the tokenizer shared, not copied)."""
        return self.cast_copy(torch.bfloat16)

    def cast_copy(self, dtype: torch.dtype) -> HookedTransformerHost:
        """This host's kind on a deep copy of the model in ``dtype`` (the tokenizer shared)."""
        tokenizer = self.model.tokenizer
        self.model.tokenizer = None
        try:
            fast = copy.deepcopy(self.model)
        finally:
            self.model.tokenizer = tokenizer
        fast.tokenizer = tokenizer
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return type(self)(fast.to(dtype))

    def has_hook(self, name: str) -> bool:
        return name in self._hook_names

    def freeze_hook_names(self) -> list[str]:
        return sorted(n for n in self._hook_names if _FREEZE.search(n))

    def embed_hook(self) -> str:
        return "blocks.0.hook_resid_pre"

    def resid_final_hook(self) -> str:
        return "unembed.hook_in" if "unembed.hook_in" in self._hook_names else "ln_final.hook_normalized"

    def mlp_out_hook(self, layer: int) -> str:
        return f"blocks.{layer}.hook_mlp_out"

    @contextlib.contextmanager
    def hooks(self, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        virtual = [(self._virtual[name], fn) for name, fn in hooks if name in self._virtual]
        wrapped = [(name, _wrap(fn)) for name, fn in hooks if name not in self._virtual]
        with contextlib.ExitStack() as stack:
            for layer, fn in virtual:
                handle = self.model.blocks[layer].mlp.register_forward_pre_hook(_wrap_pre(fn))
                stack.callback(handle.remove)
            stack.enter_context(self.model.hooks(fwd_hooks=wrapped, reset_hooks_end=True))
            yield

    def forward(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
        return self.model(tokens, return_type="logits")


def _wrap_pre(fn: HookFn) -> Any:
    def hook(module: Any, args: tuple) -> tuple | None:
        out = fn(args[0])
        return None if out is None else (out, *args[1:])

    return hook


def _wrap(fn: HookFn) -> Any:
    def hook(tensor: torch.Tensor, hook: Any) -> torch.Tensor | None:
        return fn(tensor)

    return hook
