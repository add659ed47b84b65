"""TransformerLens sites on a plain Hugging Face causal LM, by PyTorch module hooks only.

Given the architecture's row of :mod:`.sites`, each TL site is one of:
- a norm's ``hook_scale`` / ``hook_normalized`` (block norms, q/k norms, final norm): a forward
  hook on the norm recomputes its output from its input as ``normalized = x / scale``,
  ``out = normalized * w (+ b)`` (the row's kind in :data:`NORM_KINDS`), with both hooks in the
  path, in the model's dtype (HF upcasts to float32 only; in a float64 model we do not); the
  TransformerBridge host uses the same code (:func:`norm_forward`);
- ``attn.hook_pattern``: a registered attention function (transformers' ``AttentionInterface``)
  computes eager attention with the softmax weights passed through the hook; the mask is the one
  transformers builds for the layer (causal, or sliding-window on Gemma's local layers); the same
  function passes the queries and keys as the scores use them (after q/k norms and rotary,
  ``attn.hook_rot_q`` / ``attn.hook_rot_k``), the values (``attn.hook_v``, one per KV head) and
  the mixed values before the output projection (``attn.hook_z``) through their hooks, in TL's
  ``[batch, pos, head, d_head]`` layout, and records the score scale and soft-cap it was called
  with (:data:`ATTN_SCALING`, for :mod:`tl_circuits.attention`);
- residual and MLP sites: forward (pre-)hooks on decoder layers, norms, MLPs and ``lm_head``.
Hooks are removed and the attention implementation restored on exit, even on exceptions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from .base import HookFn
from .sites import ArchSites, arch_sites

_ATTN_NAME = "tl_circuits_eager"
#: id(attention module) -> hook on its pattern, while a hook context is active.
_PATTERN_HOOKS: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}
#: id(attention module) -> {"rot_q" | "rot_k" | "v" | "z": hook}, while a hook context is active.
_QKVZ_HOOKS: dict[int, dict[str, Callable[[torch.Tensor], torch.Tensor]]] = {}
#: id(attention module) -> (score scale, soft-cap or None) of its last call under our attention.
ATTN_SCALING: dict[int, tuple[float, float | None]] = {}
_QKVZ = ("rot_q", "rot_k", "v", "z")


def _through(hooks: dict[str, Callable[[torch.Tensor], torch.Tensor]], name: str,
             x: torch.Tensor) -> torch.Tensor:
    """``x`` ([batch, head, pos, d]) through hook ``name`` in TL's [batch, pos, head, d] layout."""
    fn = hooks.get(name)
    return x if fn is None else fn(x.transpose(1, 2)).transpose(1, 2)


def module_at(root: Any, path: str) -> Any:
    """The submodule of ``root`` at dotted ``path`` (digits index lists); also walks nnsight envoys."""
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def _eager_with_pattern_hook(module: Any, query: torch.Tensor, key: torch.Tensor,
                             value: torch.Tensor, attention_mask: torch.Tensor | None,
                             scaling: float | None = None, dropout: float = 0.0,
                             softcap: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention (grouped KV heads, soft-cap, additive or boolean mask) whose softmax
    weights ``[batch, head, query_pos, key_pos]`` go through the module's pattern hook. A
    sliding window comes in the mask. Attention sinks (GPT-OSS ``s_aux``) are refused."""
    if kwargs.get("s_aux") is not None:
        raise ConfigError(
            f"{type(module).__qualname__} uses attention sinks (s_aux), which tl_circuits' eager "
            "attention does not compute; this architecture is not supported yet"
        )
    qkvz = _QKVZ_HOOKS.get(id(module), {})
    query, key, value = (_through(qkvz, n, x) for n, x in zip(_QKVZ, (query, key, value)))
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    ATTN_SCALING[id(module)] = (float(scale), None if softcap is None else float(softcap))
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        mask = attention_mask[:, :, :, : key.shape[-2]]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    dtype = torch.promote_types(scores.dtype, torch.float32)
    pattern = torch.softmax(scores, dim=-1, dtype=dtype).to(query.dtype)
    hook = _PATTERN_HOOKS.get(id(module))
    if hook is not None:
        pattern = hook(pattern)
    pattern = torch.nn.functional.dropout(pattern, p=dropout, training=module.training)
    out = torch.matmul(pattern, value).transpose(1, 2).contiguous()
    if (z_hook := qkvz.get("z")) is not None:
        out = z_hook(out)
    return out, pattern


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(_ATTN_NAME, _eager_with_pattern_hook)
    AttentionMaskInterface.register(_ATTN_NAME, eager_mask)


def norm_eps(module: Any) -> float:
    """The epsilon of a Hugging Face norm module (``variance_epsilon`` or ``eps``)."""
    for name in ("variance_epsilon", "eps", "epsilon"):
        if isinstance(getattr(module, name, None), (int, float)):
            return float(getattr(module, name))
    raise ConfigError(
        f"cannot find the epsilon of norm {type(module).__qualname__} (looked for variance_epsilon, "
        "eps, epsilon): tl_circuits recomputes every norm to hold its scale"
    )


def text_config(config: Any) -> Any:
    """The decoder's config: ``config`` itself, or the text config of a multimodal model."""
    get = getattr(config, "get_text_config", None)
    return config if get is None else get(decoder=True)


def chain(fns: list[HookFn]) -> Callable[[torch.Tensor], torch.Tensor]:
    """One function applying ``fns`` in order; a function returning None keeps its input."""
    def run(x: torch.Tensor) -> torch.Tensor:
        for fn in fns:
            y = fn(x)
            if y is not None:
                x = y
        return x

    return run


class HFModules:
    """The TL sites of one Hugging Face causal LM, and a hook context over them.

    ``sites`` is the architecture's row; by default the row of :data:`.sites.ARCH_SITES` for the
    model's ``config.model_type`` (ConfigError if there is none).
    """

    def __init__(self, hf_model: Any, sites: ArchSites | None = None):
        self.model = hf_model
        #: the decoder's config (the text config of a multimodal model)
        self.config = text_config(hf_model.config)
        model_type = getattr(hf_model.config, "model_type", type(hf_model).__name__)
        self.sites: ArchSites = sites if sites is not None else arch_sites(model_type)
        self.layers = module_at(hf_model, self.sites.layers)
        self.n_layers = len(self.layers)
        #: TL site prefix -> path from the model, of every norm
        self.norm_paths: dict[str, str] = {"ln_final": self.sites.final_norm}
        for la in range(self.n_layers):
            for tl, path in self.sites.block_norms():
                self.norm_paths[f"blocks.{la}.{tl}"] = f"{self.sites.layers}.{la}.{path}"
        self.norms: dict[str, Any] = {k: module_at(hf_model, p) for k, p in self.norm_paths.items()}
        names = {"unembed.hook_in"} | ({"hook_pos_embed"} if self.sites.pos_embed else set())
        for prefix in self.norms:
            names |= {f"{prefix}.hook_scale", f"{prefix}.hook_normalized"}
        for la in range(self.n_layers):
            names |= {f"blocks.{la}.{s}" for s in (
                "hook_resid_pre", "attn.hook_pattern", "mlp.hook_in", "hook_resid_mid", "hook_mlp_out",
                *(f"attn.hook_{n}" for n in _QKVZ))}
        self.hook_names = frozenset(names)

    def module_path(self, name: str) -> str:
        """The path (from the model) of the module that site ``name`` is placed on."""
        prefix = name.rsplit(".", 1)[0]
        if prefix in self.norm_paths:
            return self.norm_paths[prefix]
        s = self.sites
        if name == "unembed.hook_in":
            return s.lm_head
        if name == "hook_pos_embed" and s.pos_embed:
            return s.pos_embed
        layer, site = name.split(".", 2)[1:]
        where = {"hook_resid_pre": "", "attn.hook_pattern": s.attn, "mlp.hook_in": s.mlp,
                 "hook_resid_mid": s.resid_mid_module, "hook_mlp_out": s.mlp_out_module,
                 **{f"attn.hook_{n}": s.attn for n in _QKVZ}}[site]
        return f"{s.layers}.{layer}" + (f".{where}" if where else "")

    def freeze_hook_names(self) -> list[str]:
        """Every attention-pattern and norm-scale site."""
        return sorted(n for n in self.hook_names if n.endswith(("hook_pattern", "hook_scale")))

    @property
    def W_U(self) -> torch.Tensor:
        return module_at(self.model, self.sites.lm_head).weight.T

    def by_site(self, hooks: Sequence[tuple[str, HookFn]]) -> dict[str, list[HookFn]]:
        """``hooks`` grouped by site, in order; ConfigError for a site this model lacks."""
        by_name: dict[str, list[HookFn]] = {}
        for name, fn in hooks:
            if name not in self.hook_names:
                raise ConfigError(
                    f"no site {name!r} on this {self.sites.layers}-style model; sites: "
                    "blocks.{l}.hook_resid_pre / hook_resid_mid / hook_mlp_out / attn.hook_pattern "
                    "/ mlp.hook_in / ln*.hook_scale / ln*.hook_normalized, unembed.hook_in"
                )
            by_name.setdefault(name, []).append(fn)
        return by_name

    @contextlib.contextmanager
    def hooks(self, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        """Install ``hooks`` (TL site name, fn) on the HF modules; remove them on exit."""
        by_name = self.by_site(hooks)
        handles: list[Any] = []
        patterns: list[int] = []
        # The decoder's config: a multimodal model's other towers keep their own attention.
        old_impl = self.config._attn_implementation
        try:
            self._install(by_name, handles, patterns)
            if patterns:
                _register_attention()
                self.config._attn_implementation = _ATTN_NAME
            yield
        finally:
            for h in handles:
                h.remove()
            for key in patterns:
                _PATTERN_HOOKS.pop(key, None)
                _QKVZ_HOOKS.pop(key, None)
            self.config._attn_implementation = old_impl

    def _install(self, by_name: dict[str, list[HookFn]], handles: list[Any], patterns: list[int]) -> None:
        s = self.sites
        for prefix, norm in self.norms.items():
            scale, normed = by_name.get(f"{prefix}.hook_scale"), by_name.get(f"{prefix}.hook_normalized")
            if scale or normed:
                handles.append(norm.register_forward_hook(
                    norm_hook(s.norm, chain(scale or []), chain(normed or [])), with_kwargs=True))
        for la, block in enumerate(self.layers):
            site = f"blocks.{la}."
            if fns := by_name.get(site + "hook_resid_pre"):
                handles.append(block.register_forward_pre_hook(_input_hook(chain(fns)), with_kwargs=True))
            if fns := by_name.get(site + "attn.hook_pattern"):
                attn = module_at(block, s.attn)
                _PATTERN_HOOKS[id(attn)] = chain(fns)
                patterns.append(id(attn))
            if qkvz := {n: chain(fns) for n in _QKVZ if (fns := by_name.get(f"{site}attn.hook_{n}"))}:
                attn = module_at(block, s.attn)
                _QKVZ_HOOKS[id(attn)] = qkvz
                patterns.append(id(attn))
            if fns := by_name.get(site + "hook_resid_mid"):
                handles.append(module_at(block, s.resid_mid_module).register_forward_pre_hook(
                    _input_hook(read_only(chain(fns), site + "hook_resid_mid")), with_kwargs=True))
            if fns := by_name.get(site + "mlp.hook_in"):
                handles.append(module_at(block, s.mlp).register_forward_pre_hook(
                    _input_hook(chain(fns)), with_kwargs=True))
            if fns := by_name.get(site + "hook_mlp_out"):
                out_module = module_at(block, s.mlp_out_module)
                handles.append(out_module.register_forward_hook(_output_hook(chain(fns))))
        if (fns := by_name.get("hook_pos_embed")) and s.pos_embed:
            handles.append(module_at(self.model, s.pos_embed).register_forward_hook(
                _output_hook(read_only(chain(fns), "hook_pos_embed"))))
        if fns := by_name.get("unembed.hook_in"):
            handles.append(module_at(self.model, s.lm_head).register_forward_pre_hook(
                _input_hook(chain(fns)), with_kwargs=True))


def read_only(fn: Callable[[torch.Tensor], torch.Tensor], name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        if fn(x) is not x:
            raise ConfigError(
                f"{name} is read-only on Hugging Face models (a new value would reach the MLP but "
                "not the residual stream); return None from this hook, or patch hook_mlp_out"
            )
        return x

    return run


def first_input(args: tuple, kwargs: dict) -> tuple[str | int, torch.Tensor]:
    """Where a module's main input is in a call (position 0, or the ``hidden_states`` keyword, or
    the first tensor keyword) and its value."""
    if args:
        return 0, args[0]
    key = "hidden_states" if "hidden_states" in kwargs else next(
        k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
    return key, kwargs[key]


def _input_hook(fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    def hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        where, x = first_input(args, kwargs)
        if where == 0:
            return (fn(x), *args[1:]), kwargs
        return args, {**kwargs, where: fn(x)}

    return hook


def _output_hook(fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    def hook(module: Any, args: tuple, output: Any) -> Any:
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    return hook


def _rms(norm: Any, normalized: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return normalized.to(dtype) if norm.weight is None else norm.weight * normalized.to(dtype)


def _rms_one_plus(norm: Any, normalized: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (normalized * (1.0 + norm.weight.to(normalized.dtype))).to(dtype)


def _ln(norm: Any, normalized: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    out = normalized.to(dtype)
    out = out if norm.weight is None else out * norm.weight
    return out if getattr(norm, "bias", None) is None else out + norm.bias


@dataclass(frozen=True)
class NormKind:
    """How one kind of norm computes: ``normalized = (x - mean(x) if centred) / scale``, then
    ``apply(norm, normalized, dtype)`` with the norm's weights."""

    centred: bool
    apply: Callable[[Any, torch.Tensor, torch.dtype], torch.Tensor]


#: The norms tl_circuits recomputes, by the name used in :class:`.sites.ArchSites` ``norm``.
NORM_KINDS: dict[str, NormKind] = {
    "rms": NormKind(centred=False, apply=_rms),  # x / s * w (Llama, Qwen, Mistral, OLMo-2)
    "rms_one_plus": NormKind(centred=False, apply=_rms_one_plus),  # x / s * (1 + w) (Gemma)
    "ln": NormKind(centred=True, apply=_ln),  # (x - mean) / s * w + b (GPT-2)
}


def norm_forward(kind: str, norm: Any, x: torch.Tensor, on_scale: Callable[[torch.Tensor], torch.Tensor],
                 on_normalized: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The output of Hugging Face norm module ``norm`` on ``x``, computed as TransformerLens does,
    ``normalized = x / scale``, ``out = normalized * w (+ b)``, with ``scale`` and ``normalized``
    passed through the two hooks; in the model's dtype (at least float32), never HF's float32
    upcast inside a float64 model, so every host computes the norm with the same arithmetic."""
    try:
        how = NORM_KINDS[kind]
    except KeyError:
        raise ConfigError(f"unknown norm kind {kind!r} in tl_circuits/hosts/sites.py; use one of "
                          f"{', '.join(NORM_KINDS)} or add one to hf_modules.NORM_KINDS") from None
    h = x.to(torch.promote_types(x.dtype, torch.float32))
    if how.centred:
        h = h - h.mean(-1, keepdim=True)
    scale = on_scale((h.pow(2).mean(-1, keepdim=True) + norm_eps(norm)).sqrt())
    return how.apply(norm, on_normalized(h / scale), x.dtype)


def norm_hook(kind: str, on_scale: Callable[[torch.Tensor], torch.Tensor],
              on_normalized: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Forward hook (``with_kwargs=True``) replacing a HF norm's output by :func:`norm_forward`."""

    def hook(module: Any, args: tuple, kwargs: dict, output: torch.Tensor) -> torch.Tensor:
        return norm_forward(kind, module, first_input(args, kwargs)[1], on_scale, on_normalized)

    return hook
