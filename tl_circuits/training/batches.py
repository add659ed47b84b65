"""Where a training step's activations come from: the model run on the step's contexts, or an
activation cache; under ``torchrun`` each rank gets its part of the global batch.

The global batch of a step depends only on the seed and the step number (so resumed runs read
what uninterrupted ones would, at any number of processes): contexts of an epoch-wise seeded
permutation when streaming, :class:`~tl_circuits.training.cache.ShuffledBatches` from a cache.
Data parallel ranks take consecutive slices of it (rank ``r`` of ``w``: contexts or tokens
``[r * b / w, (r + 1) * b / w)``); feature-sharded ranks all see the whole batch (each reads its
slice and the slices are gathered).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Int

from tl_circuits.training.cache import ActivationCache, ShuffledBatches
from tl_circuits.training.comm import Comm

Batch = tuple[torch.Tensor, torch.Tensor]


def batch_ids(step: int, batch: int, n: int, seed: int) -> Int[torch.Tensor, " batch"]:
    """Context ids of a step: epoch-wise permutations seeded by (seed, epoch)."""
    per_epoch = max(1, n // batch)
    epoch, offset = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return perm[offset * batch : (offset + 1) * batch]


def _part(n: int, comm: Comm | None) -> slice:
    if comm is None:
        return slice(0, n)
    return slice(comm.rank * n // comm.world, (comm.rank + 1) * n // comm.world)


def _whole(x: torch.Tensor, y: torch.Tensor, comm: Comm | None) -> Batch:
    if comm is not None and comm.feature_sharded:
        return comm.gather(x, 1), comm.gather(y, 1)
    return x, y


def streamed(
    read: Callable[[torch.Tensor], Batch], contexts: Int[torch.Tensor, "n ctx"], batch: int,
    seed: int, comm: Comm | None = None,
) -> Callable[[int], Batch]:
    """``step -> (x, y)``: the model run on this rank's share of the step's contexts."""

    def at(step: int) -> Batch:
        ids = batch_ids(step, batch, len(contexts), seed)
        return _whole(*read(contexts[ids[_part(len(ids), comm)]]), comm)

    return at


def cached(
    cache: ActivationCache, tokens_per_step: int, seed: int, comm: Comm | None = None,
    device: torch.device | str = "cpu",
) -> Callable[[int], Batch]:
    """``step -> (x, y)``: this rank's share of the step's tokens, read from ``cache``, on
    ``device``."""
    source = ShuffledBatches(cache, tokens_per_step, seed=seed)

    def at(step: int) -> Batch:
        x, y = (t.to(device) for t in source.batch(step))
        if comm is None or comm.feature_sharded:
            return x, y
        part = _part(x.shape[1], comm)
        return x[:, part], y[:, part]

    return at
