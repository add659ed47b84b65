"""Tiny random HookedTransformers of three families, random transcoders, a tiny tokenizer."""

from __future__ import annotations

import warnings

import torch

from tl_circuits import Transcoder, TranscoderSet

FAMILIES = ("gpt2", "llama", "gemma2")
ARCHS = ("relu", "relu_skip", "jumprelu", "jumprelu_skip", "topk", "topk_skip")
VOCAB = ["<bos>", "<unk>"] + [f"w{i}" for i in range(46)] + ["Paris", "London"]


def tiny_tokenizer(*, adds_bos: bool = True):
    """A word-level fast tokenizer, built offline, that prepends <bos> (or, with
    ``adds_bos=False``, adds no special token, like SmolLM2's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", 0)]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>")


def tiny_model(family: str, *, dtype=torch.float64, n_layers: int = 3, seed: int = 0,
               biases: bool = True, tokenizer: bool = False):
    """A random HookedTransformer of ``family``; ``biases`` randomises every bias and LN weight."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    common = dict(n_layers=n_layers, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_vocab=len(VOCAB),
                  d_mlp=32, dtype=dtype, seed=seed)
    rotary = dict(normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=4,
                  gated_mlp=True, n_key_value_heads=2)
    cfgs = {
        "gpt2": dict(act_fn="gelu_new", normalization_type="LN"),
        "llama": dict(act_fn="silu", **rotary),
        "gemma2": dict(act_fn="gelu_pytorch_tanh", use_normalization_before_and_after=True,
                       output_logits_soft_cap=30.0, attn_scores_soft_cap=50.0,
                       original_architecture="Gemma2ForCausalLM", **rotary),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer(HookedTransformerConfig(**common, **cfgs[family]))
    if biases:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.split(".")[-1] in ("b", "w", "b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U"):
                    p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    if tokenizer:
        model.tokenizer = tiny_tokenizer()
    model.eval()
    return model


def tiny_transcoder(layer: int, arch: str, *, d_model: int = 16, d_sae: int = 24, seed: int = 0,
                    dtype=torch.float64, hook_in: str = "blocks.{l}.ln2.hook_normalized",
                    b_dec: bool = True) -> Transcoder:
    """A random transcoder whose features fire on roughly a third of inputs."""
    gen = torch.Generator().manual_seed(1000 * seed + layer)

    def rnd(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).to(dtype)

    activation = arch.removesuffix("_skip")
    kw = {}
    if activation == "jumprelu":
        kw["threshold"] = rnd(d_sae, scale=0.1).abs()
    if activation == "topk":
        kw["k"] = 5
    if arch.endswith("_skip"):
        kw["W_skip"] = rnd(d_model, d_model, scale=0.1)
    return Transcoder(
        rnd(d_model, d_sae, scale=d_model**-0.5), rnd(d_sae, scale=0.3) - 0.3,
        rnd(d_sae, d_model, scale=0.5), rnd(d_model, scale=0.2 if b_dec else 0.0),
        hook_name=hook_in.format(l=layer), hook_name_out=f"blocks.{layer}.hook_mlp_out",
        activation=activation, **kw,
    )


def tiny_set(arch: str, layers=(0, 1, 2), **kw) -> TranscoderSet:
    return TranscoderSet([tiny_transcoder(la, arch, **kw) for la in layers])
