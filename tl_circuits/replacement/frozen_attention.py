"""The frozen attention product ``pattern @ v`` as one autograd function that batches read-outs.

Under the freeze an attention pattern ``P`` is a constant, so the backward pass of ``z = P @ v`` is
the linear map ``grad_v = P^T @ grad_z``. The row engine reads B targets in one backward pass,
vmapped over the read-outs; PyTorch's batching rule for a matmul with one unbatched side
broadcasts it, which copies ``P`` once per read-out (heads x pos x pos each: 151 MB per layer at
2,048 tokens on SmolLM2). Here the backward is a custom operator whose vmap rule folds the B
read-outs into the columns instead: one product ``P^T @ [g_1 | ... | g_B]``, no copy of ``P``.

Two more savings that hold for causal attention (``P[q, k] = 0`` for ``k > q``, checked on each
pattern in the forward pass):
- a read-out at position ``p`` has gradients only at positions ``<= p``, so while the engine's
  :class:`PatternScope` says the read-outs stop at ``limit`` the product runs on ``P[:limit,
  :limit]`` (rows grouped by prefix, :mod:`tl_circuits.attribution.engine`);
- ``P^T`` is upper triangular: the product skips its zero blocks (key blocks of 256).

Patterns are held for the backward pass as computed (exact), or in a compact dtype when the
scope's ``storage`` says so (``torch.bfloat16`` or ``torch.float16``: half the memory; each block
is cast back to the gradients' dtype as the product reads it). The forward product always uses
the pattern as computed, so the forward values stay the model's own.

A chunk's backward pass can also run on a forward pass of its prefix only
(:func:`~tl_circuits.replacement.frozen.run_prefix`): there the pattern hook
(:func:`prefix_pattern_hook`) hands the host the prompt's own frozen pattern cut to the prefix, a
view that shares its memory (of the compact copy when patterns are stored compact).

The freeze hook (:func:`frozen_pattern_hook`) returns the detached pattern as a
:class:`FrozenPattern`, a tensor subclass whose only difference is that ``pattern @ v`` (``@``,
``torch.matmul``, ``Tensor.matmul``) goes through :class:`FrozenProduct`; the host's own attention
code is unchanged, so this holds on every host whose attention multiplies the hooked pattern with
``@``/``matmul`` (TransformerLens, the Bridge, the Hugging Face and nnsight hosts). Where a pattern
takes another road the scope counts it, and the engine keeps the plain path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float

from ..hosts.base import HookFn

#: Key positions per block of the triangular product (blocks above the diagonal are skipped).
_BLOCK = 256


@dataclass
class PatternScope:
    """What the frozen patterns of one replacement forward pass share with the engine.

    ``limit``: the read-outs of the backward pass now running stop before this position (None:
    the whole prompt); ``frozen`` / ``routed``: patterns frozen, and products that went through
    :class:`FrozenProduct` (equal when every pattern takes the batched backward); ``noncausal``:
    routed patterns with weight above the diagonal (the prefix limit does not apply to them);
    ``storage``: the dtype patterns are held in for the backward pass (None: as computed);
    ``kept``: the prompt's frozen patterns by hook site (in ``storage``), which prefix passes take
    views of.
    """

    limit: int | None = None
    storage: torch.dtype | None = None
    frozen: int = 0
    routed: int = 0
    noncausal: int = 0
    kept: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)
    #: compact copies of kept patterns by the computed pattern's address (one copy, not two)
    compact: dict[int, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    @property
    def all_routed(self) -> bool:
        return self.frozen > 0 and self.routed == self.frozen

    @property
    def causal(self) -> bool:
        """Every routed pattern is causal: a read-out at position p reaches positions <= p only."""
        return self.all_routed and self.noncausal == 0


def _vjp(pattern: torch.Tensor, grad: torch.Tensor, limit: int, causal: bool) -> torch.Tensor:
    """``P^T @ grad`` over ``[..., q, k] x [..., q, c] -> [..., k, c]``; with ``causal`` only the
    first ``limit`` positions, and per block of keys only the queries at or after it. A pattern
    held in another dtype (``PatternScope.storage``) is cast to ``grad``'s block by block."""
    n = pattern.shape[-1]
    if not causal:
        return pattern.transpose(-1, -2).to(grad.dtype) @ grad
    limit = min(limit, n)
    out = grad.new_empty(*grad.shape[:-2], n, grad.shape[-1])
    out[..., limit:, :] = 0
    for lo in range(0, limit, _BLOCK):
        hi = min(lo + _BLOCK, limit)
        # keys lo..hi are seen by queries lo..limit only
        torch.matmul(pattern[..., lo:limit, lo:hi].transpose(-1, -2).to(grad.dtype), grad[..., lo:limit, :],
                     out=out[..., lo:hi, :])
    return out


@torch.library.custom_op("tl_circuits::frozen_pattern_vjp", mutates_args=(),
                         schema="(Tensor pattern, Tensor grad, int limit, bool causal) -> Tensor")
def frozen_pattern_vjp(pattern: torch.Tensor, grad: torch.Tensor, limit: int, causal: bool) -> torch.Tensor:
    """The backward pass of ``pattern @ v`` with respect to ``v`` (``pattern`` a constant)."""
    return _vjp(pattern, grad, limit, causal)


@frozen_pattern_vjp.register_fake
def _(pattern: torch.Tensor, grad: torch.Tensor, limit: int, causal: bool) -> torch.Tensor:
    return grad.new_empty(*grad.shape[:-2], pattern.shape[-1], grad.shape[-1])


@frozen_pattern_vjp.register_vmap
def _(info: Any, in_dims: tuple, pattern: torch.Tensor, grad: torch.Tensor, limit: int,
      causal: bool) -> tuple[torch.Tensor, int]:
    p_dim, g_dim = in_dims[0], in_dims[1]
    if p_dim is not None or g_dim is None:  # not the engine's case: one read-out at a time
        pattern = pattern if p_dim is None else pattern.movedim(p_dim, 0)
        grad = grad.movedim(g_dim, 0) if g_dim is not None else grad.expand(pattern.shape[0], *grad.shape)
        pats = pattern if p_dim is not None else [pattern] * grad.shape[0]
        return torch.stack([_vjp(p, g, limit, causal) for p, g in zip(pats, grad, strict=True)]), 0
    g = grad.movedim(g_dim, -2)  # [..., q, B, c]: the read-outs become columns
    shape = g.shape
    out = _vjp(pattern, g.reshape(*shape[:-2], shape[-2] * shape[-1]), limit, causal)
    return out.reshape(*out.shape[:-1], shape[-2], shape[-1]).movedim(-2, 0), 0


class FrozenProduct(torch.autograd.Function):
    """``pattern @ v`` with ``pattern`` a constant; the backward pass is :func:`frozen_pattern_vjp`."""

    @staticmethod
    def forward(ctx: Any, pattern: torch.Tensor, v: torch.Tensor, scope: PatternScope) -> torch.Tensor:
        ctx.scope = scope
        n = pattern.shape[-1]
        ctx.causal = pattern.shape[-2] == n and not bool(torch.triu(pattern, 1).any())
        scope.noncausal += not ctx.causal
        # a pattern already held compact (a prefix pass's view of a kept one) is cast for the product
        out = (pattern if pattern.dtype == v.dtype else pattern.to(v.dtype)) @ v
        if scope.storage is not None and scope.storage != pattern.dtype:
            twin = scope.compact.get(pattern.data_ptr())  # the copy a prefix pass also reads
            pattern = twin if twin is not None and twin.shape == pattern.shape else pattern.to(scope.storage)
        ctx.save_for_backward(pattern)
        ctx.pattern = pattern  # for the forward-mode rule (head loadings push tangents through)
        return out

    @staticmethod
    def jvp(ctx: Any, pattern_t: Any, v_t: torch.Tensor, scope_t: Any) -> torch.Tensor:
        """Forward mode: the pattern is a constant, so the tangent is ``pattern @ v_t``."""
        return ctx.pattern.to(v_t.dtype) @ v_t

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        (pattern,) = ctx.saved_tensors
        limit = ctx.scope.limit
        n = pattern.shape[-1]
        # the registered operator, looked up when called: the Python object holds a dispatcher
        # handle that nnsight cannot serialize when tl_circuits travels by value (remote traces)
        vjp = torch.ops.tl_circuits.frozen_pattern_vjp
        return None, vjp(pattern, grad, n if limit is None else limit, ctx.causal), None


_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__}


class FrozenPattern(torch.Tensor):
    """A detached attention pattern whose ``@ v`` is :class:`FrozenProduct`; any other operation
    sees a plain tensor (views and casts keep the subclass, so the product is found after them)."""

    _scope: PatternScope

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if (func in _MATMULS and len(args) == 2 and not kwargs and isinstance(args[0], FrozenPattern)
                and not isinstance(args[1], FrozenPattern) and isinstance(args[1], torch.Tensor)):
            pattern, v = args[0].as_subclass(torch.Tensor), args[1]
            scope = getattr(args[0], "_scope", None)
            if (scope is not None and pattern.dim() >= 2 and v.dim() == pattern.dim()
                    and pattern.shape[:-2] == v.shape[:-2]):
                scope.routed += 1
                return FrozenProduct.apply(pattern, v, scope)
        scope = next((getattr(a, "_scope", None) for a in args if isinstance(a, FrozenPattern)), None)
        out = super().__torch_function__(func, types, args, kwargs)
        if isinstance(out, FrozenPattern) and scope is not None:
            out._scope = scope
        return out


def frozen_pattern_hook(scope: PatternScope, site: str | None = None) -> HookFn:
    """The freeze hook for attention patterns: the detached pattern, as a :class:`FrozenPattern`
    (kept in ``scope.kept[site]`` when ``site`` is given, for :func:`prefix_pattern_hook`)."""

    def hook(x: Float[torch.Tensor, "batch head q k"]) -> torch.Tensor:
        out = x.detach().as_subclass(FrozenPattern)
        out._scope = scope
        scope.frozen += 1
        if site is not None:  # a plain tensor (no cycle through ``_scope``), compact if stored so
            kept = x.detach() if scope.storage is None else x.detach().to(scope.storage)
            scope.kept[site] = kept
            if scope.storage is not None:  # FrozenProduct saves this copy instead of a second one
                scope.compact[x.data_ptr()] = kept
        return out

    hook.is_freeze = True  # type: ignore[attr-defined]  # a freeze, for hosts that only allow freezes
    return hook


def prefix_pattern_hook(scope: PatternScope, site: str) -> HookFn:
    """The pattern hook of a forward pass over the first ``n`` positions of the prompt whose
    patterns ``scope`` kept: the kept pattern at ``site`` cut to ``[..., :n, :n]`` (a view; the
    prefix's own pattern is the same matrix, causal attention sees no later key)."""

    def hook(x: Float[torch.Tensor, "batch head q k"]) -> torch.Tensor:
        kept = scope.kept.get(site)
        n = x.shape[-1]
        if kept is None or kept.shape[:-2] != x.shape[:-2] or x.shape[-2] != n or kept.shape[-1] < n:
            raise ValueError(f"no frozen pattern of the whole prompt fits {site!r} {tuple(x.shape)}")
        out = kept[..., :n, :n].as_subclass(FrozenPattern)
        out._scope = scope
        scope.frozen += 1
        return out

    hook.is_freeze = True  # type: ignore[attr-defined]  # a freeze, for hosts that only allow freezes
    return hook
