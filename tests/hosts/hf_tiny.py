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
#: Families added with issue #17: Gemma-3 (text), OLMo-2, Qwen3-MoE (rows in the site table).
NEW_FAMILIES = ("gemma3_text", "olmo2", "qwen3_moe")
FAMILIES = HF_FAMILIES + NEW_FAMILIES
#: Families with no site-table row: their sites are found automatically (tl_circuits.hosts.discover).
UNLISTED_FAMILIES = ("starcoder2", "phi3", "granite")
HOSTS = ("hooked", "bridge", "bridge_compat", "nnsight")


def _has_hooked_transformer() -> bool:
    """Whether this TransformerLens has HookedTransformer (3.x yes; 4.x removed it)."""
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


HAS_HOOKED = _has_hooked_transformer()
#: Hosts that cannot hold a family, and why (TransformerLens 3.9; 4.x has no HookedTransformer).
CANNOT_HOLD = {
    ("qwen3_moe", "hooked"): "TransformerLens 3.9's HookedTransformer has no Qwen3-MoE "
                             "architecture (convert_hf_model_config knows Mixtral, OLMoE, GPT-OSS)",
}
if not HAS_HOOKED:
    CANNOT_HOLD |= {(f, "hooked"): "TransformerLens 4 removed HookedTransformer"
                    for f in ("llama", "qwen2", "qwen3", "gpt2", "gemma2", "gemma3_text", "olmo2",
                              "qwen3_moe")}
#: Gemma-3 layer types: a local (sliding-window) layer, a global one, a local one.
GEMMA3_LAYER_TYPES = ("sliding_attention", "full_attention", "sliding_attention")
GEMMA3_WINDOW = 3  # shorter than the test prompts (7 tokens)


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
    if family == "gemma3_text":
        return tr.Gemma3TextConfig(
            **{**rotary, "num_hidden_layers": 3}, **{**common, "tie_word_embeddings": True},
            query_pre_attn_scalar=d_model // n_heads, hidden_activation="gelu_pytorch_tanh",
            sliding_window=GEMMA3_WINDOW, layer_types=list(GEMMA3_LAYER_TYPES),
            rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                             "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0}})
    if family == "olmo2":  # TL's OLMo-2 conversion assumes as many KV heads as query heads
        return tr.Olmo2Config(**{**rotary, "num_key_value_heads": n_heads}, **common)
    if family == "qwen3_moe":  # layer 1 dense, layers 0 and 2 mixtures of 4 experts (top 2)
        return tr.Qwen3MoeConfig(**rotary, **common, num_experts=4, num_experts_per_tok=2,
                                 moe_intermediate_size=d_model, decoder_sparse_step=1,
                                 mlp_only_layers=[1], norm_topk_prob=True,
                                 experts_implementation="eager")  # grouped_mm has no float64
    if family == "starcoder2":  # LayerNorms with biases, biased projections, c_fc / c_proj MLP
        return tr.Starcoder2Config(**{k: v for k, v in rotary.items() if k != "rms_norm_eps"},
                                   **common, norm_epsilon=1e-5, use_bias=True)
    if family == "granite":  # embedding, attention, residual and logit multipliers
        return tr.GraniteConfig(**rotary, **common, embedding_multiplier=2.0, attention_multiplier=0.3,
                                residual_multiplier=0.7, logits_scaling=4.0)
    cls = {"llama": tr.LlamaConfig, "qwen2": tr.Qwen2Config, "qwen3": tr.Qwen3Config,
           "phi3": tr.Phi3Config}[family]  # Phi-3: fused qkv_proj and gate_up_proj
    return cls(**rotary, **common)


def gemma3_multimodal(text_model):
    """A ``Gemma3ForConditionalGeneration`` (tiny vision tower) whose text tower is ``text_model``'s."""
    import transformers as tr

    vision = tr.SiglipVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, image_size=8, patch_size=4)
    config = tr.Gemma3Config(text_config=text_model.config.to_dict(), vision_config=vision.to_dict(),
                             mm_tokens_per_image=1, image_token_index=len(VOCAB) - 1,
                             boi_token_index=len(VOCAB) - 2, eoi_token_index=len(VOCAB) - 3)
    config._attn_implementation = "eager"
    dtype = next(text_model.parameters()).dtype
    model = tr.Gemma3ForConditionalGeneration(config).to(dtype).eval()
    model.model.language_model.load_state_dict(text_model.model.state_dict())
    model.lm_head.load_state_dict(text_model.lm_head.state_dict())
    if dtype == torch.float64:
        compute_in_float64(model)
    return model


def hf_model(family: str, *, dtype=torch.float64, seed: int = 0, float64_internals: bool = True, **kw):
    """A random ``*ForCausalLM`` of ``family`` with randomised norm weights and biases.

    In float64, ``float64_internals`` makes its RMSNorms and rotary tables compute in float64 (see
    :func:`compute_in_float64`), as HookedTransformer and our hosts' norms do.
    """
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
    if dtype == torch.float64 and float64_internals:
        compute_in_float64(model)
    return model


def compute_in_float64(model):
    """Make the float32 islands of a float64 HF model compute in float64, in place.

    Hugging Face RMSNorms (``x.to(float32)``) and rotary embeddings (``inv_freq`` and angles in
    float32) compute in float32 even in a float64 model, while HookedTransformer computes both in
    float64; the two *models* then differ by ~1e-7, which would hide a 1e-9 comparison of the hosts.
    So the float64 test models compute these in float64: like is compared with like. (The hosts'
    own norm sites never use HF's norm arithmetic: see ``hf_modules.norm_forward``.)
    """
    import types

    for module in model.modules():
        name = type(module).__name__
        if name.endswith("RMSNorm"):
            one_plus = name.startswith("Gemma")
            module.forward = types.MethodType(_rms_norm_one_plus if one_plus else _rms_norm, module)
        elif name.endswith("RotaryEmbedding"):
            per_type = isinstance(module.config.rope_parameters.get("full_attention"), dict)
            module.forward = types.MethodType(_rotary_per_type if per_type else _rotary, module)
    return model


def _rms_norm(self, x):
    eps = getattr(self, "variance_epsilon", getattr(self, "eps", None))
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rms_norm_one_plus(self, x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight)


def _rotary(self, x, position_ids):
    base, dim = self.config.rope_parameters["rope_theta"], 2 * self.inv_freq.shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = position_ids[..., None].to(torch.float64) * inv_freq
    emb = torch.cat((angles, angles), dim=-1)
    return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


def _rotary_per_type(self, x, position_ids, layer_type):
    """Gemma-3's rotary embedding: one base per layer type (local and global layers)."""
    base = self.config.rope_parameters[layer_type]["rope_theta"]
    dim = 2 * getattr(self, f"{layer_type}_inv_freq").shape[-1]
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = position_ids[..., None].to(torch.float64) * inv_freq
    emb = torch.cat((angles, angles), dim=-1)
    scaling = getattr(self, f"{layer_type}_attention_scaling")
    return (emb.cos() * scaling).to(x.dtype), (emb.sin() * scaling).to(x.dtype)


@contextlib.contextmanager
def float64_softmax():
    """Softmax with ``dtype=torch.float32`` on a float64 input computes in float64 inside.

    HF's eager attention and the TransformerBridge's attention (TL code that mirrors it) take the
    softmax in float32 even in a float64 model; HookedTransformer and our HF hosts' attention take
    it in the model's dtype. The float64 tests compare the hosts, not these float32 islands, so
    they run under this patch. Float32 and lower-precision inputs are untouched.
    """
    original = torch.nn.functional.softmax

    def softmax(input, dim=None, _stacklevel=3, dtype=None):
        if dtype is not None and input.dtype == torch.float64:
            dtype = torch.promote_types(dtype, torch.float64)
        return original(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)

    torch.nn.functional.softmax = softmax
    try:
        yield
    finally:
        torch.nn.functional.softmax = original


def bridge_tokenizer(adds_bos: bool = True, folder=None):
    """The tiny tokenizer, made acceptable to TransformerBridge.boot_transformers offline. The
    Bridge reloads a tokenizer that does not add BOS from its ``name_or_path`` (asking for
    ``add_bos_token=True``), so that one is saved to ``folder`` first."""
    tok = tiny_tokenizer(adds_bos=adds_bos)
    name = "tiny-word-level"
    if not adds_bos:
        tok.save_pretrained(folder)
        name = str(folder)
    tok.init_kwargs.update(name_or_path=name, add_bos_token=adds_bos)
    return tok


def on_host(kind: str, model, tmp_path, *, adds_bos: bool = True):
    """``model`` (a HF model) as the user of host ``kind`` would hold it; its tokenizer prepends
    BOS, or with ``adds_bos=False`` adds none. Kind ``"hf_bare"`` is a plain HF model without a
    tokenizer."""
    dtype = next(model.parameters()).dtype
    quiet = contextlib.redirect_stdout(io.StringIO())
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), quiet:
            warnings.simplefilter("ignore")
            if kind == "hooked":
                return hooked_from_hf(model, tmp_path, adds_bos=adds_bos)
            model = copy.deepcopy(model)  # the Bridge and nnsight wrap the modules in place
            model.config.architectures = [type(model).__name__]  # how the Bridge picks its adapter
            if kind.startswith("bridge"):
                from unittest import mock

                from transformer_lens.model_bridge import TransformerBridge

                # For a multimodal model (Gemma-3's ``gemma3``) the Bridge loads an image
                # processor by name and, when that fails, runs ``pip install torchvision`` into
                # the running environment. A text-only tiny model needs no processor.
                with mock.patch("transformers.AutoProcessor.from_pretrained", return_value=None):
                    bridge = TransformerBridge.boot_transformers(
                        "tiny", hf_model=model, tokenizer=bridge_tokenizer(adds_bos, tmp_path / "tokenizer"),
                        dtype=dtype, device="cpu")
                if kind == "bridge_compat":
                    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
                return bridge
            if kind == "nnsight":
                from nnsight import LanguageModel

                return LanguageModel(model, tokenizer=tiny_tokenizer(adds_bos=adds_bos))
            if kind == "hf":
                from tl_circuits.hosts.hf import HFHost

                return HFHost(model, tiny_tokenizer(adds_bos=adds_bos))
            if kind == "hf_bare":
                from tl_circuits.hosts.hf import HFHost

                return HFHost(model)
    finally:
        logging.disable(logging.NOTSET)
    raise ValueError(kind)


def hooked_from_hf(model, tmp_path, *, adds_bos: bool = True):
    """A HookedTransformer (no weight processing) with ``model``'s weights, via TL's converters.

    Llama / Qwen2 / Qwen3: TL reads the config from a local directory. GPT-2 / Gemma-2 / Gemma-3 /
    OLMo-2: TL 3.9 picks their configs by official model name only, so the config is written here by
    hand and the weights go through TL's own ``convert_gpt2_weights`` / ``convert_gemma_weights`` /
    ``convert_olmo2_weights``.
    """
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    dtype = next(model.parameters()).dtype
    family = model.config.model_type
    if family in HAND_CONFIGS:
        cfg = HookedTransformerConfig(**HAND_CONFIGS[family](model.config), dtype=dtype, device="cpu")
        state = _convert(family, model, cfg)
    else:
        cfg, state = _from_local_config(model, tmp_path, dtype)
    ht = HookedTransformer(cfg, tokenizer=bridge_tokenizer(adds_bos, tmp_path / "tokenizer"))
    # Not ``load_and_process_state_dict``: even with every processing step off, TL 3.9's
    # ``ProcessWeights.process_weights`` casts every non-float32 tensor to float32 and back
    # (meant as an upcast from bf16, it rounds float64 weights and rotary tables to float32).
    ht.load_state_dict(ht.fill_missing_keys(state), strict=False)
    return ht.eval()


def _gpt2_config(c) -> dict:
    return dict(d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head, d_mlp=c.n_inner,
                n_layers=c.n_layer, n_ctx=c.n_positions, eps=c.layer_norm_epsilon, d_vocab=c.vocab_size,
                act_fn=c.activation_function, normalization_type="LN",
                positional_embedding_type="standard", original_architecture="GPT2LMHeadModel")


def _gemma2_config(c) -> dict:
    # As TL's own google/gemma-2-* rows, from our config. Local attention is left off: the test
    # prompts are shorter than the sliding window, where local and global attention coincide.
    return dict(d_model=c.hidden_size, d_head=c.head_dim, n_heads=c.num_attention_heads,
                n_key_value_heads=c.num_key_value_heads, d_mlp=c.intermediate_size,
                n_layers=c.num_hidden_layers, n_ctx=c.max_position_embeddings, eps=c.rms_norm_eps,
                d_vocab=c.vocab_size, act_fn=c.hidden_activation, normalization_type="RMS",
                positional_embedding_type="rotary", rotary_dim=c.head_dim,
                rotary_base=c.rope_parameters.get("rope_theta"), attn_scale=c.query_pre_attn_scalar**0.5,
                attn_scores_soft_cap=c.attn_logit_softcapping, gated_mlp=True, final_rms=True,
                output_logits_soft_cap=c.final_logit_softcapping,
                use_normalization_before_and_after=True, original_architecture="Gemma2ForCausalLM")


def _gemma3_config(c) -> dict:
    # As TL's google/gemma-3-* rows: q/k norms, local (sliding-window) layers with their own
    # rotary base, no soft-caps (Gemma-3 has none).
    cfg = _gemma2_config(c)
    cfg.update(rotary_base=c.rope_parameters["full_attention"]["rope_theta"],
               rotary_base_local=c.rope_parameters["sliding_attention"]["rope_theta"],
               use_qk_norm=True, use_local_attn=True, window_size=c.sliding_window,
               attn_types=["local" if t == "sliding_attention" else "global" for t in c.layer_types],
               attn_scores_soft_cap=c.attn_logit_softcapping or -1.0,
               output_logits_soft_cap=c.final_logit_softcapping or -1.0,
               original_architecture="Gemma3ForCausalLM")
    return cfg


def _olmo2_config(c) -> dict:
    # As TL's allenai/OLMo-2-* rows (post-norm blocks: TL's ln1 / ln2 are after the sublayers).
    return dict(d_model=c.hidden_size, d_head=c.hidden_size // c.num_attention_heads,
                n_heads=c.num_attention_heads, d_mlp=c.intermediate_size, n_layers=c.num_hidden_layers,
                n_ctx=c.max_position_embeddings, eps=c.rms_norm_eps, d_vocab=c.vocab_size,
                act_fn=c.hidden_act, normalization_type="RMS", rotary_base=c.rope_parameters["rope_theta"],
                attn_types=["global"] * c.num_hidden_layers, positional_embedding_type="rotary",
                gated_mlp=True, original_architecture="Olmo2ForCausalLM")


HAND_CONFIGS = {"gpt2": _gpt2_config, "gemma2": _gemma2_config, "gemma3_text": _gemma3_config,
                "olmo2": _olmo2_config}


def _convert(family, model, cfg) -> dict:
    from transformer_lens.pretrained.weight_conversions import (
        convert_gemma_weights,
        convert_gpt2_weights,
        convert_olmo2_weights,
    )

    if family == "gpt2":
        return convert_gpt2_weights(model, cfg)
    if family == "olmo2":
        return convert_olmo2_weights(model, cfg)
    state = convert_gemma_weights(model, cfg)
    # TL forms Gemma's ``1 + w`` norm weights in float32 (``w.float() + 1``) whatever the dtype;
    # in a float64 model that rounds them by ~1e-8. Form them in the model's dtype instead.
    from tl_circuits.hosts.hf_modules import module_at
    from tl_circuits.hosts.sites import ARCH_SITES

    for la, block in enumerate(model.model.layers):
        for tl_name, path in ARCH_SITES[family].block_norms():
            state[f"blocks.{la}.{tl_name}.w"] = 1.0 + module_at(block, path).weight
    state["ln_final.w"] = 1.0 + model.model.norm.weight
    return state


def _from_local_config(model, tmp_path, dtype):
    import tempfile
    from pathlib import Path

    from transformer_lens import HookedTransformerConfig
    from transformer_lens import loading_from_pretrained as loading

    # A neutral directory name: TL picks the architecture by name when it contains "llama".
    path = Path(tempfile.mkdtemp(prefix="cfg", dir=tmp_path))
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    config.save_pretrained(path)
    cfg_dict = loading.convert_hf_model_config(str(path))
    cfg_dict.update(dtype=dtype, device="cpu", n_ctx=model.config.max_position_embeddings)
    cfg = HookedTransformerConfig(**{k: v for k, v in cfg_dict.items()
                                     if k in HookedTransformerConfig.__dataclass_fields__})
    return cfg, loading.get_pretrained_state_dict(str(path), cfg, hf_model=model, dtype=dtype)
