"""Automatic sites: an :class:`.sites.ArchSites` row proposed from a Hugging Face decoder itself.

For a model whose ``config.model_type`` has no row in :data:`.sites.ARCH_SITES`, the row is read
off the module tree, the config and one short forward pass whose module calls are recorded:

- the unembedding is ``get_output_embeddings()``; the decoder layers are the ``ModuleList`` of
  ``num_hidden_layers`` modules that runs last before it; the final norm is the norm whose output
  is the unembedding's input;
- in a decoder layer, the two children holding parameters that are not norms are the attention
  (the one named like attention, else the first to run) and the MLP (for a mixture of experts,
  the whole block, router included);
- each norm of the layer is placed by data flow, not by name: its output is the attention's
  input (before attention), its input is the attention's output (after attention), its output is
  the MLP's input (before the MLP), or its input is the MLP's output (after the MLP); a block
  whose MLP reads the block's own input (attention and MLP in parallel) is refused;
- q/k norms are the two norms inside the attention module, the ``q`` one first; the query and
  key projections are a known pair of names (``q_proj``/``k_proj``, ``query``/``key``, ...);
- the norm kind is the one of ``hf_modules.NORM_KINDS`` whose recomputation reproduces every
  recorded norm output.

A proposal is only a proposal: :mod:`.checks` verifies numerically that hooks placed from it do
what attribution needs before any graph is built.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from .hf_modules import NORM_KINDS, first_input, norm_forward, text_config
from .sites import ARCH_SITES, ArchSites

#: Names of separate query / key projections, as pairs (the trace host holds them).
QK_NAMES = (("q_proj", "k_proj"), ("query", "key"), ("wq", "wk"), ("q", "k"), ("query_proj", "key_proj"))
_ATTN_NAME = re.compile(r"att", re.IGNORECASE)


def sites_for(hf_model: Any) -> ArchSites:
    """The table row for the model's ``config.model_type``, else :func:`discover_sites`."""
    row = ARCH_SITES.get(getattr(hf_model.config, "model_type", None) or "")
    return row if row is not None else discover_sites(hf_model)


def is_table_row(hf_model: Any, row: ArchSites) -> bool:
    """Whether ``row`` is the table's row for this model (so no numeric check is needed)."""
    return ARCH_SITES.get(getattr(hf_model.config, "model_type", None) or "") == row


@dataclass
class _Call:
    """One recorded module call: the module's path, its main input and output tensors."""

    path: str
    module: Any
    input: torch.Tensor | None
    output: torch.Tensor | None


def discover_sites(hf_model: Any) -> ArchSites:
    """Propose the sites of a Hugging Face decoder from its module tree and one recorded pass.

    Raises ConfigError, saying what was expected and found and how to add a table row, when the
    layout is not one a row can describe (e.g. no MLP module in a decoder layer).

    Example:
        >>> row = discover_sites(AutoModelForCausalLM.from_config(config))  # doctest: +SKIP
    """
    model_type = getattr(hf_model.config, "model_type", None)
    what = f"{model_type!r} ({type(hf_model).__name__})"
    calls = _record(hf_model, what)
    paths = {id(m): p for p, m in hf_model.named_modules()}
    head = hf_model.get_output_embeddings()
    if head is None or id(head) not in paths:
        raise _error(what, "the model has no output embeddings (get_output_embeddings() is None)")
    lm_head = paths[id(head)]
    layers = _decoder_layers(hf_model, calls, what)
    head_in = next((c.input for c in reversed(calls) if c.path == lm_head), None)
    if head_in is None:
        raise _error(what, f"the output embeddings {lm_head} are not called in a forward pass")
    final_norm = next((c.path for c in reversed(calls) if _is_norm(c.module) and c.path != lm_head
                       and not c.path.startswith(layers + ".") and _same(c.output, head_in)), None)
    if final_norm is None:
        raise _error(what, f"no norm's output is the input of {lm_head} (the final norm)")
    block = _block(calls, f"{layers}.0", what)
    layer_in = next(c.input for c in calls if c.path == f"{layers}.0")
    mlp_reads = next(c.input for c in calls if c.path == f"{layers}.0.{block['ln2'] or block['mlp']}")
    if _same(mlp_reads, layer_in):
        raise _error(what, f"decoder layer {layers}.0 runs attention and MLP in parallel on its input "
                           "(GPT-J / GPT-NeoX style), which has no residual stream between them "
                           "(TL hook_resid_mid); a row cannot describe such a block yet")
    norm_calls = [c for c in calls if _is_norm(c.module) and (
        c.path == final_norm or c.path.startswith(f"{layers}.0."))]
    return ArchSites(layers=layers, final_norm=final_norm, lm_head=lm_head, norm=_norm_kind(norm_calls, what),
                     **block)


def _record(hf_model: Any, what: str) -> list[_Call]:
    """Every module call of one short no-grad forward pass, in the order the calls return."""
    params = list(hf_model.parameters())
    if not params or params[0].device.type == "meta":
        raise _error(what, "automatic sites need one forward pass on the model's weights, and "
                           "this model has none here (meta device, e.g. a remote-only nnsight model)")
    vocab = int(getattr(text_config(hf_model.config), "vocab_size", 2) or 2)
    tokens = torch.randint(0, vocab, (1, 6), generator=torch.Generator().manual_seed(0))
    calls: list[_Call] = []

    def record(path: str) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            try:
                x = first_input(args, kwargs)[1]
            except StopIteration:
                x = None
            out = output[0] if isinstance(output, (tuple, list)) and output else output
            calls.append(_Call(path, module, x if isinstance(x, torch.Tensor) else None,
                               out if isinstance(out, torch.Tensor) else None))
        return hook

    handles = [m.register_forward_hook(record(p), with_kwargs=True)
               for p, m in hf_model.named_modules() if p]
    try:
        with torch.no_grad():
            hf_model(input_ids=tokens.to(params[0].device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return calls


def _decoder_layers(hf_model: Any, calls: list[_Call], what: str) -> str:
    cfg = text_config(hf_model.config)
    n = next((getattr(cfg, k) for k in ("num_hidden_layers", "n_layer", "num_layers")
              if isinstance(getattr(cfg, k, None), int)), None)
    order = {c.path: i for i, c in enumerate(calls)}
    lists = [(order[f"{p}.{n - 1}"], p) for p, m in hf_model.named_modules()
             if isinstance(m, torch.nn.ModuleList) and len(m) == n and n and f"{p}.{n - 1}" in order]
    if not lists:
        raise _error(what, f"no ModuleList of {n} decoder layers (config num_hidden_layers) runs "
                           "in a forward pass")
    return max(lists)[1]


def _children_called(calls: list[_Call], parent: str) -> Iterator[tuple[str, _Call]]:
    seen = set()
    for c in calls:
        name = c.path[len(parent) + 1:]
        if c.path.startswith(parent + ".") and "." not in name and name not in seen:
            seen.add(name)
            yield name, c


def _block(calls: list[_Call], layer: str, what: str) -> dict[str, Any]:
    """The per-layer fields of the row, from the calls of the first decoder layer."""
    children = list(_children_called(calls, layer))
    subs = [(n, c) for n, c in children if not _is_norm(c.module) and _has_params(c.module)]
    found = ", ".join(f"{n} ({type(c.module).__name__})" for n, c in children)
    if len(subs) != 2:
        raise _error(what, f"decoder layer {layer} should run one attention module and one MLP "
                           f"module; found the calls {found}")
    named = [s for s in subs if _ATTN_NAME.search(s[0]) or _ATTN_NAME.search(type(s[1].module).__name__)]
    attn = named[0] if len(named) == 1 else subs[0]
    mlp = subs[1] if attn is subs[0] else subs[0]
    roles = {"ln1": (attn[1].input, "output"), "ln1_post": (attn[1].output, "input"),
             "ln2": (mlp[1].input, "output"), "ln2_post": (mlp[1].output, "input")}
    placed: dict[str, str] = {}
    for name, c in children:
        if not _is_norm(c.module):
            continue
        role = next((r for r, (t, side) in roles.items() if r not in placed
                     and _same(c.output if side == "output" else c.input, t)), None)
        if role is None:
            raise _error(what, f"norm {layer}.{name} reads neither the output of {attn[0]} or "
                               f"{mlp[0]} nor writes their input; a row must say where it sits")
        placed[role] = name
    attn_children = dict(attn[1].module.named_children())
    qk_norms = sorted((n for n, m in attn_children.items() if _is_norm(m)), key=lambda n: "q" not in n)
    if len(qk_norms) not in (0, 2):
        raise _error(what, f"attention {layer}.{attn[0]} holds norms {qk_norms}; expected none "
                           "or one on the queries and one on the keys")
    qk = next((pair for pair in QK_NAMES if all(p in attn_children for p in pair)), ())
    return dict(attn=attn[0], mlp=mlp[0], ln1=placed.get("ln1"), ln2=placed.get("ln2"),
                ln1_post=placed.get("ln1_post"), ln2_post=placed.get("ln2_post"), qk=qk,
                qk_norms=(qk_norms[0], qk_norms[1]) if qk_norms else None)


def _norm_kind(norm_calls: list[_Call], what: str) -> str:
    """The one kind of :data:`.hf_modules.NORM_KINDS` that reproduces every recorded norm call."""
    kinds = list(NORM_KINDS)
    for c in norm_calls:
        if c.input is None or c.output is None:
            continue
        ok = [kind for kind in kinds if _reproduces(kind, c.module, c.input, c.output)]
        if not ok:
            raise _error(what, f"norm {c.path} ({type(c.module).__name__}) computes none of "
                               f"{', '.join(NORM_KINDS)} (tl_circuits recomputes every norm to hold its "
                               "scale); add a kind to hf_modules.NORM_KINDS")
        kinds = ok
    return kinds[0]


def norm_kind(norm: Any) -> str | None:
    """The kind of :data:`.hf_modules.NORM_KINDS` that computes Hugging Face norm module ``norm``,
    tried on a random input; None if none does (or the norm has no 1-D weight to size it)."""
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1:
        return None
    gen = torch.Generator().manual_seed(0)
    x = (3.0 * torch.randn(3, weight.shape[0], generator=gen, dtype=torch.float64) + 1.0).to(weight)
    with torch.no_grad():
        out = norm(x)
    return next((k for k in NORM_KINDS if _reproduces(k, norm, x, out)), None)


def _reproduces(kind: str, norm: Any, x: torch.Tensor, out: torch.Tensor) -> bool:
    """Whether :func:`.hf_modules.norm_forward` of ``kind`` gives ``out`` from ``x``."""
    try:
        with torch.no_grad():
            ours = norm_forward(kind, norm, x, lambda s: s, lambda n: n)
    except (ConfigError, AttributeError, RuntimeError, TypeError):
        return False
    tol = 1e-3 if out.dtype in (torch.float32, torch.float64) else 3e-2
    return ours.shape == out.shape and float((ours.float() - out.float()).abs().max()) <= tol * float(
        out.abs().max())


def _is_norm(module: Any) -> bool:
    """A leaf module that normalises: a norm class (``*Norm*``), with at most a 1-D weight."""
    weight = getattr(module, "weight", None)
    return (not any(True for _ in module.children()) and "norm" in type(module).__name__.lower()
            and (weight is None or getattr(weight, "dim", lambda: 0)() == 1))


def _has_params(module: Any) -> bool:
    return any(True for _ in module.parameters())


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return a is not None and b is not None and a.shape == b.shape and bool(torch.equal(a, b))


def _error(what: str, found: str) -> ConfigError:
    return ConfigError(
        f"no site table row for Hugging Face architecture {what}, and automatic sites cannot "
        f"place it: {found}. Architectures with a row, supported: {', '.join(sorted(ARCH_SITES))}. To add "
        "one, put a row in tl_circuits/hosts/sites.py ARCH_SITES giving the module paths of its "
        "decoder layers, norms, attention, MLP, final norm and lm_head (see docs/hosts.md)"
    )
