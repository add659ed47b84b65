"""TransformerLens sites on a plain Hugging Face causal LM, by PyTorch module hooks only.

Given the architecture's row of :mod:`.sites`, each TL site is one of:
- a norm's ``hook_scale`` / ``hook_normalized``: a forward hook on the norm recomputes its output
  from its input as ``normalized = x / scale``, ``out = normalized * w (+ b)``, with both hooks
  in the path, in the model's dtype (HF upcasts to float32 only; in a float64 model we do not);
  the TransformerBridge host uses the same code (:func:`norm_forward`);
- ``attn.hook_pattern``: a registered attention function (transformers' ``AttentionInterface``)
  computes eager attention with the softmax weights passed through the hook;
- residual and MLP sites: forward (pre-)hooks on decoder layers, norms, MLPs and ``lm_head``.
Hooks are removed and the attention implementation restored on exit, even on exceptions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from ..errors import ConfigError
from .base import HookFn
from .sites import ArchSites, arch_sites

_ATTN_NAME = "tl_circuits_eager"
#: id(attention module) -> hook on its pattern, while a hook context is active.
_PATTERN_HOOKS: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}


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
    weights ``[batch, head, query_pos, key_pos]`` go through the module's pattern hook."""
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
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
    return out, pattern


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(_ATTN_NAME, _eager_with_pattern_hook)
    AttentionMaskInterface.register(_ATTN_NAME, eager_mask)


def _norm_eps(module: Any) -> float:
    for name in ("variance_epsilon", "eps"):
        if hasattr(module, name):
            return float(getattr(module, name))
    raise ConfigError(f"cannot find the epsilon of norm {type(module).__qualname__}")


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
    """The TL sites of one Hugging Face causal LM, and a hook context over them."""

    def __init__(self, hf_model: Any):
        self.model = hf_model
        self.config = hf_model.config
        self.sites: ArchSites = arch_sites(getattr(self.config, "model_type", type(hf_model).__name__))
        self.layers = module_at(hf_model, self.sites.layers)
        self.n_layers = len(self.layers)
        norms = {"ln_final": module_at(hf_model, self.sites.final_norm)}
        for la, block in enumerate(self.layers):
            for tl, path in (("ln1", self.sites.ln1), ("ln2", self.sites.ln2),
                             ("ln1_post", self.sites.ln1_post), ("ln2_post", self.sites.ln2_post)):
                if path is not None:
                    norms[f"blocks.{la}.{tl}"] = module_at(block, path)
        self.norms: dict[str, Any] = norms
        names = {"unembed.hook_in"}
        for prefix in norms:
            names |= {f"{prefix}.hook_scale", f"{prefix}.hook_normalized"}
        for la in range(self.n_layers):
            names |= {f"blocks.{la}.{s}" for s in (
                "hook_resid_pre", "attn.hook_pattern", "mlp.hook_in", "hook_resid_mid", "hook_mlp_out")}
        self.hook_names = frozenset(names)

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
            if fns := by_name.get(site + "hook_resid_mid"):
                handles.append(module_at(block, s.ln2).register_forward_pre_hook(
                    _input_hook(read_only(chain(fns), site + "hook_resid_mid")), with_kwargs=True))
            if fns := by_name.get(site + "mlp.hook_in"):
                handles.append(module_at(block, s.mlp).register_forward_pre_hook(
                    _input_hook(chain(fns)), with_kwargs=True))
            if fns := by_name.get(site + "hook_mlp_out"):
                out_module = module_at(block, s.ln2_post if s.ln2_post else s.mlp)
                handles.append(out_module.register_forward_hook(_output_hook(chain(fns))))
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


def _input_hook(fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    def hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if args:
            return (fn(args[0]), *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = fn(kwargs["hidden_states"])
        return args, kwargs

    return hook


def _output_hook(fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    def hook(module: Any, args: tuple, output: Any) -> Any:
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    return hook


def norm_forward(kind: str, norm: Any, x: torch.Tensor, on_scale: Callable[[torch.Tensor], torch.Tensor],
                 on_normalized: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The output of Hugging Face norm module ``norm`` on ``x``, computed as TransformerLens does,
    ``normalized = x / scale``, ``out = normalized * w (+ b)``, with ``scale`` and ``normalized``
    passed through the two hooks; in the model's dtype (at least float32), never HF's float32
    upcast inside a float64 model, so every host computes the norm with the same arithmetic."""
    h = x.to(torch.promote_types(x.dtype, torch.float32))
    if kind == "ln":
        h = h - h.mean(-1, keepdim=True)
    scale = on_scale((h.pow(2).mean(-1, keepdim=True) + _norm_eps(norm)).sqrt())
    normalized = on_normalized(h / scale)
    if kind == "rms":
        return norm.weight * normalized.to(x.dtype)
    if kind == "rms_one_plus":
        return (normalized * (1.0 + norm.weight.to(normalized.dtype))).to(x.dtype)
    if kind == "ln":
        out = normalized.to(x.dtype) * norm.weight
        return out if norm.bias is None else out + norm.bias
    raise ConfigError(f"unknown norm kind {kind!r} in tl_circuits/hosts/sites.py; use rms, rms_one_plus or ln")


def norm_hook(kind: str, on_scale: Callable[[torch.Tensor], torch.Tensor],
              on_normalized: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Forward hook (``with_kwargs=True``) replacing a HF norm's output by :func:`norm_forward`."""

    def hook(module: Any, args: tuple, kwargs: dict, output: torch.Tensor) -> torch.Tensor:
        x = args[0] if args else kwargs["hidden_states"]
        return norm_forward(kind, module, x, on_scale, on_normalized)

    return hook
