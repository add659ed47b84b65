"""Model activations kept in memory and reused for several training steps.

One model forward per step costs as much as the transcoder step itself on a CPU. The buffer runs
the model once on the contexts of ``n_batches`` steps, keeps every layer's MLP input and output
(bfloat16 when the model ran in bfloat16, so nothing is lost), and serves ``reuse`` passes over
those tokens in fresh random orders, one step's worth of tokens at a time: the model runs once
every ``n_batches * reuse`` steps instead of every step. Which contexts and which token order a
step gets depend only on the seed and the step number, so a resumed run sees the same batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from jaxtyping import Float, Int


class ActivationBuffer:
    """Serve the activations of step ``step`` (``x, y``: ``[L, tokens_per_step, d]``, float32).

    Args:
        fetch: ``context ids -> (x, y)``, the model's activations at the transcoder sites for those
            contexts (``[L, n_tokens, d]`` each, one row per kept token).
        batch_ids: ``step -> context ids`` of a step in streamed training.
        n_batches: steps' worth of contexts per model forward.
        reuse: passes over the buffered tokens (1 = every token once, as streamed training).
        seed: seeds the token order of each pass.
        chunk: contexts per model forward while filling (bounds the forward's memory).
    """

    def __init__(
        self, fetch: Callable[[Int[torch.Tensor, " n"]], tuple[torch.Tensor, torch.Tensor]],
        batch_ids: Callable[[int], Int[torch.Tensor, " batch"]], *, n_batches: int, reuse: int,
        seed: int, chunk: int,
    ) -> None:
        self.fetch, self.batch_ids = fetch, batch_ids
        self.n_batches, self.reuse, self.seed, self.chunk = n_batches, reuse, seed, chunk
        self.cycle = -1
        self.x = self.y = torch.zeros(0)
        self.forwards = 0  # model forwards run so far (for the benchmark)
        self.fill_seconds = 0.0  # how long the last fill took

    def due(self, step: int) -> bool:
        """Whether serving ``step`` first runs the model (a new fill)."""
        return step // self.steps_per_fill != self.cycle

    @property
    def steps_per_fill(self) -> int:
        return self.n_batches * self.reuse

    def get(self, step: int) -> tuple[Float[torch.Tensor, "L n d_in"], Float[torch.Tensor, "L n d_out"]]:
        cycle, within = divmod(step, self.steps_per_fill)
        if cycle != self.cycle:
            self._fill(cycle)
        n = self.x.shape[1]
        per_step = n // self.n_batches
        r, slot = divmod(within, self.n_batches)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + cycle * 101 + r)
        order = torch.randperm(n, generator=gen)[slot * per_step : (slot + 1) * per_step]
        return self.x[:, order].float(), self.y[:, order].float()

    def _fill(self, cycle: int) -> None:
        t0 = time.perf_counter()
        ids = torch.cat([self.batch_ids(cycle * self.n_batches + j) for j in range(self.n_batches)])
        self.x = self.y = torch.zeros(0)  # free the old buffer before the new one is built
        xs, ys = [], []
        dtype = torch.bfloat16  # a bfloat16 model's activations lose nothing stored so
        for lo in range(0, len(ids), self.chunk):
            x, y = self.fetch(ids[lo : lo + self.chunk])
            if dtype == torch.bfloat16 and not (_exact_in_bf16(x) and _exact_in_bf16(y)):
                dtype = torch.float32
                xs, ys = [t.float() for t in xs], [t.float() for t in ys]
            xs.append(x.to(dtype))
            ys.append(y.to(dtype))
            self.forwards += 1
        self.x, self.y = torch.cat(xs, 1), torch.cat(ys, 1)
        self.cycle = cycle
        self.fill_seconds = time.perf_counter() - t0


def _exact_in_bf16(t: torch.Tensor) -> bool:
    """Whether ``t`` (float32, from a bfloat16 model or not) survives a round trip through bfloat16."""
    return bool((t.to(torch.bfloat16).float() == t).all())
