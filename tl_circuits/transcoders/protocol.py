"""The transcoder protocol: what the replacement model, attribution, interventions, training and
dashboards read from a set of transcoders, whatever its kind.

A set reads each covered layer's MLP input (``hook_in(l)``), has ``d_sae(l)`` features there, and
writes MLP outputs (``hook_out(m)`` for ``m`` in ``out_layers``). A per-layer set's features write
only their own layer; a cross-layer transcoder's features write their layer and every later one.
For output layer ``m``, with ``acts[l]`` the activations of layer ``l`` and ``x[l]`` its input::

    reconstruct(m, acts, x) = sum over writing layers l of acts[l] @ W_dec[l -> m] + b_dec[m]
                              + x[m] @ W_skip[m].T          (W_skip is [d_out, d_in] in memory)

Implementations: :class:`~tl_circuits.transcoders.TranscoderSet` (per-layer),
:class:`~tl_circuits.transcoders.CrossLayerTranscoder`, and any object with these members
(memory-mapped sets, converted releases). None of them inherits from another. Their activation
functions come from one registry, :mod:`~tl_circuits.transcoders.activations`.
``to(device, dtype)`` returns a new object and never changes the one it is called on, so a
library function that casts the user's transcoders leaves them as they were.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int

from ..errors import ConfigError


@runtime_checkable
class Transcoders(Protocol):
    """A set of transcoders over some layers of one model (see the module docstring)."""

    @property
    def layers(self) -> list[int]:
        """Layers whose MLP input the set reads (where its features live), sorted."""
        ...

    @property
    def out_layers(self) -> list[int]:
        """Layers whose MLP output the set writes, sorted."""
        ...

    @property
    def d_in(self) -> int: ...

    @property
    def d_out(self) -> int: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def d_sae(self, layer: int) -> int:
        """Number of features of ``layer``."""
        ...

    def hook_in(self, layer: int) -> str:
        """TransformerLens name of the site ``layer``'s features read (e.g. ``blocks.3.ln2.hook_normalized``)."""
        ...

    def hook_out(self, layer: int) -> str:
        """TransformerLens name of the site the reconstruction of ``layer`` replaces (``blocks.3.hook_mlp_out``)."""
        ...

    def has_skip(self, layer: int) -> bool:
        """Whether the reconstruction of output layer ``layer`` has a linear skip term."""
        ...

    def pre_activation(
        self, layer: int, x: Float[torch.Tensor, "... d_in"]
    ) -> Float[torch.Tensor, "... d_sae"]:
        """``x @ W_enc[layer] + b_enc[layer]``."""
        ...

    def encode(self, layer: int, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_sae"]:
        """Feature activations of ``layer`` for inputs ``x``."""
        ...

    def encoder_rows(
        self, layer: int, feature_idx: Int[torch.Tensor, " n"]
    ) -> Float[torch.Tensor, "n d_in"]:
        """Encoder directions (``W_enc[layer][:, feature_idx].T``) of some features: their read-outs."""
        ...

    def decoder_vectors(
        self, layer: int, feature_idx: Int[torch.Tensor, " n"]
    ) -> dict[int, Float[torch.Tensor, "n d_out"]]:
        """Decoder rows of features ``feature_idx`` of ``layer``, keyed by the layer they write."""
        ...

    def skip(self, out_layer: int, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_out"]:
        """``x @ W_skip[out_layer].T`` (zeros without a skip)."""
        ...

    def reconstruct(
        self,
        out_layer: int,
        acts: dict[int, Float[torch.Tensor, "... d_sae"]],
        x: dict[int, Float[torch.Tensor, "... d_in"]],
    ) -> Float[torch.Tensor, "... d_out"]:
        """Reconstruction of ``out_layer``'s MLP output from the activations and inputs of the
        layers that write it (dicts keyed by layer)."""
        ...

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Transcoders:
        """A set on ``device`` in ``dtype``; a new object (or this one when nothing changes),
        never this one changed."""
        ...

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the set to ``path`` atomically, in its own file format."""
        ...


def as_transcoders(obj: Any) -> Transcoders:
    """``obj`` as a :class:`Transcoders`: an object of the protocol is returned as it is; a list of
    per-layer transcoders (tl_circuits ``Transcoder`` or sae_lens transcoders) becomes a
    :class:`~tl_circuits.transcoders.TranscoderSet`. Anything else is a ConfigError saying what
    would work.

    Example:
        >>> as_transcoders(42)
        Traceback (most recent call last):
        ...
        tl_circuits.errors.ConfigError: expected transcoders, got int; pass a TranscoderSet, a CrossLayerTranscoder, a list of per-layer transcoders (tl_circuits or sae_lens) or the result of tl_circuits.load_transcoders(...)
    """
    if isinstance(obj, Transcoders):
        return obj
    from .per_layer import Transcoder
    from .saelens_io import is_sae_lens_transcoder
    from .transcoder_set import TranscoderSet

    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        if len(obj) == 0:
            raise ConfigError(
                f"expected transcoders, got an empty {type(obj).__name__}; pass at least one "
                "transcoder (a list with one per-layer transcoder per layer), a TranscoderSet or a "
                "CrossLayerTranscoder"
            )
        return TranscoderSet(list(obj))
    if isinstance(obj, Transcoder) or is_sae_lens_transcoder(obj):
        return TranscoderSet([obj])
    raise ConfigError(
        f"expected transcoders, got {type(obj).__name__}; pass a TranscoderSet, a "
        "CrossLayerTranscoder, a list of per-layer transcoders (tl_circuits or sae_lens) or the "
        "result of tl_circuits.load_transcoders(...)"
    )
