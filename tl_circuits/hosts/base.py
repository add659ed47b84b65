"""The host protocol: the few questions the attribution core asks of a user's model.

A host adapts one kind of model (TransformerLens ``HookedTransformer``, ``TransformerBridge``,
an nnsight model) to this protocol and nothing else. Sites are named with TransformerLens hook
names whatever the host (``blocks.{l}.hook_mlp_out``, ``blocks.{l}.ln2.hook_normalized``, ...),
so transcoders trained on any host load on every host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int

from ..errors import ConfigError

#: A hook function: receives the tensor at a site, returns a replacement (or None to keep it).
HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]


@runtime_checkable
class Host(Protocol):
    """What the core needs from a model. All names below are TransformerLens hook names.

    A host may also offer
    - ``run_traced(tokens, job, *, remote)``: run ``job(host)`` where the model runs (the nnsight
      host does, for ``attribute(..., remote=...)``);
    - ``tokenizer``: the model's Hugging Face tokenizer (or None), which training reads to cut
      texts into contexts;
    - ``bfloat16_copy()``: a host of a bfloat16 copy of the model (the model itself untouched),
      which training runs its forward passes on when asked to (``bfloat16_model=True``);
    - ``cast_copy(dtype)``: the same in any dtype (``attribute(..., dtype=...)``).
    """

    n_layers: int
    d_model: int
    n_ctx: int | None
    bos_token_id: int | None

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def W_U(self) -> Float[torch.Tensor, "d_model d_vocab"]: ...

    def tokenize(self, prompt: str) -> Int[torch.Tensor, " pos"]:
        """Token ids of ``prompt``, with BOS only if the model's tokenizer adds one itself."""
        ...

    def token_strings(self, tokens: Sequence[int]) -> list[str]: ...

    def single_token_id(self, text: str) -> int:
        """The id of ``text`` if it is exactly one token; raises ConfigError otherwise."""
        ...

    def has_hook(self, name: str) -> bool: ...

    def freeze_hook_names(self) -> list[str]:
        """Every attention-pattern and normalisation-scale site (final and post-norms too)."""
        ...

    def embed_hook(self) -> str:
        """Site whose value is the full input embedding (token + positional) at each position."""
        ...

    def resid_final_hook(self) -> str:
        """Site whose value is the final normalised residual stream, the unembedding's input."""
        ...

    def mlp_out_hook(self, layer: int) -> str:
        """Site whose value is what the MLP of ``layer`` adds to the residual stream."""
        ...

    def hooks(self, hooks: Sequence[tuple[str, HookFn]]) -> contextlib.AbstractContextManager[None]:
        """Context manager: the hooks are active inside, and always removed on exit."""
        ...

    def forward(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
        """Logits of a plain forward pass (with whatever hooks are active)."""
        ...


class TokenizerMixin:
    """``tokenize``, ``token_strings`` and ``single_token_id`` for a host whose model has a
    Hugging Face tokenizer (or none), returned by :meth:`_tokenizer`."""

    def _tokenizer(self) -> Any:
        raise NotImplementedError

    def tokenize(self, prompt: str) -> Int[torch.Tensor, " pos"]:
        tok = self._tokenizer()
        if tok is None:
            raise ConfigError(
                "this model has no tokenizer, so a string prompt cannot be encoded; "
                "pass the prompt as token ids (a list of ints or a 1-D tensor)"
            )
        ids = tok(prompt, add_special_tokens=tokenizer_adds_bos(tok))["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def token_strings(self, tokens: Sequence[int]) -> list[str]:
        tok = self._tokenizer()
        if tok is None:
            return [f"<{int(t)}>" for t in tokens]
        return [tok.decode([int(t)]) for t in tokens]

    def single_token_id(self, text: str) -> int:
        tok = self._tokenizer()
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


def tokenizer_adds_bos(tokenizer: object) -> bool:
    """Whether a Hugging Face tokenizer puts its BOS token in front of a plain encoding."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]  # type: ignore[operator]
    return len(ids) > 0 and ids[0] == bos


def freeze(x: torch.Tensor) -> torch.Tensor:
    """The freeze hook: the same value, a constant to autograd. Hosts that cannot hook a site
    directly (an nnsight trace has no attention-pattern site) recognise this function."""
    return x.detach()


def is_freeze(fn: HookFn) -> bool:
    """Whether ``fn`` is a freeze hook: :func:`freeze`, or one marked ``is_freeze`` (the frozen
    attention pattern of :mod:`tl_circuits.replacement.frozen_attention`, the same value)."""
    return fn is freeze or bool(getattr(fn, "is_freeze", False))


@contextlib.contextmanager
def no_hooks() -> Iterator[None]:
    """An empty hook context (for hosts that need nothing)."""
    yield
