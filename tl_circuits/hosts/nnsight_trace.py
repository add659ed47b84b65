"""The nnsight host inside a trace: TL sites as nnsight interventions, so a run can go remote.

``NNsightHost.run_traced`` opens one ``model.trace`` over the prompt and calls the attribution
job inside it with a :class:`TraceHost`. That host places every site through the trace's own
envoys (``.input`` / ``.output`` of modules, read and set in execution order), never through
PyTorch hooks, so the job runs wherever nnsight runs the trace: locally, on NDIF
(``remote=True``), or in nnsight's serialize-and-run stand-in (``remote="local"``). The backward
passes run in the same trace body after the forward pass, on the trace's own autograd graph.

Two sites differ from the local hosts:
- the attention pattern is not a module output; freezing it (:func:`.base.freeze`) holds the
  query and key projections (the row's ``qk``) instead, which fixes the pattern and nothing else.
  Other pattern hooks are refused, and so is a pattern freeze on a row without ``qk``. The q/k
  norms (Gemma-3, OLMo-2, Qwen3) read only the held projections, so their frozen scales come
  with the held pattern; other q/k norm hooks are refused.
- a norm's ``hook_scale`` / ``hook_normalized``: the norm's output is set to
  :func:`.hf_modules.norm_forward` of its input, as the local hosts compute it.

The row comes from the local host (:class:`.nnsight_host.NNsightHost`), where automatic sites
were already checked; nothing is discovered or checked inside the trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int

from ..errors import ConfigError
from .base import HookFn, freeze, is_freeze
from .hf import HFHost
from .hf_modules import chain, module_at, norm_forward, read_only
from .sites import ArchSites


def run_job(model: Any, tokens: Int[torch.Tensor, " pos"], job: Callable[[Any], Any],
            sites: ArchSites | None = None) -> Any:
    """Body of the trace: ``job(TraceHost(...))`` with gradients on (the body's own thread)."""
    with torch.enable_grad():
        return job(TraceHost(model, tokens, sites))


class TraceHost(HFHost):
    """The host protocol for code running inside ``model.trace(tokens)`` (see module docstring).

    ``forward`` does not start a forward pass: it applies the active hooks to the trace's one
    forward pass, in module order, and returns its logits. It can be called once per trace.
    """

    def __init__(self, model: Any, tokens: Int[torch.Tensor, " pos"], sites: ArchSites | None = None):
        super().__init__(model._module, getattr(model, "tokenizer", None), sites=sites, check=False)
        self.envoy = model
        self.trace_tokens = tokens
        self._by_name: dict[str, list[HookFn]] = {}
        self._used = False

    @contextlib.contextmanager
    def hooks(self, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        by_name = self.sites.by_site(hooks)
        for name, fns in by_name.items():
            if name.endswith("attn.hook_pattern") and not all(is_freeze(fn) for fn in fns):
                raise ConfigError(
                    f"{name}: inside an nnsight trace attention patterns can only be frozen "
                    "(queries and keys are held); run locally for other pattern hooks"
                )
            if (".attn.q_norm." in name or ".attn.k_norm." in name) and not all(is_freeze(fn) for fn in fns):
                raise ConfigError(
                    f"{name}: inside an nnsight trace q/k norms can only be frozen (with the "
                    "attention pattern, queries and keys are held); run locally for other q/k norm hooks"
                )
            if name.endswith("attn.hook_pattern") and not self.sites.sites.qk:
                raise ConfigError(
                    f"{name}: this architecture's row names no query and key projections (qk), "
                    "so a traced (remote) run cannot freeze its attention pattern; add qk to its "
                    "row in tl_circuits/hosts/sites.py ARCH_SITES, or run locally"
                )
        self._by_name = by_name
        try:
            yield
        finally:
            self._by_name = {}

    def forward(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
        if self._used:
            raise RuntimeError("TraceHost.forward applies to the trace's one forward pass; call it once")
        if tokens.shape != (1, self.trace_tokens.numel()) or not torch.equal(
            tokens[0].cpu(), self.trace_tokens.cpu()
        ):
            raise RuntimeError("TraceHost.forward must be given the tokens the trace runs on")
        self._used = True
        s, by = self.sites.sites, self._by_name
        tl_name = {path: tl for tl, path in s.block_norms()}
        for la, block in enumerate(module_at(self.envoy, s.layers)):
            p = f"blocks.{la}."
            if fns := by.get(p + "hook_resid_pre"):
                block.input = chain(fns)(block.input)
            if s.ln1:
                self._norm(p + "ln1", module_at(block, s.ln1))
            attn = module_at(block, s.attn)
            if by.get(p + "attn.hook_pattern"):
                _hold_queries_keys(attn, s.qk)
            elif s.qk_norms:  # frozen q/k norm scales without a held pattern
                for tl, path in zip(("attn.q_norm", "attn.k_norm"), s.qk_norms):
                    self._norm(p + tl, module_at(attn, path))
            if s.ln1_post:
                self._norm(p + tl_name[s.ln1_post], module_at(block, s.ln1_post))
            if fns := by.get(p + "hook_resid_mid"):
                read_only(chain(fns), p + "hook_resid_mid")(module_at(block, s.resid_mid_module).input)
            if s.ln2:
                self._norm(p + "ln2", module_at(block, s.ln2))
            mlp = module_at(block, s.mlp)
            if fns := by.get(p + "mlp.hook_in"):
                mlp.input = chain(fns)(mlp.input)
            out_fns = by.get(p + "hook_mlp_out")
            if s.ln2_post:
                self._norm(p + tl_name[s.ln2_post], module_at(block, s.ln2_post), then=out_fns)
            elif out_fns:
                mlp.output = _on_first(chain(out_fns), mlp.output)
        self._norm("ln_final", module_at(self.envoy, s.final_norm))
        if fns := by.get("unembed.hook_in"):
            head = module_at(self.envoy, s.lm_head)
            head.input = chain(fns)(head.input)
        return self.envoy.output.logits

    def _norm(self, prefix: str, norm: Any, then: list[HookFn] | None = None) -> None:
        """Set a norm's output from its input with its scale / normalized hooks (and ``then``)."""
        scale, normed = self._by_name.get(prefix + ".hook_scale"), self._by_name.get(prefix + ".hook_normalized")
        if scale or normed:
            out = norm_forward(self.sites.sites.norm, norm._module, norm.input,
                               chain(scale or []), chain(normed or []))
            norm.output = chain(then)(out) if then else out
        elif then:
            norm.output = chain(then)(norm.output)


def _on_first(fn: Callable[[torch.Tensor], torch.Tensor], output: Any) -> Any:
    """``fn`` applied to a module's output, or to the first element of a tuple output (an MoE
    block that also returns its router logits)."""
    return (fn(output[0]), *output[1:]) if isinstance(output, tuple) else fn(output)


def _hold_queries_keys(attn: Any, paths: tuple[str, ...]) -> None:
    """Freeze an attention pattern by making its queries and keys constants to autograd."""
    if len(paths) == 1:
        qkv = module_at(attn, paths[0])
        out = qkv.output
        third = out.shape[-1] // 3
        qkv.output = torch.cat([out[..., : 2 * third].detach(), out[..., 2 * third :]], dim=-1)
        return
    for path in paths:
        proj = module_at(attn, path)
        proj.output = freeze(proj.output)
