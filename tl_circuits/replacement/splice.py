"""The splice: what the replacement model's MLP of a layer writes, and the error term that makes
it exact.

For output layer ``m``, with ``acts[l]`` the feature activations and ``x[l]`` the transcoder
inputs of the layers that write it::

    spliced(m)  = reconstruct(m, acts, x) + error_m
    error_m     = y_m - reconstruct(m, acts_clean, x_clean)        (y_m: the true MLP output)

so on the clean run ``spliced(m) = y_m``. Every run of :mod:`tl_circuits.replacement` goes through
these two functions: the frozen run (attribution) and the clean run (interventions) compute the
error terms with :func:`error_term`; the intervened run writes :func:`spliced` with the clean run's
error terms, or without any (``error=None``: evaluation's "replacement model", reconstructions
from the live inputs only); evaluation's per-layer FVU compares :func:`spliced` without error with
the true outputs.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from ..transcoders import Transcoders


def spliced(
    transcoders: Transcoders,
    layer: int,
    acts: dict[int, Float[torch.Tensor, "*batch d_sae"]],
    x: dict[int, Float[torch.Tensor, "*batch d_in"]],
    error: Float[torch.Tensor, "... d_out"] | None = None,
) -> Float[torch.Tensor, "*batch d_out"]:
    """``reconstruct(layer, acts, x) + error`` (``error`` broadcast over leading batch dims; None
    adds nothing): the MLP output of ``layer`` in the replacement model.

    Example:
        >>> import torch
        >>> from tl_circuits import Transcoder, TranscoderSet
        >>> t = Transcoder(torch.eye(2), torch.zeros(2), 2 * torch.eye(2), torch.zeros(2),
        ...                hook_name="blocks.0.ln2.hook_normalized", hook_name_out="blocks.0.hook_mlp_out")
        >>> x = {0: torch.tensor([1.0, -1.0])}
        >>> ts = TranscoderSet([t])
        >>> spliced(ts, 0, {0: ts.encode(0, x[0])}, x, error=torch.tensor([0.5, 0.5]))
        tensor([2.5000, 0.5000])
    """
    out = transcoders.reconstruct(layer, acts, x)
    return out if error is None else out + error


def error_term(
    transcoders: Transcoders,
    layer: int,
    mlp_out: Float[torch.Tensor, "pos d_out"],
    acts: dict[int, Float[torch.Tensor, "pos d_sae"]],
    x: dict[int, Float[torch.Tensor, "pos d_in"]],
) -> Float[torch.Tensor, "pos d_out"]:
    """``mlp_out - reconstruct(layer, acts, x)``: what the transcoders miss at ``layer`` on a run
    whose true MLP output is ``mlp_out``."""
    return mlp_out - spliced(transcoders, layer, acts, x)
