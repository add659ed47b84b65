"""Tiny random Hugging Face causal LMs of each family, and the same model on every host, offline."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings

import torch

from tests.core.tiny import VOCAB, tiny_tokenizer

HF_FAMILIES = ("llama", "qwen2", "qwen3", "gpt2", "gemma2")
HOSTS = ("hooked", "bridge", "bridge_compat", "nnsight")


def hf_config(family: str, *, n_layers: int = 3, d_model: int = 16, n_heads: int = 4, n_ctx: int = 32):
    """A transformers config of ``family`` with tiny sizes (eager attention)."""
    import transformers as tr

    common = dict(vocab_size=len(VOCAB), bos_token_id=0, eos_token_id=1, pad_token_id=1,
                  attn_implementation="eager", tie_word_embeddings=False)
    d_mlp = 2 * d_model
    rotary = dict(hidden_size=d_model, intermediate_size=d_mlp, num_hidden_layers=n_layers,
                  num_attention_heads=n_heads, num_key_value_heads=n_heads // 2,
                  head_dim=d_model // n_heads, max_position_embeddings=n_ctx, rms_norm_eps=1e-6)
    if family == "gpt2":
        return tr.GPT2Config(n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_positions=n_ctx,
                             n_inner=d_mlp, activation_function="gelu_new", **common)
    if family == "gemma2":
        return tr.Gemma2Config(**rotary, **{**common, "tie_word_embeddings": True},
                               query_pre_attn_scalar=d_model // n_heads, sliding_window=n_ctx,
                               final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
                               hidden_activation="gelu_pytorch_tanh")
    cls = {"llama": tr.LlamaConfig, "qwen2": tr.Qwen2Config, "qwen3": tr.Qwen3Config}[family]
    extra = {}
    return cls(**rotary, **common, **extra)


def hf_model(family: str, *, dtype=torch.float64, seed: int = 0, **kw):
    """A random ``*ForCausalLM`` of ``family`` with randomised norm weights and biases."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(family, **kw)).to(dtype).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or ".ln_" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            elif name.endswith("weight"):
                p.normal_(0.0, 0.2, generator=gen)
    return model


def bridge_tokenizer():
    """The tiny tokenizer, made acceptable to TransformerBridge.boot_transformers offline."""
    tok = tiny_tokenizer()
    tok.init_kwargs.update(name_or_path="tiny-word-level", add_bos_token=True)
    return tok


def on_host(kind: str, model, tmp_path):
    """``model`` (a HF model) as the user of host ``kind`` would hold it."""
    dtype = next(model.parameters()).dtype
    quiet = contextlib.redirect_stdout(io.StringIO())
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), quiet:
            warnings.simplefilter("ignore")
            if kind == "hooked":
                return hooked_from_hf(model, tmp_path)
            model = copy.deepcopy(model)  # the Bridge and nnsight wrap the modules in place
            if kind.startswith("bridge"):
                from transformer_lens.model_bridge import TransformerBridge

                bridge = TransformerBridge.boot_transformers(
                    "tiny", hf_model=model, tokenizer=bridge_tokenizer(), dtype=dtype, device="cpu")
                if kind == "bridge_compat":
                    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
                return bridge
            if kind == "bridge_processed":
                raise AssertionError
            if kind == "nnsight":
                from nnsight import LanguageModel

                return LanguageModel(model, tokenizer=tiny_tokenizer())
            if kind == "hf":
                from tl_circuits.hosts.nnsight_host import HFHost

                return HFHost(model, tiny_tokenizer())
    finally:
        logging.disable(logging.NOTSET)
    raise ValueError(kind)


def hooked_from_hf(model, tmp_path):
    """A HookedTransformer (no weight processing) with ``model``'s weights, via TL's converters."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens import loading_from_pretrained as loading

    import tempfile
    from pathlib import Path

    # A neutral directory name: TL picks the architecture by name when it contains "llama".
    path = Path(tempfile.mkdtemp(prefix="cfg", dir=tmp_path))
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    config.save_pretrained(path)
    cfg_dict = loading.convert_hf_model_config(str(path))
    cfg_dict.update(dtype=next(model.parameters()).dtype, device="cpu",
                    n_ctx=getattr(model.config, "max_position_embeddings", None) or model.config.n_positions)
    cfg = HookedTransformerConfig(**{k: v for k, v in cfg_dict.items()
                                     if k in HookedTransformerConfig.__dataclass_fields__})
    state = loading.get_pretrained_state_dict(str(path), cfg, hf_model=model, dtype=cfg.dtype)
    ht = HookedTransformer(cfg, tokenizer=bridge_tokenizer())
    ht.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False,
                                   center_unembed=False, fold_value_biases=False)
    return ht.eval()
