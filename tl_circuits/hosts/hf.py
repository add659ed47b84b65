"""Host adapter for a plain Hugging Face causal LM (``HFHost``); the nnsight hosts build on it.

Sites are TransformerLens hook names, placed on the HF modules by :class:`.hf_modules.HFModules`
from the architecture's row in :mod:`.sites`, or, for an architecture without a row, from the
row :mod:`.discover` proposes, once :mod:`.checks` has verified it on the model. The model's BOS
token is its tokenizer's, or without a tokenizer its config's ``bos_token_id``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int

from .base import HookFn, TokenizerMixin
from .checks import require_checked
from .discover import is_table_row, sites_for
from .hf_modules import HFModules
from .sites import ArchSites


class HFHost(TokenizerMixin):
    """Adapts a Hugging Face ``*ForCausalLM`` (Llama, Qwen2/3, Qwen3-MoE, GPT-2, Gemma-2/3, OLMo-2,
    or any decoder whose automatic sites pass their checks).

    ``sites`` pins the row (default: the table's, else an automatic one, checked once per model
    unless ``check=False``).
    """

    def __init__(self, hf_model: Any, tokenizer: Any = None, *, sites: ArchSites | None = None,
                 check: bool = True):
        self.hf_model = hf_model
        self.sites = HFModules(hf_model, sites or sites_for(hf_model))
        cfg = self.sites.config
        self.n_layers: int = self.sites.n_layers
        self.d_model: int = int(cfg.hidden_size)
        n_ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        self.n_ctx: int | None = None if n_ctx is None else int(n_ctx)
        self.tokenizer = tokenizer
        bos = getattr(cfg, "bos_token_id", None) if tokenizer is None else tokenizer.bos_token_id
        self.bos_token_id: int | None = None if bos is None else int(bos)
        if check and not is_table_row(hf_model, self.sites.sites):
            model_type = getattr(hf_model.config, "model_type", None)
            require_checked(self, hf_model, f"automatic sites for {model_type!r} ({type(hf_model).__name__})")

    @property
    def dtype(self) -> torch.dtype:
        return self.sites.W_U.dtype

    @property
    def device(self) -> torch.device:
        return self.sites.W_U.device

    @property
    def W_U(self) -> Float[torch.Tensor, "d_model d_vocab"]:
        return self.sites.W_U

    def _tokenizer(self) -> Any:
        return self.tokenizer

    def bfloat16_copy(self) -> HFHost:
        """An ``HFHost`` of a bfloat16 deep copy of the Hugging Face model (tokenizer shared)."""
        return self.cast_copy(torch.bfloat16)

    def cast_copy(self, dtype: torch.dtype) -> HFHost:
        """An ``HFHost`` of a deep copy of the Hugging Face model in ``dtype`` (tokenizer shared)."""
        return HFHost(copy.deepcopy(self.hf_model).to(dtype), self.tokenizer)

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
