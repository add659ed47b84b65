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

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from jaxtyping import Int

from tl_circuits.training import sources
from tl_circuits.training.cache import (
    ActivationCache,
    ShuffledBatches,
    build_activation_cache,
    open_cache,
)
from tl_circuits.training.comm import Comm
from tl_circuits.training.corpus import writable_dir

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


def corpus_contexts(
    tokenizer: Any, corpus: Any, ctx_len: int, bos: int | None, *, steps: int | None,
    tokens: int, batch: int, eval_fraction: float, field: str, split: str,
) -> tuple[Int[torch.Tensor, "n_train ctx"], Int[torch.Tensor, "n_eval ctx"], int]:
    """A run's contexts from a corpus read only as far as it needs: ``steps * batch`` training
    contexts (steps from ``tokens`` when None), then the held-out share; and the steps."""
    body = ctx_len - (bos is not None)
    steps = steps if steps is not None else max(1, math.ceil(tokens / (batch * body)))
    n_train = steps * batch
    n_eval = math.ceil(n_train * eval_fraction / (1 - eval_fraction)) if eval_fraction > 0 else 0
    contexts = sources.read_contexts(tokenizer, corpus, ctx_len, bos_token_id=bos,
                                     n_contexts=n_train + n_eval, field=field, split=split)
    return contexts[:n_train], contexts[n_train:], steps


def from_cache(
    cache_dir: Path, settings: dict[str, Any], read: Callable[[torch.Tensor], Batch],
    train_ctx: Int[torch.Tensor, "n ctx"], eval_ctx: Int[torch.Tensor, "m ctx"], *,
    tokens_per_step: int, seed: int, comm: Comm | None, dtype: torch.dtype,
    device: torch.device | str, progress: bool,
) -> tuple[Callable[[int], Batch], Iterator[Batch] | None]:
    """Fill the run's activation cache in ``cache_dir`` (a folder keyed by ``settings``: what the
    activations depend on) where needed; return the training batches and the held-out ones."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    name = (str(settings.get("model", "")).replace("/", "_")[-40:] or "model") + f"-{key}"
    root = writable_dir(cache_dir / name, "activation cache directory")
    for part, ctx in (("train", train_ctx), ("eval", eval_ctx)):
        if len(ctx):
            build_activation_cache(root / part, ctx, read, settings=settings, dtype=dtype,
                                   progress=progress, rank=0 if comm is None else comm.rank,
                                   world=1 if comm is None else comm.world)
        if comm is not None:
            dist.barrier()
    train = cached(open_cache(root / "train", train_ctx), tokens_per_step, seed, comm, device=device)
    if not len(eval_ctx):
        return train, None
    held = open_cache(root / "eval", eval_ctx)
    return train, (held.shard(i) for i in range(len(held.shards)))
