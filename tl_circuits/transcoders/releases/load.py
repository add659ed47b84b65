"""``load_transcoders``: one entry for every source of transcoders, in memory or memory-mapped;
``convert_transcoders``: any source written once as memory-mappable safetensors.

Sources, tried in this order: an object of the transcoder protocol (returned as it is); a sae_lens
release name (``ids`` choose the transcoders; converted through sae_lens when it is installed and
the set is loaded into memory, else read by tl_circuits' readers of the same files); a local path
or list of SAELens folders; a Hugging Face reference (``hf://org/repo[/path][?revision=...]``,
``org/repo[/path][@revision]``), resolved through the user's cache first.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch

from tl_circuits.errors import ConfigError, TLCircuitsError
from tl_circuits.transcoders.cross_layer import CrossLayerTranscoder
from tl_circuits.transcoders.lazy import LazyTranscoders, available_memory
from tl_circuits.transcoders.per_layer import Transcoder
from tl_circuits.transcoders.protocol import Transcoders
from tl_circuits.transcoders.releases import registry, sources
from tl_circuits.transcoders.releases.file_readers import saelens_sites
from tl_circuits.transcoders.releases.layout import ReleaseSpec, TensorRef
from tl_circuits.transcoders.releases.writer import write_release
from tl_circuits.transcoders.transcoder_set import TranscoderSet

#: ``lazy="auto"`` maps a set whose weights exceed this share of the free memory of the device.
LAZY_SHARE = 0.5
Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Any


def load_transcoders(
    source: Source,
    *,
    layers: Sequence[int] | None = None,
    ids: Sequence[str] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    lazy: bool | Literal["auto"] = "auto",
) -> Transcoders:
    """Transcoders from any source: local folders, circuit-tracer configs, Hugging Face
    references, sae_lens release names and the raw release formats behind them
    (docs/published-transcoders.md lists each family).

    Args:
        source: a SAELens folder (or a folder of them, or a list), a circuit-tracer CLT folder or
            ``config.yaml``, an ``hf://org/repo[/path][?revision=...]`` or
            ``org/repo[/path][@revision]`` reference, a sae_lens release name, or a file of a
            release (``params.npz``, ``params.safetensors``).
        layers: load only these layers of a per-layer set (a cross-layer transcoder loads whole).
        ids: for a sae_lens release, the transcoder ids (one per layer); default every id when
            the release has one per layer.
        device / dtype: where and in which dtype the set computes (default CPU and the files'
            dtype).
        lazy: ``True`` keeps the weights in memory-mapped safetensors
            (:class:`~tl_circuits.transcoders.lazy.LazyTranscoders`); ``False`` reads them into a
            ``TranscoderSet`` / ``CrossLayerTranscoder``; ``"auto"`` maps the set when it is
            larger than half of the free memory of ``device``.

    Nothing is downloaded when the files are in the Hugging Face cache; with ``HF_HUB_OFFLINE=1``
    a missing file is an error naming the command that downloads it.

    Example:
        >>> import tl_circuits
        >>> tl_circuits.load_transcoders("no/such-release@main")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tl_circuits.errors.FileFormatError: ...
    """
    if isinstance(source, Transcoders):
        return source.to(device=device, dtype=dtype)
    wanted = None if layers is None else [int(la) for la in layers]
    target = torch.device(device if device is not None else "cpu")
    release = _release(source)
    spec = None
    if release is not None and lazy is not True and release.conversion in registry.SAE_LENS_ROUTE \
            and registry.sae_lens_available():
        if lazy == "auto" and release.conversion != "gemma_2_transcoder":  # safetensors: headers only
            spec = resolve_spec(source, layers=wanted, ids=ids)
            if wants_lazy(spec, target, dtype):
                return LazyTranscoders(spec, device=target, dtype=dtype)
        loaded = _via_sae_lens(release, ids, wanted, target, dtype)
        if loaded is not None:
            return loaded
    spec = spec or resolve_spec(source, layers=wanted, ids=ids)
    return build(spec, target, dtype, lazy)


def resolve_spec(source: Source, *, layers: Sequence[int] | None = None,
                 ids: Sequence[str] | None = None) -> ReleaseSpec:
    """Where every tensor of ``source`` lives (nothing is read beyond headers and small files)."""
    wanted = None if layers is None else [int(la) for la in layers]
    release = _release(source)
    if release is not None:
        spec = registry.read_release(release, ids, wanted)
    else:
        if ids is not None:
            raise ConfigError(f"ids are for sae_lens release names; {source!r} is not one (use layers=[...]).")
        spec = sources.read_source(source, wanted)
    return spec.select(wanted).check()


def build(spec: ReleaseSpec, device: torch.device, dtype: torch.dtype | None,
          lazy: bool | Literal["auto"]) -> Transcoders:
    """The set ``spec`` describes: memory-mapped (``lazy``) or read into memory."""
    if lazy not in (True, False, "auto"):
        raise ConfigError(f"lazy must be True, False or 'auto', got {lazy!r}.")
    if lazy == "auto":
        lazy = wants_lazy(spec, device, dtype)
    if lazy:
        if not spec.mappable:
            raise ConfigError(
                f"{spec.source} is stored as npz, which cannot be memory-mapped; convert it once "
                "with `tl-circuits transcoders convert SOURCE DIR` (or "
                "tl_circuits.transcoders.convert_transcoders) and load DIR, or pass lazy=False."
            )
        return LazyTranscoders(spec, device=device, dtype=dtype)
    return materialize(spec, device, dtype)


def wants_lazy(spec: ReleaseSpec, device: torch.device, dtype: torch.dtype | None) -> bool:
    """``lazy="auto"``: a mappable set larger than :data:`LAZY_SHARE` of the free memory."""
    itemsize = torch.empty((), dtype=dtype or spec.dtype()).element_size()
    size = spec.nbytes() // spec.dtype().itemsize * itemsize
    return spec.mappable and size > LAZY_SHARE * available_memory(device)


def materialize(spec: ReleaseSpec, device: torch.device, dtype: torch.dtype | None) -> Transcoders:
    """``spec`` read into a ``TranscoderSet`` / ``CrossLayerTranscoder`` (copies, never views of
    the files)."""

    def read(ref: TensorRef | None, *, transpose: bool = False) -> torch.Tensor | None:
        if ref is None:
            return None
        t = ref.view(spec.files)
        t = t.T if transpose else t
        # a mapped tensor is copied (the set must not depend on the file); one already read
        # (npz) is used as it is, so a set is never held twice
        out = t.to(device=device, dtype=dtype or t.dtype, copy=ref.file is not None).contiguous()
        spec.files.release()
        return out

    rows = list(spec.layers.values())
    if spec.kind == "cross_layer":
        thresholds = [read(lr.threshold) for lr in rows] if rows[0].threshold is not None else None
        skips = [read(lr.W_skip) for lr in rows] if rows[0].W_skip is not None else None
        return CrossLayerTranscoder(
            W_enc=[_t(read(lr.W_enc, transpose=True)) for lr in rows],
            b_enc=[_t(read(lr.b_enc)) for lr in rows], W_dec=[_t(read(lr.W_dec)) for lr in rows],
            b_dec=[_t(read(lr.b_dec)) for lr in rows],
            hook_in=[lr.hook_in for lr in rows], hook_out=[lr.hook_out for lr in rows],
            activation=spec.activation, k=spec.k,
            threshold=None if thresholds is None else [_t(t) for t in thresholds],
            W_skip=None if skips is None else [clt_skip_argument(_t(s)) for s in skips],
        )
    return TranscoderSet([
        Transcoder(_t(read(lr.W_enc, transpose=True)), _t(read(lr.b_enc)), _t(read(lr.W_dec)),
                   _t(read(lr.b_dec)), hook_name=lr.hook_in, hook_name_out=lr.hook_out,
                   activation=spec.activation, k=spec.k,
                   threshold=read(lr.threshold),
                   W_skip=read(lr.W_skip))
        for lr in rows
    ])


def clt_skip_argument(w_skip: torch.Tensor) -> torch.Tensor:
    """The ``W_skip`` that ``CrossLayerTranscoder``'s constructor takes, from tl_circuits'
    ``[d_out, d_in]`` (``skip(x) = x @ W_skip.T``): the same layout, as every in-memory skip.
    Every CLT skip built here passes through this one function."""
    return w_skip.contiguous()


def convert_transcoders(
    source: Source,
    out: str | os.PathLike[str],
    *,
    layers: Sequence[int] | None = None,
    ids: Sequence[str] | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = True,
) -> None:
    """Write ``source`` (any source :func:`load_transcoders` reads, npz included) to folder ``out``
    as memory-mappable safetensors, streaming with a progress bar; the folder appears complete
    or not at all. ``dtype`` casts on the way (e.g. ``torch.bfloat16`` halves the size)."""
    if isinstance(source, LazyTranscoders):
        spec = source.spec
    elif isinstance(source, Transcoders):
        raise ConfigError("convert_transcoders reads sources (paths, references, release names); "
                          "an in-memory set is written by its own save(path).")
    else:
        spec = resolve_spec(source, layers=layers, ids=ids)
    write_release(spec, out, dtype=dtype, progress=progress)


def _release(source: Any) -> registry.Release | None:
    if not isinstance(source, str) or os.path.exists(source) or "/" in source or source.startswith("hf:"):
        return None
    return registry.lookup(source)


def _via_sae_lens(release: registry.Release, ids: Sequence[str] | None, layers: list[int] | None,
                  device: torch.device, dtype: torch.dtype | None) -> Transcoders | None:
    """The release through ``SAE.from_pretrained``, each converted losslessly; None (after a
    warning) when sae_lens cannot load it, so tl_circuits' readers of the same files take over."""
    from sae_lens import SAE

    from tl_circuits.transcoders import saelens_io

    out = []
    try:
        for sae_id in ids if ids is not None else registry.default_ids(release):
            layer = registry.fr.layer_in_path(release.path(sae_id) if release.paths else sae_id)
            if layers is not None and layer not in layers:
                continue
            sae = SAE.from_pretrained(release.name, sae_id, device="cpu")
            cfg, spec, tensors = saelens_io.read_sae_lens(sae)
            hook_in, hook_out = saelens_sites(cfg, spec.hook_name, spec.hook_name_out)
            cfg.setdefault("metadata", {}).update(hook_name=hook_in, hook_name_out=hook_out)
            tensors = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in tensors.items()}
            out.append(Transcoder(
                tensors["W_enc"], tensors["b_enc"], tensors["W_dec"], tensors["b_dec"],
                hook_name=hook_in, hook_name_out=hook_out, activation=spec.activation, k=spec.k,
                threshold=tensors.get("threshold"), W_skip=tensors.get("W_skip"), cfg=cfg,
            ))
    except TLCircuitsError:
        raise
    except Exception as exc:  # noqa: BLE001 - sae_lens' own failure; our readers take over
        warnings.warn(f"sae_lens could not load {release.name} ({type(exc).__name__}: {exc}); "
                      "reading its files with tl_circuits' own readers instead.", stacklevel=3)
        return None
    if not out:
        raise ConfigError(f"no transcoders of {release.name} selected (ids={ids}, layers={layers}).")
    return TranscoderSet(out)


def _t(t: torch.Tensor | None) -> torch.Tensor:
    assert t is not None
    return t
