"""Write any release as memory-mappable safetensors, streaming and atomically: the format
``tl-circuits transcoders convert`` writes and :class:`~tl_circuits.transcoders.lazy.LazyTranscoders`
reads fastest (one encoder direction and one decoder row per row, so a row gather is one read).

The layout is circuit-tracer's (its loaders read the tensors), plus a ``config.yaml`` (written as
JSON, which YAML reads) whose ``tl_circuits`` block keeps what circuit-tracer's keys cannot say
exactly (the activation as tl_circuits names it, every layer's sites)::

    per-layer:    layer_{l}.safetensors   W_enc [d_sae, d_in], W_dec [d_sae, d_out], b_enc, b_dec,
                                          activation_function.threshold, W_skip [d_out, d_in]
    cross-layer:  W_enc_{l}.safetensors   W_enc_{l} [d_sae, d_in], b_enc_{l}, b_dec_{l},
                                          threshold_{l}, W_skip_{l} [d_in, d_out]
                  W_dec_{l}.safetensors   W_dec_{l} [d_sae, L - l, d_out]

Everything goes to a temporary folder beside the target, renamed into place when complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tl_circuits._atomic import atomic_path
from tl_circuits.transcoders.hook_vocabulary import split_hook
from tl_circuits.transcoders.releases.layout import ReleaseSpec, TensorRef
from tl_circuits.transcoders.releases.safetensors_map import StreamWriter, row_blocks

FORMAT_VERSION = 1
BLOCK_BYTES = 64 * 2**20
#: tl_circuits activation -> the word circuit-tracer's config uses for the closest one.
_CIRCUIT_TRACER_ACTIVATION = {"relu": "relu", "jumprelu": "jumprelu", "jumprelu_signed": "jumprelu",
                              "topk": "topk", "topk_signed": "topk"}


def write_release(
    spec: ReleaseSpec,
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    block_bytes: int = BLOCK_BYTES,
) -> None:
    """Write ``spec`` to folder ``path`` (see the module docstring); ``dtype`` casts on the way."""
    clt = spec.kind == "cross_layer"
    total = sum(ref.nbytes(spec.files) for lr in spec.layers.values() for _, ref in lr.refs())
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="converting transcoders", disable=not progress)
    with atomic_path(path, directory=True) as tmp:
        for la, lr in spec.layers.items():
            if clt:
                enc = {f"W_enc_{la}": lr.W_enc, f"b_enc_{la}": lr.b_enc, f"b_dec_{la}": lr.b_dec,
                       f"threshold_{la}": lr.threshold, f"W_skip_{la}": lr.W_skip}
                _write(spec, tmp / f"W_enc_{la}.safetensors", enc, dtype, bar, block_bytes,
                       transposed={f"W_skip_{la}"})
                _write(spec, tmp / f"W_dec_{la}.safetensors", {f"W_dec_{la}": lr.W_dec}, dtype, bar, block_bytes)
            else:
                tensors = {"W_enc": lr.W_enc, "W_dec": lr.W_dec, "b_enc": lr.b_enc, "b_dec": lr.b_dec,
                           "activation_function.threshold": lr.threshold, "W_skip": lr.W_skip}
                _write(spec, tmp / f"layer_{la}.safetensors", tensors, dtype, bar, block_bytes)
        write_config(spec, tmp, dtype)
    bar.close()


def _write(spec: ReleaseSpec, file: os.PathLike[str], tensors: dict[str, TensorRef | None],
           dtype: torch.dtype | None, bar: tqdm, block_bytes: int, transposed: frozenset[str] | set[str] = frozenset()) -> None:
    present = {k: ref for k, ref in tensors.items() if ref is not None}
    views = {}
    for key, ref in present.items():
        view = ref.view(spec.files)
        views[key] = view.T if key in transposed else view
    declared = [(k, dtype or v.dtype, tuple(v.shape)) for k, v in views.items()]
    writer = StreamWriter(file, declared, metadata={"format": "pt"})
    try:
        for key, view in views.items():
            if view.dim() == 0:
                writer.write(key, view)
                continue
            row_bytes = max(1, view[0].numel()) * view.element_size()
            for start, stop in row_blocks(view.shape[0], row_bytes, block_bytes):
                writer.write(key, view[start:stop])
                spec.files.release()
                bar.update((stop - start) * row_bytes)
    except BaseException:
        writer.abort()
        raise
    writer.close()


def write_config(spec: ReleaseSpec, folder: Path, dtype: torch.dtype | None = None) -> None:
    """Write ``folder/config.yaml`` for the tensors of ``spec`` written there in this layout."""
    (folder / "config.yaml").write_text(json.dumps(config_for(spec, dtype), indent=2) + "\n", encoding="utf-8")


def config_for(spec: ReleaseSpec, dtype: torch.dtype | None) -> dict:
    """The ``config.yaml`` of ``spec``: circuit-tracer's keys and the exact ``tl_circuits`` block."""
    layers = sorted(spec.layers)
    suffixes_in = {split_hook(spec.layers[la].hook_in)[1] for la in layers}
    suffixes_out = {split_hook(spec.layers[la].hook_out)[1] for la in layers}
    cfg: dict = {
        "model_kind": "cross_layer_transcoder" if spec.kind == "cross_layer" else "transcoder_set",
        "feature_input_hook": sorted(suffixes_in)[0],
        "feature_output_hook": sorted(suffixes_out)[0],
        "activation": _CIRCUIT_TRACER_ACTIVATION[spec.activation],
    }
    if spec.k is not None:
        cfg["k"] = spec.k
    cfg["tl_circuits"] = {
        "format_version": FORMAT_VERSION,
        "activation": spec.activation,
        "k": spec.k,
        "layers": layers,
        "hook_in": {str(la): spec.layers[la].hook_in for la in layers},
        "hook_out": {str(la): spec.layers[la].hook_out for la in layers},
        "dtype": str(dtype or spec.dtype()).removeprefix("torch."),
        "converted_from": spec.source,
    }
    return cfg
