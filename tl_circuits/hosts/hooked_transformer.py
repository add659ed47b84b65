"""Host adapter for TransformerLens ``HookedTransformer``: hook names are native, so this is thin."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int

from ..errors import ConfigError
from .base import HookFn, tokenizer_adds_bos

_FREEZE = re.compile(r"(\.|^)(hook_pattern|hook_scale)$")


class HookedTransformerHost:
    """Adapts a ``transformer_lens.HookedTransformer`` (or anything with its hook API)."""

    def __init__(self, model: Any):
        self.model = model
        cfg = model.cfg
        self.n_layers: int = cfg.n_layers
        self.d_model: int = cfg.d_model
        self.n_ctx: int | None = cfg.n_ctx
        tok = model.tokenizer
        self.bos_token_id: int | None = None if tok is None else tok.bos_token_id
        self._adds_bos = tok is not None and tokenizer_adds_bos(tok)
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

    def tokenize(self, prompt: str) -> Int[torch.Tensor, " pos"]:
        tok = self.model.tokenizer
        if tok is None:
            raise ConfigError(
                "this model has no tokenizer, so a string prompt cannot be encoded; "
                "pass the prompt as token ids (a list of ints or a 1-D tensor)"
            )
        ids = tok(prompt, add_special_tokens=self._adds_bos)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def token_strings(self, tokens: Sequence[int]) -> list[str]:
        tok = self.model.tokenizer
        if tok is None:
            return [f"<{int(t)}>" for t in tokens]
        return [tok.decode([int(t)]) for t in tokens]

    def single_token_id(self, text: str) -> int:
        tok = self.model.tokenizer
        if tok is None:
            raise ConfigError(
                f"cannot turn {text!r} into a token id: the model has no tokenizer; "
                "give the target as an int token id"
            )
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ConfigError(
                f"target {text!r} is {len(ids)} tokens ({ids}), expected exactly one; "
                "pick a single-token string (often with a leading space, e.g. ' Paris') or a token id"
            )
        return int(ids[0])

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
