"""TranscoderSet: one per-layer transcoder for each MLP, implementing the transcoder protocol
(:class:`~tl_circuits.transcoders.protocol.Transcoders`).

Decoder rows are returned per output layer and a reconstruction takes the activations and inputs
of every layer, as for a cross-layer transcoder; for a per-layer set, layer ``l``'s features
write only to layer ``l``::

    decoder_vectors(l, idx) = {l: W_dec[l][idx]}
    reconstruct(l, acts, x) = acts[l] @ W_dec[l] + b_dec[l] + x[l] @ W_skip[l].T
"""

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int

from tl_circuits._atomic import atomic_path
from tl_circuits.errors import ConfigError, FileFormatError
from tl_circuits.transcoders import saelens_io
from tl_circuits.transcoders.per_layer import Transcoder

PathLike = str | os.PathLike[str]


class TranscoderSet:
    """Per-layer transcoders keyed by the layer parsed from each ``hook_name``.

    Args:
        transcoders: ``Transcoder``s, or sae_lens transcoders (converted by copying, losslessly).
            At most one per layer; any order.

    Example:
        >>> import torch
        >>> def tc(l):
        ...     return Transcoder(torch.randn(8, 16), torch.zeros(16), torch.randn(16, 8),
        ...                       torch.zeros(8), hook_name=f"blocks.{l}.ln2.hook_normalized",
        ...                       hook_name_out=f"blocks.{l}.hook_mlp_out")
        >>> ts = TranscoderSet([tc(1), tc(0)])
        >>> ts.layers, ts.hook_out(1), ts.encode(0, torch.randn(3, 8)).shape
        ([0, 1], 'blocks.1.hook_mlp_out', torch.Size([3, 16]))
    """

    is_cross_layer = False

    def __init__(self, transcoders: Sequence[Transcoder | Any]) -> None:
        if isinstance(transcoders, Transcoder) or saelens_io.is_sae_lens_transcoder(transcoders):
            raise ConfigError("TranscoderSet takes a list of transcoders; wrap the one in [...].")
        by_layer: dict[int, Transcoder] = {}
        for i, item in enumerate(transcoders):
            if isinstance(item, Transcoder):
                tc = item
            elif saelens_io.is_sae_lens_transcoder(item):
                tc = Transcoder.from_sae_lens(item)
            else:
                hint = (
                    " A set of transcoders (such as a CrossLayerTranscoder) is passed on its own, "
                    "not in a list." if hasattr(item, "reconstruct") else ""
                )
                raise ConfigError(
                    f"item {i} of the list: expected a tl_circuits Transcoder or a sae_lens "
                    f"transcoder, got {type(item).__name__}.{hint}"
                )
            if tc.layer in by_layer:
                raise ConfigError(
                    f"two transcoders for layer {tc.layer}: hooks {by_layer[tc.layer].hook_name!r} "
                    f"and {tc.hook_name!r}; keep one transcoder per layer."
                )
            by_layer[tc.layer] = tc
        if not by_layer:
            raise ConfigError("TranscoderSet needs at least one transcoder, got none.")
        self._by_layer = dict(sorted(by_layer.items()))

    # ---- files -------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: PathLike | Sequence[PathLike],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> "TranscoderSet":
        """Load from a directory of per-layer sub-directories (any names), one transcoder
        directory, or a list of transcoder directories; each in SAELens format."""
        if isinstance(path, (str, os.PathLike)):
            dirs = _transcoder_dirs(Path(path))
        else:
            dirs = [Path(p) for p in path]
            if not dirs:
                raise FileFormatError("TranscoderSet.load got an empty list of directories.")
        return cls([Transcoder.load(d, device=device, dtype=dtype) for d in dirs])

    def save(self, path: PathLike) -> None:
        """Write ``path/layer_{l}/`` (SAELens format) for every layer, atomically as a whole."""
        with atomic_path(path, directory=True) as tmp:
            for layer, tc in self._by_layer.items():
                saelens_io.write_dir(tmp / f"layer_{layer}", *tc.state_for_saving())

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> "TranscoderSet":
        """This set on ``device`` in ``dtype``: a new set of new ``Transcoder`` objects (tensors
        that need no conversion are shared), or ``self`` when nothing changes. Neither this set
        nor the transcoders it holds are changed (unlike ``nn.Module.to``).

        Example:
            >>> import torch
            >>> ts = TranscoderSet([Transcoder(torch.randn(8, 16), torch.zeros(16),
            ...     torch.randn(16, 8), torch.zeros(8), hook_name="blocks.0.ln2.hook_normalized",
            ...     hook_name_out="blocks.0.hook_mlp_out")])
            >>> ts.to(dtype=torch.float64).dtype, ts.dtype
            (torch.float64, torch.float32)
        """
        old = list(self._by_layer.values())
        new = [tc.converted(device=device, dtype=dtype) for tc in old]
        if all(a is b for a, b in zip(old, new, strict=True)):
            return self
        return TranscoderSet(new)

    # ---- container ---------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        """Layers whose MLP input is read, sorted."""
        return list(self._by_layer)

    @property
    def out_layers(self) -> list[int]:
        """Layers whose MLP output is written (the same as ``layers`` for a per-layer set)."""
        return list(self._by_layer)

    def __getitem__(self, layer: int) -> "Transcoder":
        try:
            return self._by_layer[layer]
        except KeyError:
            raise KeyError(f"no transcoder for layer {layer}; this set has {self.layers}") from None

    def __len__(self) -> int:
        return len(self._by_layer)

    def __iter__(self) -> Iterator[Transcoder]:
        return iter(self._by_layer.values())

    def __contains__(self, layer: object) -> bool:
        return layer in self._by_layer

    def __repr__(self) -> str:
        return f"TranscoderSet(layers={self.layers}, d_in={self.d_in}, d_out={self.d_out})"

    # ---- protocol read by the attribution core -------------------------------------------------
    def hook_in(self, layer: int) -> str:
        """TransformerLens hook the layer's transcoder reads, e.g. ``blocks.3.ln2.hook_normalized``."""
        return self[layer].hook_name

    def hook_out(self, layer: int) -> str:
        """TransformerLens hook the layer's reconstruction replaces, e.g. ``blocks.3.hook_mlp_out``."""
        return self[layer].hook_name_out

    @property
    def d_in(self) -> int:
        """Width of the inputs read (the same for every layer)."""
        return self._common("d_in")

    @property
    def d_out(self) -> int:
        """Width of the outputs written (the same for every layer)."""
        return self._common("d_out")

    def d_sae(self, layer: int) -> int:
        """Number of features of the layer's transcoder."""
        return self[layer].d_sae

    def has_skip(self, layer: int) -> bool:
        """Whether the layer's transcoder has a skip term ``W_skip [d_out, d_in]``."""
        return self[layer].has_skip

    def pre_activation(
        self, layer: int, x: Float[torch.Tensor, "... d_in"]
    ) -> Float[torch.Tensor, "... d_sae"]:
        """``x @ W_enc + b_enc`` of the layer's transcoder."""
        return self[layer].pre_activation(x)

    def encode(
        self, layer: int, x: Float[torch.Tensor, "... d_in"]
    ) -> Float[torch.Tensor, "... d_sae"]:
        """Feature activations of the layer's transcoder."""
        return self[layer].encode(x)

    def W_enc(self, layer: int) -> Float[torch.Tensor, "d_in d_sae"]:
        """The encoder ``[d_in, d_sae]`` of the layer's transcoder (``self[layer].W_enc``)."""
        return self[layer].W_enc

    def encoder_rows(self, layer: int, feature_idx: Int[torch.Tensor, " n"]) -> Float[torch.Tensor, "n d_in"]:
        """Encoder directions of features ``feature_idx`` of ``layer``."""
        W = self[layer].W_enc
        return W[:, feature_idx.to(W.device)].T

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the weights (of the first layer's transcoder)."""
        return next(iter(self._by_layer.values())).W_enc.dtype

    @property
    def device(self) -> torch.device:
        """Device of the weights (of the first layer's transcoder)."""
        return next(iter(self._by_layer.values())).W_enc.device

    def decoder_vectors(
        self, layer: int, feature_idx: Int[torch.Tensor, " n"]
    ) -> dict[int, Float[torch.Tensor, "n d_out"]]:
        """Decoder rows of features ``feature_idx`` of ``layer``, keyed by the layer they write to."""
        return {layer: self[layer].W_dec[feature_idx]}

    def skip(
        self, out_layer: int, x: Float[torch.Tensor, "... d_in"]
    ) -> Float[torch.Tensor, "... d_out"]:
        """``x @ W_skip.T`` for the transcoder writing ``out_layer`` (zeros without a skip)."""
        return self[out_layer].skip(x)

    def reconstruct(
        self,
        out_layer: int,
        acts: dict[int, Float[torch.Tensor, "... d_sae"]],
        x: dict[int, Float[torch.Tensor, "... d_in"]],
    ) -> Float[torch.Tensor, "... d_out"]:
        """Reconstruction of ``out_layer``'s MLP output from feature activations and inputs,
        each a dict keyed by layer (a per-layer set reads only ``out_layer``'s entries)."""
        tc = self[out_layer]
        return tc.decode(acts[out_layer]) + tc.skip(x[out_layer])

    def _common(self, attr: str) -> int:
        values = {layer: getattr(tc, attr) for layer, tc in self._by_layer.items()}
        if len(set(values.values())) != 1:
            raise ConfigError(
                f"transcoders disagree on {attr}: {values} (layer: {attr}); a set must read and "
                "write one residual width."
            )
        return next(iter(values.values()))


def _transcoder_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise FileFormatError(
            f"transcoder path {root} {what}; pass a folder with one SAELens sub-folder per layer, "
            "a single transcoder folder, or a list of folders."
        )
    if (root / saelens_io.CFG_FILENAME).is_file():
        return [root]
    dirs = sorted(
        d
        for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".") and (d / saelens_io.CFG_FILENAME).is_file()
    )
    if not dirs:
        raise FileFormatError(
            f"no transcoders found in {root}: expected {saelens_io.CFG_FILENAME} there or in its "
            "sub-folders (one per layer). Check the path, or save with TranscoderSet.save."
        )
    return dirs
