"""Site names across vocabularies, mapped to the TransformerLens names every host exposes, and the
check that a set reads MLP inputs and writes MLP outputs of a given model.

Releases name where their transcoders read and write in several vocabularies:

- TransformerLens ``HookedTransformer``: ``blocks.5.ln2.hook_normalized`` (``x / rms(x)``, before
  the norm's weight), ``blocks.5.mlp.hook_in`` (the MLP's input: the norm's output, weight
  included), ``blocks.5.hook_resid_mid`` (the residual before the norm), ``blocks.5.hook_mlp_out``;
  ``hook_mlp_in`` is TransformerLens' copy of ``resid_mid`` taken before the norm;
- TransformerBridge: ``ln2.hook_in`` (= resid_mid), ``ln2.hook_out`` (= the MLP input),
  ``mlp.hook_out`` (= hook_mlp_out, except on Gemma where the post-MLP norm follows it);
- circuit-tracer ``config.yaml``: a suffix (``feature_input_hook: hook_resid_mid``,
  ``ln2.hook_normalized``, ``mlp.hook_in``; ``feature_output_hook: hook_mlp_out`` or
  ``mlp.hook_out``) that applies to every layer;
- Hugging Face module paths (GemmaScope 2 ``config.json``, sae_lens ``hf_hook_name``):
  ``model.layers.5.pre_feedforward_layernorm.output`` (the MLP input on Gemma),
  ``model.layers.5.post_attention_layernorm.input`` (resid_mid on Llama-like models),
  nnsight forms such as ``model.layers[5].mlp`` and ``...pre_feedforward_layernorm.source.self__norm_0``.

:func:`canonical_hook` turns any of these into one of the canonical names below;
:func:`check_read_points` refuses a set whose read point is not an MLP input;
:func:`tl_circuits.replacement.check_compatible` uses it with the checks against the model the
set is about to be spliced into (layers, widths, sites, write points at the MLP output).
"""

from __future__ import annotations

import re
from typing import Any

from tl_circuits.errors import ConfigError

#: Canonical read points (suffixes after ``blocks.{l}.``): the inputs of layer l's MLP.
MLP_INPUTS = ("ln2.hook_normalized", "mlp.hook_in", "hook_resid_mid")
#: Canonical write point: what layer l's MLP adds to the residual stream.
MLP_OUTPUT = "hook_mlp_out"

#: TransformerLens / TransformerBridge / circuit-tracer suffixes -> canonical suffix.
SUFFIXES: dict[str, str] = {
    "ln2.hook_normalized": "ln2.hook_normalized",
    "mlp.hook_in": "mlp.hook_in",
    "ln2.hook_out": "mlp.hook_in",
    "hook_resid_mid": "hook_resid_mid",
    "ln2.hook_in": "hook_resid_mid",
    "hook_mlp_in": "hook_resid_mid",
    "hook_mlp_out": "hook_mlp_out",
    "mlp.hook_out": "hook_mlp_out",
    "ln2_post.hook_out": "hook_mlp_out",
}

#: Roles of the Hugging Face modules of one decoder layer, per family: ``ln2`` is the norm before
#: the MLP, ``mlp`` the MLP, ``ln2_post`` the norm after it (Gemma), ``ln1_post`` the norm after
#: attention (Gemma; not an MLP site). Keys are module names relative to the decoder layer.
HF_BLOCK_ROLES: dict[str, dict[str, str]] = {
    "llama": {"post_attention_layernorm": "ln2", "mlp": "mlp"},
    "gemma": {"pre_feedforward_layernorm": "ln2", "mlp": "mlp", "post_feedforward_layernorm":
              "ln2_post", "post_attention_layernorm": "ln1_post"},
    "gpt2": {"ln_2": "ln2", "mlp": "mlp"},
}
#: ``config.model_type`` -> family of :data:`HF_BLOCK_ROLES` (unknown types read as "llama").
MODEL_TYPE_FAMILY: dict[str, str] = {
    "gemma2": "gemma", "gemma3": "gemma", "gemma3_text": "gemma", "gpt2": "gpt2",
}
#: Module names that only one family uses, so a path names its family without a model_type.
_UNAMBIGUOUS = {"pre_feedforward_layernorm": "gemma", "post_feedforward_layernorm": "gemma",
                "ln_2": "gpt2"}

# <prefix>(layers|h).<layer>.<module path>[.source.<op>][.input|.output]; brackets allowed.
_HF_PATH = re.compile(
    r"^(?:model\.|transformer\.|language_model\.|model\.language_model\.|language_model\.model\.)?"
    r"(?:layers|h)\.(?P<layer>\d+|\{layer\})\.(?P<module>[A-Za-z_0-9]+)"
    r"(?P<source>\.source\.self__norm_0)?(?:\.(?P<end>input|output))?$"
)
_SUFFIX = re.compile(r"^(?:[A-Za-z_0-9]+\.)*hook_[A-Za-z_0-9]+$")
_TL_NAME = re.compile(r"^blocks\.(?P<layer>\d+|\{layer\})\.(?P<suffix>.+)$")


def canonical_hook(name: str, layer: int | None = None, *, model_type: str | None = None) -> str:
    """The TransformerLens name (``blocks.{l}.<site>``) of a read or write point named ``name``.

    Args:
        name: a full TransformerLens / TransformerBridge name, a suffix as in circuit-tracer
            configs (then ``layer`` is needed), or a Hugging Face / nnsight module path, with
            ``.input`` / ``.output`` (a bare module path means its input).
        layer: the layer, for suffixes and ``{layer}`` templates; checked against ``name`` when
            it holds one.
        model_type: the Hugging Face ``config.model_type`` of the host when known (``gemma2``...):
            it decides what an ambiguous module name is (``post_attention_layernorm`` is the norm
            before the MLP on Llama, the norm after attention on Gemma).

    Names of other TransformerLens sites (``blocks.3.hook_resid_pre``) come back unchanged, for
    :func:`tl_circuits.replacement.check_compatible` to refuse with the model at hand; unreadable
    names are a ConfigError.

    Example:
        >>> canonical_hook("hook_resid_mid", 3)
        'blocks.3.hook_resid_mid'
        >>> canonical_hook("model.layers.5.pre_feedforward_layernorm.output")
        'blocks.5.mlp.hook_in'
        >>> canonical_hook("model.layers[2].mlp", model_type="qwen3")
        'blocks.2.mlp.hook_in'
        >>> canonical_hook("blocks.4.mlp.hook_out")
        'blocks.4.hook_mlp_out'
    """
    text = name.strip().replace("[", ".").replace("]", "")
    family = MODEL_TYPE_FAMILY.get(model_type or "", "llama")
    tl = _TL_NAME.match(text)
    if tl is not None:
        la = _layer(tl.group("layer"), layer, name)
        return f"blocks.{la}.{_suffix(tl.group('suffix'), family, name)}"
    hf = _HF_PATH.match(text)
    if hf is not None:
        la = _layer(hf.group("layer"), layer, name)
        return f"blocks.{la}.{_hf_site(hf, family if model_type else None, name)}"
    if _SUFFIX.match(text):
        if layer is None:
            raise ConfigError(
                f"hook {name!r} is a per-layer suffix; give the layer (e.g. "
                f"canonical_hook({name!r}, 3) -> 'blocks.3.{name}')."
            )
        return f"blocks.{layer}.{_suffix(text, family, name)}"
    raise ConfigError(
        f"cannot read the hook name {name!r}: expected a TransformerLens name "
        "('blocks.3.ln2.hook_normalized', 'blocks.3.hook_mlp_out'), a suffix ('hook_resid_mid', "
        "'mlp.hook_in') or a Hugging Face module path ('model.layers.3.mlp', "
        "'model.layers.3.pre_feedforward_layernorm.output')."
    )


def _layer(found: str, given: int | None, name: str) -> int:
    if found == "{layer}":
        if given is None:
            raise ConfigError(f"hook {name!r} is a template; give the layer to fill in.")
        return given
    if given is not None and int(found) != given:
        raise ConfigError(f"hook {name!r} names layer {found}, but it was given for layer {given}.")
    return int(found)


def _suffix(suffix: str, family: str, name: str) -> str:
    if suffix == "mlp.hook_out" and family == "gemma":
        raise ConfigError(
            f"{name!r} on a Gemma model is the MLP's output before its post-feedforward norm; "
            "tl_circuits replaces hook_mlp_out, the output after that norm (Gemma transcoders "
            "write post_feedforward_layernorm.output). Use a release that writes hook_mlp_out."
        )
    return SUFFIXES.get(suffix, suffix)


def _hf_site(match: re.Match[str], family: str | None, name: str) -> str:
    module, end = match.group("module"), match.group("end") or "input"
    family = family or _UNAMBIGUOUS.get(module, "llama")
    role = HF_BLOCK_ROLES[family].get(module)
    if match.group("source"):
        if role == "ln2" and end == "output":
            return "ln2.hook_normalized"
        role = None
    sites = {("ln2", "input"): "hook_resid_mid", ("ln2", "output"): "mlp.hook_in",
             ("mlp", "input"): "mlp.hook_in", ("ln2_post", "output"): "hook_mlp_out"}
    if family != "gemma":
        sites[("mlp", "output")] = "hook_mlp_out"
    site = sites.get((role or "", end)) if role else None
    if site is None:
        raise ConfigError(
            f"{name!r} is not an MLP input or output tl_circuits can splice at ({family} "
            "family): read points are the pre-MLP norm's input or output or the MLP's input "
            "(e.g. model.layers.3.post_attention_layernorm.output on Llama, "
            "model.layers.3.pre_feedforward_layernorm.output on Gemma); write points are the MLP "
            "output (model.layers.3.mlp.output, or post_feedforward_layernorm.output on Gemma)."
        )
    return site


def split_hook(name: str) -> tuple[int, str]:
    """``"blocks.3.mlp.hook_in"`` -> ``(3, "mlp.hook_in")``; a ConfigError for other names."""
    match = _TL_NAME.match(name)
    if match is None or not match.group("layer").isdigit():
        raise ConfigError(f"{name!r} is not a TransformerLens block hook name ('blocks.3.hook_mlp_out').")
    return int(match.group("layer")), match.group("suffix")


def check_read_points(transcoders: Any) -> None:
    """Raise a ConfigError unless every layer of ``transcoders`` reads an MLP input of its own
    layer: ``blocks.{l}.ln2.hook_normalized`` or ``blocks.{l}.mlp.hook_in`` (the normalised
    residual before the MLP) or ``blocks.{l}.hook_resid_mid`` (the raw residual, for releases
    trained there, such as circuit-tracer CLTs). ``replacement.check_compatible`` calls it with
    the rest of the checks against a model.
    """
    for layer in transcoders.layers:
        name = transcoders.hook_in(layer)
        found, suffix = split_hook(name)
        if found != layer or suffix not in MLP_INPUTS:
            raise ConfigError(
                f"layer {layer}'s transcoder reads {name!r}, which is not an MLP input of layer "
                f"{layer}; tl_circuits splices transcoders that read "
                f"{', '.join(f'blocks.{layer}.{s}' for s in MLP_INPUTS)}. Check the release's "
                "feature_input_hook / hook_name."
            )
