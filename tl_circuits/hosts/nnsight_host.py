"""Host adapters for Hugging Face causal LMs: plain (``HFHost``) and wrapped by nnsight (``NNsightHost``).

Sites are TransformerLens hook names, placed on the HF modules by :class:`.hf_modules.HFModules`
from the architecture's row in :mod:`.sites`. ``NNsightHost`` runs the forward pass through
nnsight's ``LanguageModel.trace`` (locally), so whatever the nnsight model does to a forward pass
applies; the hooks themselves are PyTorch module hooks on the wrapped model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int

from ..errors import ConfigError
from .base import HookFn, tokenizer_adds_bos
from .hf_modules import HFModules


class HFHost:
    """Adapts a Hugging Face ``*ForCausalLM`` (Llama, Qwen2, Qwen3, GPT-2, Gemma-2, ...)."""

    def __init__(self, hf_model: Any, tokenizer: Any = None):
        self.hf_model = hf_model
        self.sites = HFModules(hf_model)
        cfg = hf_model.config
        self.n_layers: int = self.sites.n_layers
        self.d_model: int = int(cfg.hidden_size)
        n_ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        self.n_ctx: int | None = None if n_ctx is None else int(n_ctx)
        self.tokenizer = tokenizer
        self.bos_token_id: int | None = None if tokenizer is None else tokenizer.bos_token_id
        self._adds_bos = tokenizer is not None and tokenizer_adds_bos(tokenizer)

    @property
    def dtype(self) -> torch.dtype:
        return self.sites.W_U.dtype

    @property
    def device(self) -> torch.device:
        return self.sites.W_U.device

    @property
    def W_U(self) -> Float[torch.Tensor, "d_model d_vocab"]:
        return self.sites.W_U

    def tokenize(self, prompt: str) -> Int[torch.Tensor, " pos"]:
        if self.tokenizer is None:
            raise ConfigError(
                "this model has no tokenizer, so a string prompt cannot be encoded; "
                "pass the prompt as token ids (a list of ints or a 1-D tensor)"
            )
        ids = self.tokenizer(prompt, add_special_tokens=self._adds_bos)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def token_strings(self, tokens: Sequence[int]) -> list[str]:
        if self.tokenizer is None:
            return [f"<{int(t)}>" for t in tokens]
        return [self.tokenizer.decode([int(t)]) for t in tokens]

    def single_token_id(self, text: str) -> int:
        if self.tokenizer is None:
            raise ConfigError(
                f"cannot turn {text!r} into a token id: the model has no tokenizer; "
                "give the target as an int token id"
            )
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ConfigError(
                f"target {text!r} is {len(ids)} tokens ({ids}), expected exactly one; "
                "pick a single-token string (often with a leading space, e.g. ' Paris') or a token id"
            )
        return int(ids[0])

    def has_hook(self, name: str) -> bool:
        return name in self.sites.hook_names

    def freeze_hook_names(self) -> list[str]:
        return self.sites.freeze_hook_names()

    def embed_hook(self) -> str:
        return "blocks.0.hook_resid_pre"

    def resid_final_hook(self) -> str:
        return "unembed.hook_in"

    def mlp_out_hook(self, layer: int) -> str:
        return f"blocks.{layer}.hook_mlp_out"

    @contextlib.contextmanager
    def hooks(self, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        with self.sites.hooks(hooks):
            yield

    def forward(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
        return self.hf_model(input_ids=tokens, use_cache=False).logits


class NNsightHost(HFHost):
    """Adapts an nnsight ``LanguageModel``; the forward pass runs through ``model.trace``.

    Remote (NDIF) execution is not supported: the sites are PyTorch hooks on the local modules,
    which a remote request does not carry (see docs/hosts.md).
    """

    def __init__(self, model: Any):
        self.nnsight_model = model
        super().__init__(model._module, getattr(model, "tokenizer", None))

    def forward(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
        model = self.nnsight_model
        with model.trace({"input_ids": tokens, "use_cache": False}):
            logits = model.output.logits.save()
        return logits
