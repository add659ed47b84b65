"""Per-architecture module paths of Hugging Face causal LMs, as data: which module is which site.

One row per ``config.model_type``. A path is relative to the model (``layers``, ``final_norm``,
``lm_head``) or to one decoder layer (every other field). ``None`` means the architecture has
no such module. To support a new architecture, add a row here (and, if its norm computes
something new, a ``norm`` kind in ``hf_modules.NORM_KINDS``); no other code changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class ArchSites:
    """Where the TransformerLens sites live in one Hugging Face architecture."""

    layers: str  #: the ModuleList of decoder layers
    final_norm: str  #: TL ``ln_final``
    lm_head: str  #: the unembedding (its input is TL ``unembed.hook_in``)
    ln1: str  #: norm before attention (TL ``blocks.{l}.ln1``)
    ln2: str  #: norm before the MLP (TL ``blocks.{l}.ln2``)
    attn: str  #: the attention module (its softmax weights are TL ``attn.hook_pattern``)
    mlp: str  #: the MLP (input = TL ``mlp.hook_in``)
    norm: str  #: how the norms compute: "rms" (x/s*w), "rms_one_plus" (x/s*(1+w)), "ln"
    ln1_post: str | None = None  #: norm after attention, before the residual add (Gemma-2)
    ln2_post: str | None = None  #: norm after the MLP (Gemma-2); its output is ``hook_mlp_out``
    #: query and key projections, relative to ``attn``: an nnsight trace freezes the pattern by
    #: holding them (the pattern is a function of queries and keys only). One path means a fused
    #: projection whose output is queries, keys and values in equal thirds (GPT-2 ``c_attn``).
    qk: tuple[str, ...] = ("q_proj", "k_proj")


_LLAMA_LIKE = ArchSites(
    layers="model.layers", final_norm="model.norm", lm_head="lm_head",
    ln1="input_layernorm", ln2="post_attention_layernorm", attn="self_attn", mlp="mlp",
    norm="rms",
)

#: ``config.model_type`` -> module paths. Add a row to support a new architecture.
ARCH_SITES: dict[str, ArchSites] = {
    "llama": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "gpt2": ArchSites(
        layers="transformer.h", final_norm="transformer.ln_f", lm_head="lm_head",
        ln1="ln_1", ln2="ln_2", attn="attn", mlp="mlp", norm="ln", qk=("c_attn",),
    ),
    "gemma2": ArchSites(
        layers="model.layers", final_norm="model.norm", lm_head="lm_head",
        ln1="input_layernorm", ln2="pre_feedforward_layernorm", attn="self_attn", mlp="mlp",
        norm="rms_one_plus", ln1_post="post_attention_layernorm",
        ln2_post="post_feedforward_layernorm",
    ),
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
