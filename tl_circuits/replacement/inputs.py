"""What every run of the replacement model checks first: the transcoders fit the model, the prompt
is a row of token ids the model can read.

Attribution, interventions and ``check_graph`` all start here, so a wrong set or a bad prompt
fails the same way, with the same message, whichever function the user called.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Int

from ..errors import ConfigError
from ..hosts import as_host
from ..hosts.base import Host
from ..hosts.prompts import EncodedPrompt, PromptLike, encode_prompt
from ..transcoders import Transcoders, as_transcoders
from ..transcoders.hook_vocabulary import check_read_points


def check_compatible(host: Host, transcoders: Transcoders) -> None:
    """Raise ConfigError if the transcoders cannot be spliced into the host's model: a layer the
    model lacks, a site it lacks, widths other than d_model, a read point that is not an MLP input
    (:func:`~tl_circuits.transcoders.hook_vocabulary.check_read_points`), or a write point that is
    not the MLP output."""
    for layer in transcoders.layers:
        if not 0 <= layer < host.n_layers:
            raise ConfigError(
                f"a transcoder is for layer {layer}, but the model has layers 0..{host.n_layers - 1}; "
                "load the transcoders that belong to this model"
            )
    for name in {transcoders.hook_in(la) for la in transcoders.layers} | {
        transcoders.hook_out(la) for la in transcoders.out_layers
    }:
        if not host.has_hook(name):
            raise ConfigError(
                f"the transcoders read or write hook {name!r}, which this model does not have; "
                "check the transcoders' metadata.hook_name / hook_name_out against the model's "
                "hook names (e.g. blocks.0.ln2.hook_normalized, blocks.0.hook_mlp_out)"
            )
    if transcoders.d_in != host.d_model or transcoders.d_out != host.d_model:
        raise ConfigError(
            f"transcoder d_in={transcoders.d_in}, d_out={transcoders.d_out} but the model has "
            f"d_model={host.d_model}; these transcoders were trained for a different model"
        )
    check_read_points(transcoders)
    for layer in transcoders.out_layers:
        if transcoders.hook_out(layer) != host.mlp_out_hook(layer):
            raise ConfigError(
                f"layer {layer}'s transcoder writes {transcoders.hook_out(layer)!r}; tl_circuits "
                f"replaces MLP outputs at {host.mlp_out_hook(layer)!r}: use transcoders whose "
                "hook_name_out is the MLP output"
            )


def prepare(model: Any, transcoders: Any, *, dtype: torch.dtype | str | None = None) -> tuple[Host, Transcoders]:
    """The host of ``model`` and a copy of ``transcoders`` on its device and in its dtype.

    ``model`` is anything :func:`~tl_circuits.hosts.as_host` adapts, ``transcoders`` anything
    :func:`~tl_circuits.transcoders.as_transcoders` accepts. Raises ConfigError when the set does
    not fit the model (:func:`check_compatible`). The user's transcoders are never changed.
    ``dtype`` (see :func:`run_dtype`) other than the model's: the host of a cast copy of the
    model (the user's model is never changed either).
    """
    host = as_host(model)
    found = as_transcoders(transcoders)
    check_compatible(host, found)
    want = run_dtype(dtype)
    if want is not None and want != host.dtype:
        cast = getattr(host, "cast_copy", None)
        if cast is None:
            raise ConfigError(
                f"dtype={dtype!r} needs a cast copy of the model, which a {type(host).__name__} "
                f"cannot make; cast the model yourself (its dtype is {host.dtype}) and leave dtype='model'"
            )
        host = cast(want)
    return host, found.to(device=host.device, dtype=host.dtype)


#: Names ``run_dtype`` reads (what the command line passes).
DTYPE_NAMES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
               "float16": torch.float16}


def run_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """The dtype a run asks for: None for the model's own (``None`` or ``"model"``), else a
    floating torch dtype (given as one or by name: ``"bfloat16"``, ``"float32"``, ...).

    Example:
        >>> run_dtype("bfloat16"), run_dtype("model")
        (torch.bfloat16, None)
    """
    if dtype is None or dtype == "model":
        return None
    if isinstance(dtype, str) and dtype in DTYPE_NAMES:
        return DTYPE_NAMES[dtype]
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    raise ConfigError(f"dtype must be 'model' (the model's own) or a floating dtype "
                      f"({', '.join(DTYPE_NAMES)} or a torch dtype), got {dtype!r}")


def read_prompt(host: Host, prompt: PromptLike, *, prepend_bos: bool = True) -> EncodedPrompt:
    """``prompt`` (a string, chat messages or token ids) encoded by the one tokenization rule
    (:mod:`tl_circuits.hosts.prompts`) and checked: not empty, within the vocabulary and the
    model's context. Raises ConfigError naming the problem otherwise.

    Example:
        >>> read_prompt(as_host(model), "The capital of France is").tokens  # doctest: +SKIP
        tensor([    1,   504,  3575,   282,  4649,   314])
    """
    encoded = encode_prompt(host, prompt, prepend_bos=prepend_bos)
    tokens = encoded.tokens
    if tokens.numel() == 0:
        raise ConfigError("the prompt is empty; give some text, chat messages or token ids")
    if host.n_ctx is not None and tokens.numel() > host.n_ctx:
        raise ConfigError(
            f"the prompt is {tokens.numel()} tokens, longer than the model's context of "
            f"{host.n_ctx}; shorten it"
        )
    d_vocab = host.W_U.shape[1]
    if int(tokens.min()) < 0 or int(tokens.max()) >= d_vocab:
        raise ConfigError(f"token ids must lie in 0..{d_vocab - 1} (the vocabulary)")
    return encoded


def prompt_tokens(
    host: Host, prompt: PromptLike, *, prepend_bos: bool = True
) -> tuple[Int[torch.Tensor, " pos"], str | None]:
    """``(token ids, prompt text)`` of ``prompt`` (:func:`read_prompt`; text None for token ids)."""
    encoded = read_prompt(host, prompt, prepend_bos=prepend_bos)
    return encoded.tokens, encoded.text
