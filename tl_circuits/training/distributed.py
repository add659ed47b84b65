"""Training on many processes with ``torch.distributed``, launched by ``torchrun``.

``train_transcoders`` called in every process of ``torchrun --nproc_per_node N script.py`` (or
``torchrun -m tl_circuits.cli train ...``) trains one set together:

- per-layer sets: **data parallel**. Every rank holds all parameters, runs the model on its
  share of each global batch and the gradients are summed; a step equals the single-process
  step on the same global batch. ``batch`` (contexts per step) must be a multiple of the world
  size.
- cross-layer transcoders: **features sharded**. Rank ``r`` holds features
  ``[r * d_sae / N, (r + 1) * d_sae / N)`` of every layer's encoder and decoder (and their Adam
  moments), so a CLT ``N`` times larger than one device's memory trains; TopK takes the global
  top-k over every shard (:class:`~tl_circuits.training.comm.Comm`). ``d_sae`` must be a
  multiple of the world size.

The initial weights are those of the single-process run with the same seed (each rank slices
them), and checkpoints hold the full, gathered state in the single-process format (rank 0
writes them), so a run resumes with any number of processes. Backend: NCCL when CUDA is
available, else gloo. See docs/training.md for launch commands and the memory per rank.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.distributed as dist

from tl_circuits.errors import ConfigError
from tl_circuits.training.comm import Comm
from tl_circuits.training.stack import TranscoderStack

_FEATURE_DIM = {"W_enc": 2, "b_enc": 1, "log_threshold": 1, "since_fired": 1}


def setup(*, cross_layer: bool, d_sae: int, batch: int) -> Comm | None:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), or use one the caller
    initialised; None on a single process. Checks the sizes divide by the world size."""
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    world = dist.get_world_size()
    if world == 1:
        return None
    if cross_layer:
        if d_sae % world:
            raise ConfigError(
                f"a cross-layer transcoder's features are sharded across the {world} processes, "
                f"but d_sae={d_sae} is not a multiple of {world}; use d_sae="
                f"{(d_sae // world + 1) * world} (or another multiple), or {world} processes that "
                "divide it."
            )
        return Comm(feature_sharded=True)
    if batch % world:
        raise ConfigError(
            f"data-parallel training splits each step's {batch} contexts across {world} "
            f"processes; use a batch that is a multiple of {world}."
        )
    return Comm(data_parallel=True)


def feature_dim(name: str) -> int | None:
    """The feature dimension of a stack state tensor (``module.W_enc``, ``adam.W_dec.3.exp_avg``,
    ...), or None for a tensor every rank holds whole."""
    base = name.split(".", 1)[1] if name.startswith(("module.", "adam.")) else name
    base = base.removesuffix(".exp_avg_sq").removesuffix(".exp_avg")
    if base.startswith("W_dec."):
        return 0
    return _FEATURE_DIM.get(base)


def make_stack(comm: Comm | None, **kwargs) -> TranscoderStack:
    """The stack of this rank: the single-process stack, or (features sharded) its slice."""
    full = TranscoderStack(**kwargs)
    if comm is None or not comm.feature_sharded:
        full.comm = comm
        return full
    local = TranscoderStack(**{**kwargs, "d_sae": kwargs["d_sae"] // comm.world})
    local.load_state_dict(shard_tensors(full.state_dict(), comm))
    local.comm = comm
    return local


def shard_tensors(tensors: dict[str, torch.Tensor], comm: Comm | None) -> dict[str, torch.Tensor]:
    """This rank's slices of full state tensors (whole tensors unless features are sharded)."""
    if comm is None or not comm.feature_sharded:
        return tensors
    out = {}
    for name, t in tensors.items():
        dim = feature_dim(name)
        out[name] = t if dim is None else t.chunk(comm.world, dim)[comm.rank].clone()
    return out


def gather_tensors(tensors: dict[str, torch.Tensor], comm: Comm | None) -> dict[str, torch.Tensor]:
    """Full state tensors from every rank's slices (a collective: every rank calls it)."""
    if comm is None or not comm.feature_sharded:
        return tensors
    return {name: t if feature_dim(name) is None else comm.gather(t, feature_dim(name) or 0)
            for name, t in tensors.items()}


def full_stack(stack: TranscoderStack, comm: Comm | None) -> TranscoderStack:
    """A single-process stack with the full state (a collective when features are sharded)."""
    if comm is None or not comm.feature_sharded:
        return stack
    full = TranscoderStack(stack.n_layers, stack.d_in, stack.d_out, stack.d_sae * comm.world,
                           kind=stack.kind, k=stack.k, skip=stack.skip, cross_layer=stack.cross_layer)
    full.load_state_dict(gather_tensors(stack.state_dict(), comm))
    full.sparsity_coef = stack.sparsity_coef
    return full


def whole_batch(x: torch.Tensor, y: torch.Tensor, comm: Comm | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Data parallel: every rank's activations together (for the first batch's scales)."""
    if comm is None or not comm.data_parallel:
        return x, y
    return comm.gather(x, 1), comm.gather(y, 1)


def after_backward(stack: TranscoderStack, comm: Comm | None) -> None:
    """Data parallel: sum the gradients over ranks."""
    if comm is not None and comm.data_parallel:
        comm.sum_gradients(stack)


def fired_anywhere(fired: torch.Tensor, comm: Comm | None) -> torch.Tensor:
    """Data parallel: a feature fired when it fired on any rank's tokens."""
    if comm is None or not comm.data_parallel:
        return fired
    return comm.all_max(fired.to(torch.uint8)).bool()


def tokens_per_rank_step(n_local: int, comm: Comm | None) -> int:
    """Tokens of the global batch seen by a step (for the dead-feature counters)."""
    return n_local * (comm.world if comm is not None and comm.data_parallel else 1)


def on_rank0(comm: Comm | None, fn: Callable[[], None]) -> None:
    """Run ``fn`` on rank 0 only, then wait for every rank (no-op wait on one process)."""
    if comm is None or comm.rank == 0:
        fn()
    if comm is not None:
        dist.barrier()


def barrier(comm: Comm | None) -> None:
    if comm is not None:
        dist.barrier()
