"""Per-architecture module paths of Hugging Face causal LMs, as data: which module is which site.

One row per ``config.model_type``. A path is relative to the model (``layers``, ``final_norm``,
``lm_head``) or to one decoder layer (every other field; ``qk`` and ``qk_norms`` to the attention
module). ``None`` means the architecture has no such module. To support a new architecture, add
a row here (and, if its norm computes something new, a kind in ``hf_modules.NORM_KINDS``); no
other code changes. A model whose type has no row gets its row proposed from its module tree by
:mod:`.discover` and checked numerically by :mod:`.checks`; a row here always wins.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ConfigError


@dataclass(frozen=True)
class ArchSites:
    """Where the TransformerLens sites live in one Hugging Face architecture.

    Norms are given by position in the block: before / after attention, before / after the
    MLP. TransformerLens names them ``ln1``, ``ln1_post``, ``ln2``, ``ln2_post``, except in a
    block with norms only after its sublayers (OLMo-2), whose post-norms TL calls ``ln1`` and
    ``ln2`` (:meth:`block_norms` applies that rule).
    """

    layers: str  #: the ModuleList of decoder layers
    final_norm: str  #: TL ``ln_final``
    lm_head: str  #: the unembedding (its input is TL ``unembed.hook_in``)
    ln1: str | None  #: norm before attention; None in a post-norm-only block (OLMo-2)
    ln2: str | None  #: norm before the MLP; None in a post-norm-only block
    attn: str  #: the attention module (its softmax weights are TL ``attn.hook_pattern``)
    mlp: str  #: the MLP, or the whole mixture-of-experts block, router included (TL ``mlp``)
    norm: str  #: how every norm computes: a key of ``hf_modules.NORM_KINDS``
    ln1_post: str | None = None  #: norm after attention, before the residual add (Gemma, OLMo-2)
    ln2_post: str | None = None  #: norm after the MLP; its output is ``hook_mlp_out``
    #: query and key projections, relative to ``attn``: an nnsight trace freezes the pattern by
    #: holding them (the pattern is a function of queries and keys only). One path means a fused
    #: projection whose output is queries, keys and values in equal thirds (GPT-2 ``c_attn``);
    #: none means a remote (traced) run cannot freeze this architecture's pattern.
    qk: tuple[str, ...] = ("q_proj", "k_proj")
    #: norms on the queries and on the keys, relative to ``attn`` (Qwen3, Gemma-3, OLMo-2): TL
    #: ``attn.q_norm`` / ``attn.k_norm``; their scales are freeze sites like every norm's.
    qk_norms: tuple[str, str] | None = None
    #: learned position embeddings (GPT-2 ``wpe``), relative to the model: TL ``hook_pos_embed``,
    #: which :mod:`tl_circuits.attention` reads to name the positional part of a score.
    pos_embed: str | None = None

    def block_norms(self) -> list[tuple[str, str]]:
        """``(TL name, path from the decoder layer)`` of every norm of a block, in execution order."""
        post_only = self.ln1 is None and self.ln2 is None
        named = [("ln1", self.ln1)]
        if self.qk_norms is not None:
            named += [("attn.q_norm", f"{self.attn}.{self.qk_norms[0]}"),
                      ("attn.k_norm", f"{self.attn}.{self.qk_norms[1]}")]
        named += [("ln1" if post_only else "ln1_post", self.ln1_post), ("ln2", self.ln2),
                  ("ln2" if post_only else "ln2_post", self.ln2_post)]
        return [(tl, path) for tl, path in named if path is not None]

    @property
    def resid_mid_module(self) -> str:
        """The first module to read ``hook_resid_mid`` (the residual after attention)."""
        return self.ln2 or self.mlp

    @property
    def mlp_out_module(self) -> str:
        """The module whose output is ``hook_mlp_out`` (what the MLP adds to the residual)."""
        return self.ln2_post or self.mlp


_LLAMA_LIKE = ArchSites(
    layers="model.layers", final_norm="model.norm", lm_head="lm_head",
    ln1="input_layernorm", ln2="post_attention_layernorm", attn="self_attn", mlp="mlp",
    norm="rms",
)
_QK_NORMS = ("q_norm", "k_norm")
_GEMMA = replace(
    _LLAMA_LIKE, ln2="pre_feedforward_layernorm", norm="rms_one_plus",
    ln1_post="post_attention_layernorm", ln2_post="post_feedforward_layernorm",
)
_GEMMA3 = replace(_GEMMA, qk_norms=_QK_NORMS)

#: ``config.model_type`` -> module paths. Add a row to support (or pin) an architecture.
ARCH_SITES: dict[str, ArchSites] = {
    "llama": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": replace(_LLAMA_LIKE, qk_norms=_QK_NORMS),
    #: the MLP site is the whole sparse-MoE block, router included
    "qwen3_moe": replace(_LLAMA_LIKE, qk_norms=_QK_NORMS),
    "mistral": _LLAMA_LIKE,
    "gpt2": ArchSites(
        layers="transformer.h", final_norm="transformer.ln_f", lm_head="lm_head",
        ln1="ln_1", ln2="ln_2", attn="attn", mlp="mlp", norm="ln", qk=("c_attn",),
        pos_embed="transformer.wpe",
    ),
    "gemma2": _GEMMA,
    "gemma3_text": _GEMMA3,
    #: the text tower of the multimodal Gemma-3 (``Gemma3ForConditionalGeneration``)
    "gemma3": replace(_GEMMA3, layers="model.language_model.layers",
                      final_norm="model.language_model.norm"),
    #: norms only after the sublayers; q/k norms over the whole projection
    "olmo2": replace(_LLAMA_LIKE, ln1=None, ln2=None, ln1_post="post_attention_layernorm",
                     ln2_post="post_feedforward_layernorm", qk_norms=_QK_NORMS),
}


def arch_sites(model_type: str) -> ArchSites:
    """The row of :data:`ARCH_SITES` for ``model_type``; ConfigError naming the supported ones."""
    try:
        return ARCH_SITES[model_type]
    except KeyError:
        raise ConfigError(
            f"tl_circuits has no site table for Hugging Face architecture {model_type!r}; "
            f"supported: {', '.join(sorted(ARCH_SITES))}. To add one, put a row in "
            "tl_circuits/hosts/sites.py ARCH_SITES giving the module paths of its decoder "
            "layers, norms, attention, MLP, final norm and lm_head"
        ) from None
