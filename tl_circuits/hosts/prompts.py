"""One tokenization rule for every host: what a prompt becomes before any run.

- A **string** is encoded with the model's tokenizer, and starts with the model's BOS token when
  the model has one (``prepend_bos=True``, the default), whether or not the tokenizer adds BOS
  itself: the BOS position is where attention sinks, and tl_circuits folds it into the BOS token
  node. ``prepend_bos=False`` gives the text's tokens alone (a BOS the tokenizer adds is dropped).
- **Chat messages** (a list of ``{"role": ..., "content": ...}``) are rendered by the tokenizer's
  chat template with the generation prompt (``apply_chat_template(messages,
  add_generation_prompt=True)``), and those tokens are used exactly: the template decides BOS.
- **Token ids** (a list of ints or a 1-D tensor) are used exactly as given.

The model's BOS id is the tokenizer's, or, for a Hugging Face model without a tokenizer, its
config's ``bos_token_id`` (``Host.bos_token_id``). This is TransformerLens' convention
(``prepend_bos=True``) applied the same way on HookedTransformer, TransformerBridge, nnsight and
Hugging Face hosts, so one string gives one token sequence, and one graph, on all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int

from ..errors import ConfigError
from .base import Host, tokenizer_adds_bos

#: What a user may pass as a prompt.
PromptLike = str | Sequence[int] | torch.Tensor | Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class EncodedPrompt:
    """A prompt's token ids and how they were made (recorded in a graph's header)."""

    tokens: Int[torch.Tensor, " pos"]
    #: The prompt text (for chat messages, the rendered template), or None for token ids.
    text: str | None
    #: "text", "chat" or "tokens".
    source: str
    #: Whether tl_circuits put the BOS token in front (not the tokenizer, not the user).
    bos_added: bool
    prepend_bos: bool
    messages: list[dict[str, str]] | None = None

    def header(self) -> dict[str, Any]:
        """The JSON-able record of this encoding kept in a graph's settings."""
        out: dict[str, Any] = {"source": self.source, "prepend_bos": self.prepend_bos,
                               "bos_added": self.bos_added}
        if self.messages is not None:
            out["messages"] = self.messages
        return out


def is_chat(prompt: object) -> bool:
    """Whether ``prompt`` is a list of chat messages (mappings with a ``role``)."""
    return (isinstance(prompt, Sequence) and not isinstance(prompt, (str, bytes)) and len(prompt) > 0
            and all(isinstance(m, Mapping) for m in prompt))


def encode_prompt(host: Host, prompt: PromptLike | object, *, prepend_bos: bool = True) -> EncodedPrompt:
    """The token ids of ``prompt`` by the rule in the module docstring.

    Example:
        >>> encode_prompt(as_host(model), "The capital of France is").tokens  # doctest: +SKIP
        tensor([    1,   504,  3575,   282,  4649,   314])
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ConfigError("the prompt is empty; give some text, chat messages or token ids")
        return _encode_text(host, prompt, prepend_bos)
    if is_chat(prompt):
        return _encode_chat(host, [dict(m) for m in prompt])  # type: ignore[union-attr]
    if isinstance(prompt, torch.Tensor):
        tokens = prompt
    else:
        try:
            tokens = torch.as_tensor(list(prompt))  # type: ignore[arg-type]
        except (TypeError, ValueError, RuntimeError) as err:
            raise ConfigError(
                f"cannot read the prompt {prompt!r}: give a string, chat messages "
                "([{'role': 'user', 'content': ...}]) or token ids (ints)"
            ) from err
    if tokens.dim() != 1:
        raise ConfigError(f"token ids must be 1-D (one prompt), got shape {tuple(tokens.shape)}")
    if tokens.is_floating_point() and tokens.numel():
        raise ConfigError("token ids must be integers, got a floating-point tensor")
    return EncodedPrompt(tokens.long().cpu(), None, "tokens", False, prepend_bos)


def _encode_text(host: Host, text: str, prepend_bos: bool) -> EncodedPrompt:
    ids = host.tokenize(text).long().cpu()
    bos = host.bos_token_id
    starts = bos is not None and ids.numel() > 0 and int(ids[0]) == bos
    if bos is None or (prepend_bos and starts):
        return EncodedPrompt(ids, text, "text", False, prepend_bos)
    if not prepend_bos:
        tokenizer = getattr(host, "tokenizer", None)
        if starts and tokenizer is not None and tokenizer_adds_bos(tokenizer):
            ids = ids[1:]  # the tokenizer's own BOS
        return EncodedPrompt(ids, text, "text", False, prepend_bos)
    return EncodedPrompt(torch.cat([torch.tensor([bos]), ids]), text, "text", True, prepend_bos)


def _encode_chat(host: Host, messages: list[dict[str, str]]) -> EncodedPrompt:
    for i, m in enumerate(messages):
        if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ConfigError(
                f"chat message {i} is {m!r}; each message needs a 'role' and a 'content' string, "
                "e.g. {'role': 'user', 'content': 'What is the capital of France?'}"
            )
    tokenizer = getattr(host, "tokenizer", None)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "chat messages need a tokenizer with a chat template, and this model's tokenizer has "
            "none; pass the prompt as a string (format it yourself) or as token ids"
        )
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, Mapping):  # transformers may return a BatchEncoding
        ids = ids["input_ids"]
    tokens = torch.as_tensor(ids, dtype=torch.long).flatten()
    return EncodedPrompt(tokens, str(text), "chat", False, True, messages)
