"""Where a host's attention keeps its queries, keys, values and mixed values, and its score scale.

Every host names these sites with TransformerLens hook names, in TL's ``[batch, pos, head, d_head]``
layout (keys and values with one head per KV head under grouped-query attention):
- ``HookedTransformer``: ``attn.hook_rot_q`` / ``hook_rot_k`` (after q/k norms and rotary) where
  the model rotates, else ``attn.hook_q`` / ``hook_k``; ``attn.hook_v``, ``attn.hook_z``; the
  scale is the block's ``1 / attn_scale``, the soft-cap ``cfg.attn_scores_soft_cap`` (if > 0);
- plain Hugging Face and local nnsight models: the same names, placed in tl_circuits' eager
  attention function (:mod:`tl_circuits.hosts.hf_modules`), which also records the scale and
  soft-cap transformers called it with.
The pre-softmax score of head ``h`` from query position ``q`` to key position ``k`` is then
``scale * <q_vec[q, h], k_vec[k, kv(h)]>``, soft-capped as ``cap * tanh(score / cap)`` when the
model caps; ``kv(h) = h // (n_heads / n_kv_heads)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..hosts.base import Host


@dataclass(frozen=True)
class AttentionSites:
    """The attention sites of one host, and how to read each layer's score scale and soft-cap."""

    host: Host
    n_heads: int
    rotary_names: bool  #: ``hook_rot_q`` / ``hook_rot_k`` (else ``hook_q`` / ``hook_k``)

    def q(self, layer: int) -> str:
        return f"blocks.{layer}.attn.hook_{'rot_q' if self.rotary_names else 'q'}"

    def k(self, layer: int) -> str:
        return f"blocks.{layer}.attn.hook_{'rot_k' if self.rotary_names else 'k'}"

    def v(self, layer: int) -> str:
        return f"blocks.{layer}.attn.hook_v"

    def z(self, layer: int) -> str:
        return f"blocks.{layer}.attn.hook_z"

    def pattern(self, layer: int) -> str:
        return f"blocks.{layer}.attn.hook_pattern"

    def pos_embed(self) -> str | None:
        """The site of learned position embeddings (GPT-2), or None when the model has none."""
        return "hook_pos_embed" if self.host.has_hook("hook_pos_embed") else None

    def scaling(self, layer: int) -> tuple[float, float | None]:
        """``(scale, soft-cap or None)`` of layer ``layer``'s scores (read after a forward pass)."""
        model = getattr(self.host, "model", None)
        if model is not None and hasattr(model, "cfg"):  # HookedTransformer
            cap = float(getattr(model.cfg, "attn_scores_soft_cap", -1.0) or -1.0)
            return 1.0 / float(model.blocks[layer].attn.attn_scale), (cap if cap > 0 else None)
        from ..hosts.hf_modules import ATTN_SCALING, module_at

        sites = self.host.sites  # type: ignore[attr-defined]
        attn = module_at(sites.layers[layer], sites.sites.attn)
        if id(attn) not in ATTN_SCALING:
            raise ConfigError(f"layer {layer}'s attention did not run through tl_circuits' eager "
                              "attention, so its score scale is unknown")
        return ATTN_SCALING[id(attn)]


def attention_sites(host: Host) -> AttentionSites:
    """The attention sites of ``host``; ConfigError for a host whose attention tl_circuits cannot
    read (a TransformerBridge, a remote nnsight trace, a custom host)."""
    kind = type(host).__name__
    if kind == "HookedTransformerHost":
        model: Any = host.model  # type: ignore[attr-defined]
        rotary = host.has_hook("blocks.0.attn.hook_rot_q")
        return AttentionSites(host, int(model.cfg.n_heads), rotary)
    if kind in ("HFHost", "NNsightHost"):
        cfg = host.sites.config  # type: ignore[attr-defined]
        n_heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None)
        if n_heads is None:
            raise ConfigError(f"cannot find the number of attention heads in {type(cfg).__name__}")
        return AttentionSites(host, int(n_heads), True)
    raise ConfigError(
        f"explaining attention needs the queries, keys and values of the model; tl_circuits reads "
        f"them on HookedTransformer, Hugging Face and local nnsight models, not through a {kind}. "
        "Pass the Hugging Face model itself (for a TransformerBridge: bridge.original_model)"
    )
