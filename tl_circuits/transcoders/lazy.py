"""LazyTranscoders: a per-layer or cross-layer set whose weights stay in memory-mapped safetensors
files, so a set larger than the host's memory can be traced.

What each protocol member reads (``n`` features asked for, ``N`` input rows)::

    encode / pre_activation   x @ W_enc.T + b_enc, over row blocks of W_enc of ``chunk_bytes``
                              read from the mapped file (on the CPU the product reads the
                              pages in place), or the whole encoder once cached
                              (``encoder_cache_bytes``)
    encoder_rows(l, idx)      the n rows of W_enc[l]
    decoder_vectors(l, idx)   the n rows of W_dec[l] (for a CLT, one [n, d_out] block per
                              output layer)
    reconstruct(m, acts, x)   only the decoder rows of features active somewhere in ``acts``:
                              acts[:, active] @ W_dec[active] + b_dec (+ skip)

Biases, thresholds and skip matrices (``d_out x d_in``) are small and held in memory. Pages read
from the files are dropped from this process' resident memory after each use (the OS page cache
keeps them while it has room), so peak memory is the encoder cache plus one block (on the CPU,
no cache by default). ``to`` returns
a new set reading the same mapped files, computing on another device or in another dtype.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int

from tl_circuits.errors import ConfigError
from tl_circuits.transcoders.activations import get_activation
from tl_circuits.transcoders.releases.layout import ReleaseSpec
from tl_circuits.transcoders.releases.safetensors_map import row_blocks

#: Rows of an encoder read per step when it is applied from disk.
CHUNK_BYTES = 64 * 2**20
#: Share of a CUDA device's free memory that cached encoders may take by default. On the CPU the
#: default is no cache: the OS page cache keeps the files' pages while it has room, without
#: counting them against the process.
CACHE_SHARE = 0.5


def available_memory(device: torch.device) -> int:
    """Bytes free on ``device``: CUDA's free memory, or the host's ``MemAvailable``."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**30


class LazyTranscoders:
    """A transcoder set read from memory-mapped safetensors (see the module docstring).

    Made by :func:`tl_circuits.load_transcoders` (``lazy=True``, or by default when a set is too
    big for memory); any release it reads works, in either kind (``is_cross_layer``).

    Args:
        spec: where each tensor lives (:class:`~tl_circuits.transcoders.releases.layout.ReleaseSpec`).
        device / dtype: where and in which dtype to compute (default CPU and the files' dtype).
        chunk_bytes: bytes of encoder rows read per step when the encoder is not cached.
        encoder_cache_bytes: encoders (in ``dtype`` on ``device``) kept in memory after their
            first use, up to this many bytes in all; default none on the CPU (the OS page cache
            serves repeated reads) and half of the free memory of a CUDA device (so a set that
            suits the GPU but not the host reads each encoder from disk once).
    """

    def __init__(
        self,
        spec: ReleaseSpec,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        encoder_cache_bytes: int | None = None,
    ) -> None:
        self._spec = spec
        self._files = spec.files
        self._device = torch.device(device if device is not None else "cpu")
        self._dtype = dtype if dtype is not None else spec.dtype()
        self._chunk_bytes = int(chunk_bytes)
        self._cache_arg = encoder_cache_bytes
        if encoder_cache_bytes is None:
            on_gpu = self._device.type == "cuda"
            encoder_cache_bytes = int(CACHE_SHARE * available_memory(self._device)) if on_gpu else 0
        self._cache_left = int(encoder_cache_bytes)
        self._encoders: dict[int, torch.Tensor] = {}
        self._n = max(spec.layers) + 1
        self._small: dict[tuple[int, str], torch.Tensor] = {}
        for la, lr in spec.layers.items():
            for name in ("b_enc", "b_dec", "threshold", "W_skip"):
                ref = getattr(lr, name)
                if ref is not None:
                    self._small[la, name] = ref.view(self._files).to(self._device, self._dtype).clone()
        self._files.release()

    # ---- sizes and sites ---------------------------------------------------------------------
    @property
    def is_cross_layer(self) -> bool:
        return self._spec.kind == "cross_layer"

    @property
    def activation(self) -> str:
        return self._spec.activation

    @property
    def k(self) -> int | None:
        return self._spec.k

    @property
    def spec(self) -> ReleaseSpec:
        """Where the tensors live (read-only)."""
        return self._spec

    @property
    def layers(self) -> list[int]:
        return sorted(self._spec.layers)

    @property
    def out_layers(self) -> list[int]:
        return list(range(self._n)) if self.is_cross_layer else self.layers

    @property
    def d_in(self) -> int:
        return self._spec.layers[self.layers[0]].W_enc.shape(self._files)[1]

    @property
    def d_out(self) -> int:
        return self._spec.layers[self.layers[0]].b_dec.shape(self._files)[0]

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    def d_sae(self, layer: int) -> int:
        return self._layer(layer).W_enc.shape(self._files)[0]

    def hook_in(self, layer: int) -> str:
        return self._layer(layer).hook_in

    def hook_out(self, layer: int) -> str:
        return self._layer(layer).hook_out

    def has_skip(self, layer: int) -> bool:
        return (layer, "W_skip") in self._small

    def __contains__(self, layer: object) -> bool:
        return layer in self._spec.layers

    def __len__(self) -> int:
        return len(self._spec.layers)

    def __repr__(self) -> str:
        kind = "cross-layer" if self.is_cross_layer else "per-layer"
        return (f"LazyTranscoders({kind}, layers={self.layers}, d_in={self.d_in}, "
                f"activation={self.activation!r}, device={self._device}, dtype={self._dtype}, "
                f"source={self._spec.source!r})")

    # ---- encoders ----------------------------------------------------------------------------
    def pre_activation(
        self, layer: int, x: Float[torch.Tensor, "... d_in"]
    ) -> Float[torch.Tensor, "... d_sae"]:
        """``x @ W_enc[layer].T + b_enc[layer]``, the encoder read in row blocks when not cached."""
        if x.shape[-1] != self.d_in:
            raise ConfigError(f"layer {layer} expects inputs with d_in={self.d_in}, got shape {tuple(x.shape)}.")
        flat = x.reshape(-1, self.d_in).to(self._device, self._dtype)
        cached = self._cached_encoder(layer)
        if cached is not None:
            pre = flat @ cached.T
        else:
            pre = torch.cat([flat @ block.T for block in self._encoder_blocks(layer)], dim=-1)
        pre = pre + self._small[layer, "b_enc"]
        return pre.reshape(*x.shape[:-1], pre.shape[-1])

    def encode(self, layer: int, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_sae"]:
        """Feature activations of ``layer`` for inputs ``x``."""
        return get_activation(self.activation)(
            self.pre_activation(layer, x), threshold=self._small.get((layer, "threshold")), k=self.k)

    def encoder_rows(
        self, layer: int, feature_idx: Int[torch.Tensor, " n"]
    ) -> Float[torch.Tensor, "n d_in"]:
        """Encoder directions of features ``feature_idx`` of ``layer``: only those rows are read."""
        cached = self._encoders.get(layer)
        if cached is not None:
            return cached[feature_idx.to(cached.device)]
        rows = self._layer(layer).W_enc.view(self._files).index_select(0, feature_idx.cpu())
        self._files.release()
        return rows.to(self._device, self._dtype)

    def W_enc(self, layer: int) -> _EncoderColumns:
        """``W_enc[layer]`` as ``[d_in, d_sae]`` for code that indexes columns (``[:, i]``), read
        column by column; prefer :meth:`encoder_rows`."""
        return _EncoderColumns(self, layer)

    def _cached_encoder(self, layer: int) -> torch.Tensor | None:
        if layer in self._encoders:
            return self._encoders[layer]
        d_sae = self.d_sae(layer)
        size = d_sae * self.d_in * torch.empty((), dtype=self._dtype).element_size()
        if size > self._cache_left:
            return None
        full = torch.empty(d_sae, self.d_in, device=self._device, dtype=self._dtype)
        start = 0
        for block in self._encoder_blocks(layer):
            full[start:start + block.shape[0]] = block
            start += block.shape[0]
        self._encoders[layer] = full
        self._cache_left -= size
        return full

    def _encoder_blocks(self, layer: int) -> Iterator[torch.Tensor]:
        ref = self._layer(layer).W_enc
        view = ref.view(self._files)
        row_bytes = view.shape[1] * view.element_size()
        try:
            for start, stop in row_blocks(view.shape[0], row_bytes, self._chunk_bytes):
                yield view[start:stop].to(self._device, self._dtype)
                self._files.release()
        finally:
            self._files.release()

    # ---- decoders ----------------------------------------------------------------------------
    def decoder_vectors(
        self, layer: int, feature_idx: Int[torch.Tensor, " n"]
    ) -> dict[int, Float[torch.Tensor, "n d_out"]]:
        """Decoder rows of features ``feature_idx`` of ``layer``, keyed by the layer they write."""
        rows = self._layer(layer).W_dec.view(self._files).index_select(0, feature_idx.cpu())
        self._files.release()
        rows = rows.to(self._device, self._dtype)
        if not self.is_cross_layer:
            return {layer: rows}
        return {layer + j: rows[:, j] for j in range(rows.shape[1])}

    def skip(self, out_layer: int, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_out"]:
        """``x @ W_skip[out_layer].T`` (zeros without a skip)."""
        W = self._small.get((out_layer, "W_skip"))
        if W is None:
            return torch.zeros((*x.shape[:-1], self.d_out), device=self._device, dtype=self._dtype)
        return x.to(W.device, W.dtype) @ W.T

    def reconstruct(
        self,
        out_layer: int,
        acts: dict[int, Float[torch.Tensor, "... d_sae"]],
        x: dict[int, Float[torch.Tensor, "... d_in"]],
    ) -> Float[torch.Tensor, "... d_out"]:
        """Reconstruction of ``out_layer``'s MLP output, reading the decoder rows of the features
        that are nonzero somewhere in ``acts`` only."""
        writers = [la for la in self.layers if la <= out_layer] if self.is_cross_layer else [out_layer]
        missing = [la for la in writers if la not in acts]
        if missing:
            raise ConfigError(f"reconstructing layer {out_layer} needs activations of layers {missing}.")
        lead = acts[writers[0]].shape[:-1]
        out = self._small[out_layer, "b_dec"].expand(*lead, self.d_out).clone()
        for la in writers:
            a = acts[la].reshape(-1, acts[la].shape[-1]).to(self._device, self._dtype)
            active = a.ne(0).any(0).nonzero().squeeze(1)
            if active.numel() == 0:
                continue
            dec = self._layer(la).W_dec.view(self._files)
            if self.is_cross_layer:
                dec = dec[:, out_layer - la]
            rows = dec.index_select(0, active.cpu()).to(self._device, self._dtype)
            out = out + (a[:, active] @ rows).reshape(*lead, self.d_out)
        self._files.release()
        if self.has_skip(out_layer) and out_layer in x:
            out = out + self.skip(out_layer, x[out_layer])
        return out

    # ---- copies and files --------------------------------------------------------------------
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LazyTranscoders:
        """A lazy set on ``device`` in ``dtype`` reading the same files (this one if nothing changes)."""
        new_device = torch.device(device) if device is not None else self._device
        new_dtype = dtype or self._dtype
        if new_device == self._device and new_dtype == self._dtype:
            return self
        return LazyTranscoders(self._spec, device=new_device, dtype=new_dtype,
                               chunk_bytes=self._chunk_bytes, encoder_cache_bytes=self._cache_arg)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the set as memory-mappable safetensors (what ``tl-circuits transcoders convert``
        writes), streaming, atomically."""
        from tl_circuits.transcoders.releases.writer import write_release

        write_release(self._spec, path, progress=False)

    def __getstate__(self) -> dict:
        raise ConfigError(
            "a memory-mapped transcoder set cannot be pickled or sent elsewhere (e.g. to a remote "
            "nnsight server): its weights stay in files on this machine. Load it with lazy=False, "
            "or load the same source where the model runs."
        )

    def _layer(self, layer: int) -> Any:
        try:
            return self._spec.layers[layer]
        except KeyError:
            raise KeyError(f"no transcoder for layer {layer}; this set has {self.layers}") from None


class _EncoderColumns:
    """``W_enc(layer)`` of a lazy set: ``[:, idx]`` reads those encoder directions only."""

    def __init__(self, owner: LazyTranscoders, layer: int):
        self._owner, self._layer = owner, layer
        self.dtype, self.device = owner.dtype, owner.device
        self.shape = torch.Size((owner.d_in, owner.d_sae(layer)))

    def __getitem__(self, index: Any) -> torch.Tensor:
        if not (isinstance(index, tuple) and len(index) == 2 and index[0] == slice(None)):
            raise TypeError("a lazy encoder supports W_enc(layer)[:, idx] only; use encoder_rows(layer, idx).")
        idx = torch.as_tensor(index[1], dtype=torch.long)
        rows = self._owner.encoder_rows(self._layer, idx.reshape(-1))
        return rows.T if idx.dim() else rows[0]
