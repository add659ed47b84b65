"""Where each tensor of a release lives, in the orientation tl_circuits uses: the one description
every reader produces and every consumer (in-memory sets, the lazy set, the converter) reads.

Orientations (per layer ``l``; a reader records a transpose when the file stores the other one)::

    W_enc      [d_sae, d_in]          one encoder direction per row (rows are what lazy reads)
    b_enc      [d_sae]
    threshold  [d_sae]                JumpReLU only
    W_dec      [d_sae, d_out]         per-layer sets
               [d_sae, n_out, d_out]  cross-layer: slot j writes layer l + j, n_out = L - l
    b_dec      [d_out]                bias of output layer l
    W_skip     [d_out, d_in]          skip(x) = x @ W_skip.T

Nothing is read when a description is built: shapes come from safetensors headers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from tl_circuits.errors import ConfigError, FileFormatError
from tl_circuits.transcoders.activations import get_activation
from tl_circuits.transcoders.releases.safetensors_map import MappedFile

Kind = Literal["per_layer", "cross_layer"]


class Files:
    """The mapped files of one release, opened once each (and shared by sets made by ``to``)."""

    def __init__(self) -> None:
        self._open: dict[Path, MappedFile] = {}

    def __getitem__(self, path: Path) -> MappedFile:
        if path not in self._open:
            self._open[path] = MappedFile(path)
        return self._open[path]

    def release(self) -> None:
        for mapped in self._open.values():
            mapped.release()


@dataclass(frozen=True)
class TensorRef:
    """One tensor: tensor ``key`` of safetensors ``file`` (memory-mapped), or ``memory`` (a
    tensor already read, e.g. from an npz); ``transpose`` and ``slots_from`` turn the stored
    tensor into tl_circuits' orientation without copying."""

    key: str
    file: Path | None = None
    memory: torch.Tensor | None = None
    transpose: bool = False
    slots_from: int | None = None  #: keep ``[:, slots_from:, :]`` (GemmaScope 2 CLT decoders)

    def view(self, files: Files) -> torch.Tensor:
        """The tensor in tl_circuits' orientation: a view, never a copy of a mapped file."""
        t = files[self.file].view(self.key) if self.file is not None else self.memory
        assert t is not None
        if self.slots_from is not None:
            t = t[:, self.slots_from:]
        return t.T if self.transpose else t

    def shape(self, files: Files) -> tuple[int, ...]:
        if self.file is None:
            assert self.memory is not None
            shape = tuple(self.memory.shape)
        else:
            shape = files[self.file].shape(self.key)
        if self.slots_from is not None:
            shape = (shape[0], shape[1] - self.slots_from, *shape[2:])
        return shape[::-1] if self.transpose else shape

    def dtype(self, files: Files) -> torch.dtype:
        if self.file is None:
            assert self.memory is not None
            return self.memory.dtype
        return files[self.file].dtype(self.key)

    def nbytes(self, files: Files) -> int:
        n = 1
        for s in self.shape(files):
            n *= s
        return n * torch.empty((), dtype=self.dtype(files)).element_size()


@dataclass(frozen=True)
class LayerRefs:
    """The tensors and sites of one layer (see the module docstring for shapes)."""

    layer: int
    hook_in: str
    hook_out: str
    W_enc: TensorRef
    b_enc: TensorRef
    W_dec: TensorRef
    b_dec: TensorRef
    threshold: TensorRef | None = None
    W_skip: TensorRef | None = None

    def refs(self) -> Iterator[tuple[str, TensorRef]]:
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip"):
            ref = getattr(self, name)
            if ref is not None:
                yield name, ref


@dataclass
class ReleaseSpec:
    """A whole release: its layers, activation and where it came from (for messages)."""

    kind: Kind
    layers: dict[int, LayerRefs]
    activation: str
    source: str
    k: int | None = None
    files: Files = field(default_factory=Files)

    @property
    def mappable(self) -> bool:
        """Every tensor lives in a safetensors file (an npz release must be converted first)."""
        return all(ref.file is not None for lr in self.layers.values() for _, ref in lr.refs())

    def nbytes(self) -> int:
        return sum(ref.nbytes(self.files) for lr in self.layers.values() for _, ref in lr.refs())

    def dtype(self) -> torch.dtype:
        return next(iter(self.layers.values())).W_enc.dtype(self.files)

    def select(self, layers: list[int] | None) -> ReleaseSpec:
        """The same release restricted to ``layers`` (all of a cross-layer transcoder's)."""
        if layers is None:
            return self
        missing = sorted(set(layers) - set(self.layers))
        if missing:
            raise FileFormatError(
                f"{self.source} has no transcoder for layer(s) {missing}; it covers "
                f"{sorted(self.layers)}."
            )
        if self.kind == "cross_layer" and sorted(set(layers)) != sorted(self.layers):
            raise FileFormatError(
                f"{self.source} is a cross-layer transcoder: every layer's features write later "
                "layers, so it loads whole; leave layers=None."
            )
        return replace(self, layers={la: self.layers[la] for la in sorted(set(layers))})

    def check(self) -> ReleaseSpec:
        """Check that the shapes fit together; a FileFormatError naming the tensor if not."""
        try:
            activation = get_activation(self.activation)
        except ConfigError as err:
            raise ConfigError(f"{self.source} asks for an activation tl_circuits does not know: {err}") from None
        if activation.uses_k != (self.k is not None):
            raise FileFormatError(f"{self.source}: activation {self.activation!r} and k={self.k} do not fit.")
        if not self.layers:
            raise FileFormatError(f"{self.source} holds no transcoder layers.")
        first = next(iter(self.layers.values()))
        d_in = first.W_enc.shape(self.files)[1]
        d_out = first.b_dec.shape(self.files)[0]
        n = max(self.layers) + 1
        for la, lr in self.layers.items():
            d_sae = lr.W_enc.shape(self.files)[0]
            dec = (d_sae, n - la, d_out) if self.kind == "cross_layer" else (d_sae, d_out)
            want = {"W_enc": (d_sae, d_in), "b_enc": (d_sae,), "W_dec": dec, "b_dec": (d_out,),
                    "threshold": (d_sae,), "W_skip": (d_out, d_in)}
            for name, ref in lr.refs():
                if ref.shape(self.files) != want[name]:
                    raise FileFormatError(
                        f"{self.source}, layer {la}: {name} ({ref.key} in "
                        f"{ref.file or 'memory'}) has shape {ref.shape(self.files)}, expected "
                        f"{want[name]} (d_in={d_in}, d_sae={d_sae}, d_out={d_out}); the files do "
                        "not belong together. Re-download the release."
                    )
            if activation.uses_threshold != (lr.threshold is not None):
                raise FileFormatError(
                    f"{self.source}, layer {la}: activation {self.activation!r} "
                    f"{'needs' if lr.threshold is None else 'does not use'} a threshold tensor."
                )
        if self.kind == "cross_layer" and sorted(self.layers) != list(range(n)):
            raise FileFormatError(f"{self.source}: a cross-layer transcoder needs layers 0..{n - 1}, "
                                  f"found {sorted(self.layers)}.")
        return self
