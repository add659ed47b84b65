"""The collective operations a distributed training step needs, on ``torch.distributed``.

Two layouts (:mod:`tl_circuits.training.distributed` sets them up):

- **data parallel** (per-layer sets): every rank holds every parameter and a slice of the
  batch; losses are rank shares of the global batch's loss (:meth:`all_sum` of statistics) and
  gradients are summed (:meth:`sum_gradients`), so a step equals a single-process step on the
  global batch;
- **feature sharded** (cross-layer transcoders): every rank sees the whole batch and holds the
  features ``[rank * F / world, (rank + 1) * F / world)`` of every layer's encoder and decoder.
  TopK takes the global top-k over every shard (:meth:`global_topk`) and the reconstruction is
  the sum of every shard's writes (:meth:`sum_shards`: all-reduce forward, identity backward, as
  Megatron-LM's "reduce from the model-parallel region"), so the loss, and the gradient of every
  replicated parameter, is the same on every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from jaxtyping import Float, Int


class _SumShards(torch.autograd.Function):
    """All-reduce (sum) forward; the gradient passes through unchanged, because everything
    after the sum is computed identically on every rank."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


class Comm:
    """A rank's view of a distributed run: ``rank``, ``world``, and its layout."""

    def __init__(self, *, data_parallel: bool = False, feature_sharded: bool = False) -> None:
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.data_parallel = data_parallel
        self.feature_sharded = feature_sharded

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over ranks, in place (no gradient)."""
        dist.all_reduce(t)
        return t

    def all_max(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` maximised over ranks, in place (no gradient)."""
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def sum_shards(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's partial ``t`` summed, with a pass-through gradient (module docstring)."""
        return _SumShards.apply(t)

    def gather(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Every rank's ``t`` concatenated along ``dim`` in rank order (no gradient)."""
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim)

    def sum_gradients(self, module: torch.nn.Module) -> None:
        """Sum every parameter's gradient over ranks (data parallel), in one flat all-reduce."""
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def global_topk(
        self, pre: Float[torch.Tensor, "L n f"], k: int
    ) -> tuple[Float[torch.Tensor, "L n k"], Int[torch.Tensor, "L n k"], torch.Tensor,
               Float[torch.Tensor, " L"]]:
        """The top ``k`` of every token over all shards' features, as this shard's part:
        ``(values, local ids, live, l0)``; a selected feature of another shard has value 0 and
        ``live`` False, so decoding with this shard's rows gives its share of the write."""
        f = pre.shape[-1]
        with torch.no_grad():
            v, i = torch.topk(pre, k, dim=-1, sorted=False)
            all_v = self.gather(v, -1)  # [L, n, world * k]
            all_i = self.gather(i + self.rank * f, -1)
            top_v, pos = torch.topk(all_v, k, dim=-1, sorted=False)
            ids = all_i.gather(-1, pos)
            mine = (ids >= self.rank * f) & (ids < (self.rank + 1) * f)
            local = torch.where(mine, ids - self.rank * f, torch.zeros_like(ids))
            l0 = (top_v > 0).to(pre.dtype).sum(-1).mean(-1)
        vals = pre.gather(-1, local).relu() * mine
        return vals, local, mine & (vals > 0), l0
