"""What training and evaluation both read from a model, on any host: its tokenizer, the BOS rule,
its name, and the MLP inputs and outputs at the transcoder sites.

A context is ``[BOS] + ctx_len - 1`` tokens when the model's tokenizer puts BOS in front of a
text itself, else ``ctx_len`` tokens. Activations at the BOS position are outliers, so they are
left out (``skip_first``) of training and of the metrics.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int

from tl_circuits.errors import ConfigError
from tl_circuits.hosts import as_host
from tl_circuits.hosts.base import Host, tokenizer_adds_bos
from tl_circuits.replacement import activations_at


def tokenizer_of(host: Host) -> Any:
    """The host's Hugging Face tokenizer; ConfigError when it has none."""
    tokenizer = getattr(host, "tokenizer", None)
    if tokenizer is None:
        raise ConfigError(
            "the model has no tokenizer; training needs one to encode the texts. Attach the "
            "Hugging Face tokenizer to the model (e.g. HookedTransformer.set_tokenizer, "
            "LanguageModel(model, tokenizer=...)), or pass token contexts to evaluate_transcoders."
        )
    return tokenizer


def bos_to_prepend(model: Any) -> int | None:
    """The BOS id each context starts with (see the module docstring), or None.

    ``model`` is any model :func:`~tl_circuits.hosts.as_host` adapts, or a host.
    """
    tokenizer = tokenizer_of(as_host(model))
    return tokenizer.bos_token_id if tokenizer_adds_bos(tokenizer) else None


def model_name(model: Any) -> str:
    """A name for the training settings: TransformerLens' ``cfg.model_name``, else the Hugging Face
    ``config._name_or_path`` (the folder a model was loaded from), else ``""``."""
    name = getattr(getattr(model, "cfg", None), "model_name", None)
    if name is None:
        hf_model = getattr(model, "hf_model", model)  # an HFHost holds the HF model
        name = getattr(getattr(hf_model, "config", None), "_name_or_path", None)
    return "" if name is None else str(name)


def layer_activations(
    host: Host, tokens: Int[torch.Tensor, "batch pos"], hooks_in: list[str], hooks_out: list[str],
    *, skip_first: bool = False,
) -> tuple[Float[torch.Tensor, "n_in n d_in"], Float[torch.Tensor, "n_out n d_out"]]:
    """MLP inputs at ``hooks_in`` and outputs at ``hooks_out``, each ``[len(hooks), batch * pos, d]``
    in float32 (``pos`` without the first position when ``skip_first``), from one forward pass
    stopped after the last of these sites (:func:`tl_circuits.replacement.activations_at`)."""
    values = activations_at(host, tokens, hooks_in + hooks_out)

    def stacked(names: list[str]) -> torch.Tensor:
        parts = [values[n][:, 1:] if skip_first else values[n] for n in names]
        return torch.stack([p.reshape(-1, p.shape[-1]) for p in parts]).float()

    return stacked(hooks_in), stacked(hooks_out)
