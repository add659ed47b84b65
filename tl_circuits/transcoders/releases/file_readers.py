"""Readers of one layer's files, one per on-disk layout. Each returns the layer's tensors as
:class:`~.layout.TensorRef` s in tl_circuits' orientation, recording a transpose instead of
making one; only safetensors headers are read (an npz is read whole: it cannot be mapped).

Layouts (``d_in``: the width read, ``d_out``: the width written, ``d_sae``: features)::

    circuit-tracer per-layer (also Hanna's Qwen3 and the Llama-3.2-1B sets): one .safetensors,
        W_enc [d_sae, d_in], W_dec [d_sae, d_out], b_enc, b_dec,
        activation_function.threshold [d_sae] (JumpReLU), W_skip [d_out, d_in]
    circuit-tracer cross-layer (mntss CLTs): per layer W_enc_{l}.safetensors with W_enc_{l}
        [d_sae, d_in], b_enc_{l}, b_dec_{l}, threshold_{l}, W_skip_{l} [d_in, d_out], and
        W_dec_{l}.safetensors with W_dec_{l} [d_sae, L - l, d_out]
    GemmaScope (Gemma-2 transcoders): params.npz, W_enc [d_in, d_sae], W_dec [d_sae, d_out],
        b_enc, b_dec, threshold
    GemmaScope 2 (Gemma-3): params.safetensors, w_enc [d_in, d_sae], w_dec [d_sae, d_out],
        b_enc, b_dec, threshold, affine_skip_connection [d_in, d_out] (affine variants);
        cross-layer: layer_{l}.safetensors with w_dec [d_sae, L, d_out], slots l.. used
    SAELens folder: cfg.json + sae_weights.safetensors, W_enc [d_in, d_sae], W_dec [d_sae,
        d_out], b_enc, b_dec, threshold, W_skip [d_out, d_in]
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tl_circuits.errors import FileFormatError
from tl_circuits.transcoders import saelens_io
from tl_circuits.transcoders.hook_vocabulary import canonical_hook
from tl_circuits.transcoders.releases.layout import LayerRefs, TensorRef
from tl_circuits.transcoders.releases.safetensors_map import MappedFile

_LAYER = re.compile(r"layer_(\d+)")


def layer_in_path(path: str) -> int | None:
    """The layer named in a release path (``layer_12/width_16k/...`` -> 12), or None."""
    found = _LAYER.findall(path)
    return int(found[-1]) if found else None


def _require(path: Path, keys: Iterable[str], needed: list[str], what: str) -> None:
    missing = [k for k in needed if k not in set(keys)]
    if missing:
        raise FileFormatError(
            f"{path} lacks {missing} (found {sorted(keys)}), which a {what} needs; the file is "
            "incomplete or of another layout. Re-download it, or check which release it is."
        )


def safetensors_keys(path: Path) -> list[str]:
    return MappedFile(path).keys()


def circuit_tracer_layer(path: Path, layer: int, hook_in: str, hook_out: str) -> LayerRefs:
    """A circuit-tracer per-layer file (see the module docstring)."""
    keys = safetensors_keys(path)
    _require(path, keys, ["W_enc", "W_dec", "b_enc", "b_dec"], "circuit-tracer per-layer transcoder")
    threshold = next((k for k in ("activation_function.threshold", "threshold") if k in keys), None)
    return LayerRefs(
        layer, hook_in, hook_out, W_enc=TensorRef("W_enc", path), b_enc=TensorRef("b_enc", path),
        W_dec=TensorRef("W_dec", path), b_dec=TensorRef("b_dec", path),
        threshold=None if threshold is None else TensorRef(threshold, path),
        W_skip=TensorRef("W_skip", path) if "W_skip" in keys else None,
    )


def circuit_tracer_clt_layer(enc: Path, dec: Path, layer: int, hook_in: str, hook_out: str) -> LayerRefs:
    """Layer ``layer`` of a circuit-tracer cross-layer transcoder (its two files)."""
    keys = safetensors_keys(enc)
    names = [f"W_enc_{layer}", f"b_enc_{layer}", f"b_dec_{layer}"]
    _require(enc, keys, names, "circuit-tracer CLT encoder file")
    _require(dec, safetensors_keys(dec), [f"W_dec_{layer}"], "circuit-tracer CLT decoder file")
    return LayerRefs(
        layer, hook_in, hook_out, W_enc=TensorRef(names[0], enc), b_enc=TensorRef(names[1], enc),
        W_dec=TensorRef(f"W_dec_{layer}", dec), b_dec=TensorRef(names[2], enc),
        threshold=TensorRef(f"threshold_{layer}", enc) if f"threshold_{layer}" in keys else None,
        W_skip=(TensorRef(f"W_skip_{layer}", enc, transpose=True)
                if f"W_skip_{layer}" in keys else None),
    )


def gemmascope_npz_layer(path: Path, layer: int, hook_in: str, hook_out: str) -> LayerRefs:
    """A GemmaScope ``params.npz`` (read into memory; no pickle is ever loaded)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise FileFormatError(
            f"{path} is not a readable npz ({type(exc).__name__}: {exc}); it was cut off "
            "mid-download or is another format. Delete it and download it again."
        ) from exc
    _require(path, arrays, ["W_enc", "W_dec", "b_enc", "b_dec", "threshold"], "GemmaScope transcoder (params.npz)")
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    return LayerRefs(
        layer, hook_in, hook_out, W_enc=TensorRef("W_enc", memory=t["W_enc"], transpose=True),
        b_enc=TensorRef("b_enc", memory=t["b_enc"]), W_dec=TensorRef("W_dec", memory=t["W_dec"]),
        b_dec=TensorRef("b_dec", memory=t["b_dec"]), threshold=TensorRef("threshold", memory=t["threshold"]),
    )


def gemmascope2_layer(
    path: Path, layer: int, hook_in: str, hook_out: str, *, cross_layer: bool = False
) -> LayerRefs:
    """A GemmaScope 2 transcoder file, per-layer (``params.safetensors``) or one layer of a
    cross-layer transcoder (``w_dec`` holds every output layer; slots ``layer..`` are used)."""
    keys = safetensors_keys(path)
    _require(path, keys, ["w_enc", "w_dec", "b_enc", "b_dec", "threshold"], "GemmaScope 2 transcoder")
    skip = "affine_skip_connection"
    return LayerRefs(
        layer, hook_in, hook_out, W_enc=TensorRef("w_enc", path, transpose=True),
        b_enc=TensorRef("b_enc", path),
        W_dec=TensorRef("w_dec", path, slots_from=layer if cross_layer else None),
        b_dec=TensorRef("b_dec", path), threshold=TensorRef("threshold", path),
        W_skip=TensorRef(skip, path, transpose=True) if skip in keys else None,
    )


def gemmascope2_sites(config_path: Path | None, layer: int) -> tuple[str, str]:
    """Read and write sites of a GemmaScope 2 transcoder: its ``config.json`` (``hf_hook_point_in``
    / ``_out``), else those of the transcoders of that release (the pre-MLP norm's output, the
    post-MLP norm's output)."""
    cfg: dict[str, Any] = {}
    if config_path is not None:
        try:
            cfg = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise FileFormatError(f"{config_path} is not valid JSON ({exc}); download it again.") from exc
    hf_in = cfg.get("hf_hook_point_in") or f"model.layers.{layer}.pre_feedforward_layernorm.output"
    hf_out = cfg.get("hf_hook_point_out") or f"model.layers.{layer}.post_feedforward_layernorm.output"
    return canonical_hook(hf_in, layer), canonical_hook(hf_out, layer)


def saelens_layer(folder: Path) -> tuple[LayerRefs, str, int | None]:
    """A SAELens transcoder folder: (tensors, activation, k). Hooks come from ``cfg.json``:
    ``metadata.hf_hook_name`` when present (the exact module), else ``hook_name``."""
    cfg, spec = saelens_io.read_cfg(folder)
    weights = folder / saelens_io.WEIGHTS_FILENAME
    if not weights.is_file():
        raise FileFormatError(
            f"{folder} is not a SAELens transcoder folder: it needs {saelens_io.CFG_FILENAME} and "
            f"{saelens_io.WEIGHTS_FILENAME}. Check the path."
        )
    keys = safetensors_keys(weights)
    _require(weights, keys, list(spec.expected_shapes()), f"SAELens {spec.architecture}")
    hook_in, hook_out = saelens_sites(cfg, spec.hook_name, spec.hook_name_out)
    refs = LayerRefs(
        int(hook_in.split(".")[1]), hook_in, hook_out,
        W_enc=TensorRef("W_enc", weights, transpose=True), b_enc=TensorRef("b_enc", weights),
        W_dec=TensorRef("W_dec", weights), b_dec=TensorRef("b_dec", weights),
        threshold=TensorRef("threshold", weights) if spec.activation == "jumprelu" else None,
        W_skip=TensorRef("W_skip", weights) if spec.has_skip else None,
    )
    return refs, spec.activation, spec.k


def saelens_sites(cfg: dict[str, Any], hook_name: str, hook_name_out: str) -> tuple[str, str]:
    """Canonical read and write sites of a sae_lens config: the Hugging Face names
    (``hf_hook_name`` / ``hf_hook_name_out``) when it has them, else the TransformerLens ones."""
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    out = []
    for tl, hf_key in ((hook_name, "hf_hook_name"), (hook_name_out, "hf_hook_name_out")):
        hf = (meta or {}).get(hf_key) or cfg.get(hf_key)
        out.append(canonical_hook(hf) if isinstance(hf, str) and hf else canonical_hook(tl))
    return out[0], out[1]


def min_threshold(refs: Iterable[LayerRefs], files: Any) -> float:
    """The smallest JumpReLU threshold over ``refs`` (inf without thresholds)."""
    lowest = float("inf")
    for lr in refs:
        if lr.threshold is not None:
            lowest = min(lowest, float(lr.threshold.view(files).min()))
    files.release()
    return lowest
