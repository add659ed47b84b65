"""Safetensors files as memory-mapped tensors, and a writer that streams tensors row block by row
block, so neither reading nor writing a 20 GB tensor holds it in memory.

A safetensors file is ``u64 header length | JSON header | data``; the header maps each tensor to
``{"dtype", "shape", "data_offsets": [begin, end]}`` relative to the data. :class:`MappedFile`
checks the header against the file's size (a file cut off mid-download is named as such), maps
the file read-only (copy-on-write, so a stray write never reaches the disk) and hands out
zero-copy CPU views; :meth:`MappedFile.release` drops the pages read so far from this process'
resident memory (they stay in the OS page cache and come back on the next access).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import torch

from tl_circuits.errors import FileFormatError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 2**20


class MappedFile:
    """One safetensors file, memory-mapped; tensors are views into the mapping.

    Example:
        >>> import tempfile, torch
        >>> from safetensors.torch import save_file
        >>> path = tempfile.mkdtemp() + "/w.safetensors"
        >>> save_file({"W": torch.arange(6.0).reshape(2, 3)}, path)
        >>> MappedFile(path).view("W")[1]
        tensor([3., 4., 5.])
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.header, self._data_start = read_header(self.path)
        self._map: mmap.mmap | None = None

    def keys(self) -> list[str]:
        return [k for k in self.header if k != "__metadata__"]

    def metadata(self) -> dict[str, str]:
        return dict(self.header.get("__metadata__") or {})

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._entry(key)["shape"])

    def dtype(self, key: str) -> torch.dtype:
        return DTYPES[self._entry(key)["dtype"]]

    def nbytes(self, key: str) -> int:
        begin, end = self._entry(key)["data_offsets"]
        return end - begin

    def view(self, key: str) -> torch.Tensor:
        """A zero-copy CPU view of tensor ``key`` (pages are read from disk on first touch)."""
        entry = self._entry(key)
        begin, end = entry["data_offsets"]
        dtype = DTYPES[entry["dtype"]]
        shape = tuple(entry["shape"])
        if end == begin:
            return torch.empty(shape, dtype=dtype)
        if self._map is None:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        offset = self._data_start + begin
        itemsize = torch.empty((), dtype=dtype).element_size()
        if offset % itemsize:  # unaligned data (hand-written files): one copy of this tensor
            raw = torch.frombuffer(self._map, dtype=torch.uint8, count=end - begin, offset=offset)
            return raw.clone().view(dtype).reshape(shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flat = torch.frombuffer(self._map, dtype=dtype, count=(end - begin) // itemsize,
                                    offset=offset)
        return flat.view(shape)

    def read(self, key: str) -> torch.Tensor:
        """Tensor ``key`` copied into memory."""
        out = self.view(key).clone()
        self.release()
        return out

    def release(self) -> None:
        """Drop the mapped pages from this process' resident memory (they are re-read on demand)."""
        advice = getattr(mmap, "MADV_DONTNEED", None)
        if self._map is not None and advice is not None:
            self._map.madvise(advice)

    def _entry(self, key: str) -> dict:
        try:
            return self.header[key]
        except KeyError:
            raise FileFormatError(
                f"{self.path} has no tensor {key!r} (it holds {sorted(self.keys())}); check that "
                "the file belongs to this release, or re-download it."
            ) from None


def read_header(path: Path) -> tuple[dict, int]:
    """(header dict, byte offset of the data) of a safetensors file, checked against its size."""
    if not path.is_file():
        raise FileFormatError(f"{path} does not exist; check the path or download the file.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise FileFormatError(f"{path} is {size} bytes, too short for a safetensors file; "
                                  "it was cut off or is not safetensors: delete it and download again.")
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_HEADER or 8 + length > size:
            raise FileFormatError(
                f"{path} is not a complete safetensors file (header of {length} bytes, file of "
                f"{size} bytes): it was cut off mid-download or is another format; delete it and "
                "download it again."
            )
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FileFormatError(f"{path} has a corrupt safetensors header ({exc}); download it again.") from exc
    data = size - 8 - length
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        end = entry.get("data_offsets", [0, 0])[1]
        if entry.get("dtype") not in DTYPES:
            raise FileFormatError(f"{path}: tensor {key!r} has dtype {entry.get('dtype')!r}, which "
                                  f"tl_circuits does not read (known: {sorted(DTYPES)}).")
        if end > data:
            raise FileFormatError(
                f"{path} is truncated: tensor {key!r} ends at byte {8 + length + end} but the file "
                f"has {size} bytes (a download cut off?). Delete it and download it again."
            )
    return header, 8 + length


def _entries(tensors: Iterable[tuple[str, torch.dtype, tuple[int, ...]]]) -> tuple[dict, int]:
    header: dict = {}
    offset = 0
    for key, dtype, shape in tensors:
        n = 1
        for s in shape:
            n *= s
        size = n * torch.empty((), dtype=dtype).element_size()
        header[key] = {"dtype": NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    return header, offset


class StreamWriter:
    """Write a safetensors file tensor by tensor, each as a sequence of row blocks.

    Declare every tensor up front (name, dtype, shape), then :meth:`write` the blocks of each in
    order; :meth:`close` checks that every byte was written. The file is only complete when
    closed: write into a temporary folder and rename it (``tl_circuits._atomic``).
    """

    def __init__(self, path: str | os.PathLike[str], tensors: list[tuple[str, torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None):
        header, self._total = _entries(tensors)
        if metadata:
            header["__metadata__"] = metadata
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # the data starts 8-aligned, as safetensors writes it
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._file.write(struct.pack("<Q", len(blob)) + blob)
        self._order = [(k, dtype) for k, dtype, _ in tensors]
        self._written = 0
        self._dtypes = dict(self._order)

    def write(self, key: str, block: torch.Tensor) -> None:
        """Append ``block`` (the next rows of tensor ``key``) in that tensor's dtype."""
        data = block.detach().to(device="cpu", dtype=self._dtypes[key]).contiguous()
        self._file.write(data.reshape(-1).view(torch.uint8).numpy().data)
        self._written += data.numel() * data.element_size()

    def abort(self) -> None:
        """Close without checking (the caller is failing; its temporary folder is removed)."""
        self._file.close()

    def close(self) -> None:
        self._file.close()
        if self._written != self._total:
            raise FileFormatError(f"internal: wrote {self._written} of {self._total} data bytes.")


def row_blocks(n_rows: int, row_bytes: int, block_bytes: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row ranges of at most ``block_bytes`` (at least one row each)."""
    step = max(1, block_bytes // max(1, row_bytes))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)
