"""SAELens directory format for per-layer transcoders (``cfg.json`` + ``sae_weights.safetensors``).

Parses and validates the config, reads and writes the two files, and reads the weights and config
of an in-memory ``sae_lens`` transcoder. Nothing here imports ``sae_lens``: its objects are
recognised by duck typing (a ``cfg`` with ``to_dict()`` and a ``W_enc`` tensor). Weights are
read with safetensors only, never with pickle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tl_circuits.errors import ConfigError, FileFormatError

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"

# architecture name in cfg.json -> (activation, has W_skip)
ARCHITECTURES: dict[str, tuple[str, bool]] = {
    "transcoder": ("relu", False),
    "skip_transcoder": ("relu", True),
    "jumprelu_transcoder": ("jumprelu", False),
    "jumprelu_skip_transcoder": ("jumprelu", True),
    "topk_transcoder": ("topk", False),
    "topk_skip_transcoder": ("topk", True),
    "topk": ("topk", False),  # sae_lens TopKSAE config that also has d_out and hook_name_out
}
ACTIVATIONS = ("relu", "jumprelu", "topk")


@dataclass(frozen=True)
class TranscoderSpec:
    """What a ``cfg.json`` says about a transcoder, validated."""

    architecture: str
    activation: str
    has_skip: bool
    hook_name: str
    hook_name_out: str
    d_in: int
    d_sae: int
    d_out: int
    k: int | None

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every tensor the weights file must hold."""
        shapes: dict[str, tuple[int, ...]] = {
            "W_enc": (self.d_in, self.d_sae),
            "b_enc": (self.d_sae,),
            "W_dec": (self.d_sae, self.d_out),
            "b_dec": (self.d_out,),
        }
        if self.has_skip:
            shapes["W_skip"] = (self.d_out, self.d_in)
        if self.activation == "jumprelu":
            shapes["threshold"] = (self.d_sae,)
        return shapes


def architecture_name(activation: str, has_skip: bool) -> str:
    """The architecture name written to ``cfg.json``, e.g. ``jumprelu_skip_transcoder``."""
    prefix = "" if activation == "relu" else f"{activation}_"
    return f"{prefix}{'skip_' if has_skip else ''}transcoder"


def _hook(cfg: Mapping[str, Any], key: str) -> Any:
    metadata = cfg.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get(key) is not None:
        return metadata[key]
    return cfg.get(key)


def parse_cfg(
    cfg: Any, *, source: str = "cfg", malformed: type[Exception] = ConfigError
) -> TranscoderSpec:
    """Validate a SAELens transcoder config and return what it specifies.

    Raises ``ConfigError`` for settings this library does not support, and ``malformed``
    (``FileFormatError`` when the config was read from disk) for missing or mistyped fields.
    """
    if not isinstance(cfg, Mapping):
        raise malformed(f"{source}: expected a JSON object, found {type(cfg).__name__}.")
    arch = cfg.get("architecture")
    if arch is None:
        raise malformed(
            f"{source}: missing 'architecture'; expected one of {sorted(ARCHITECTURES)}."
        )
    if arch not in ARCHITECTURES:
        raise ConfigError(
            f"{source}: architecture {arch!r} is not a supported per-layer transcoder; expected "
            f"one of {sorted(ARCHITECTURES)}. Plain SAEs (no d_out / hook_name_out) cannot be "
            "used as transcoders."
        )
    activation, has_skip = ARCHITECTURES[arch]
    dims = {}
    for key in ("d_in", "d_sae", "d_out"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            hint = (
                " (a transcoder needs d_out; a plain SAE config lacks it)" if key == "d_out" else ""
            )
            raise malformed(
                f"{source}: field {key!r} must be a positive integer, found {value!r}{hint}."
            )
        dims[key] = value
    hooks = {}
    for key in ("hook_name", "hook_name_out"):
        value = _hook(cfg, key)
        if not isinstance(value, str) or not value:
            raise malformed(
                f"{source}: missing {key!r}; expected a string such as "
                f"'blocks.0.{'hook_mlp_out' if key == 'hook_name_out' else 'ln2.hook_normalized'}' "
                f"in cfg['metadata'][{key!r}] (or at the top level), found {value!r}."
            )
        hooks[key] = value
    unsupported = {
        "normalize_activations": (
            "none",
            "fold the normalisation into W_enc/W_dec and set it to 'none'",
        ),
        "reshape_activations": (
            "none",
            "use a transcoder on a flat hook (not hook_z) and set 'none'",
        ),
    }
    for key, (allowed, fix) in unsupported.items():
        value = cfg.get(key, allowed)
        if value != allowed:
            raise ConfigError(f"{source}: {key}={value!r} is not supported; {fix}.")
    if cfg.get("apply_b_dec_to_input", False):
        raise ConfigError(
            f"{source}: apply_b_dec_to_input=true is not supported for transcoders (b_dec has "
            "d_out entries); set it to false."
        )
    if cfg.get("rescale_acts_by_decoder_norm", False):
        raise ConfigError(
            f"{source}: rescale_acts_by_decoder_norm=true is not supported; fold the decoder norms "
            "into W_enc/b_enc/W_dec (sae_lens: sae.fold_W_dec_norm()) and set it to false."
        )
    k = None
    if activation == "topk":
        k = cfg.get("k")
        if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= dims["d_sae"]:
            raise malformed(
                f"{source}: a TopK transcoder needs an integer 'k' with 0 < k <= d_sae="
                f"{dims['d_sae']}, found {k!r}."
            )
    return TranscoderSpec(
        architecture=arch,
        activation=activation,
        has_skip=has_skip,
        hook_name=hooks["hook_name"],
        hook_name_out=hooks["hook_name_out"],
        k=k,
        **dims,
    )


def build_cfg(*, spec: TranscoderSpec, dtype: torch.dtype, device: str = "cpu") -> dict[str, Any]:
    """A fresh SAELens-style ``cfg.json`` dictionary for a transcoder built from tensors."""
    cfg: dict[str, Any] = {
        "d_in": spec.d_in,
        "d_sae": spec.d_sae,
        "dtype": dtype_to_str(dtype),
        "device": device,
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"hook_name": spec.hook_name, "hook_name_out": spec.hook_name_out},
        "d_out": spec.d_out,
        "architecture": spec.architecture,
    }
    if spec.k is not None:
        cfg["k"] = spec.k
    return cfg


def dtype_to_str(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"`` (the spelling sae_lens writes)."""
    return str(dtype).removeprefix("torch.")


def dtype_from_str(name: Any) -> torch.dtype | None:
    """``"float32"`` or ``"torch.float32"`` -> ``torch.float32``; None if not a dtype name."""
    if not isinstance(name, str):
        return None
    value = getattr(torch, name.removeprefix("torch."), None)
    return value if isinstance(value, torch.dtype) else None


def read_cfg(path: str | os.PathLike[str]) -> tuple[dict[str, Any], TranscoderSpec]:
    """Read and validate the ``cfg.json`` of a SAELens transcoder directory: (cfg, spec).

    Every problem raises ``FileFormatError`` naming the path, what is wrong and how to fix it
    (``ConfigError`` for a well-formed config with unsupported settings).
    """
    directory = Path(path)
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise FileFormatError(
            f"transcoder directory {directory} {what}; pass a folder holding {CFG_FILENAME} and "
            f"{WEIGHTS_FILENAME} (SAELens format)."
        )
    cfg_path = directory / CFG_FILENAME
    if not cfg_path.is_file():
        raise FileFormatError(
            f"{cfg_path} is missing; a SAELens transcoder directory needs {CFG_FILENAME} beside "
            f"{WEIGHTS_FILENAME}. Re-save the transcoder (Transcoder.save or sae.save_model)."
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FileFormatError(
            f"{cfg_path} is not valid JSON ({exc}); re-download or re-save it."
        ) from exc
    return cfg, parse_cfg(cfg, source=str(cfg_path), malformed=FileFormatError)


def read_dir(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Any], TranscoderSpec, dict[str, torch.Tensor]]:
    """Read and validate a SAELens transcoder directory: (cfg, spec, tensors on CPU); errors as
    :func:`read_cfg`'s, and for missing, truncated or misshapen weights."""
    directory = Path(path)
    cfg, spec = read_cfg(directory)
    weights_path = directory / WEIGHTS_FILENAME
    if not weights_path.is_file():
        raise FileFormatError(
            f"{weights_path} is missing; the weights of a SAELens transcoder live in "
            f"{WEIGHTS_FILENAME} beside {CFG_FILENAME}. Re-download or re-save it."
        )
    try:
        tensors = load_file(weights_path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise FileFormatError(
            f"{weights_path} is corrupt or truncated ({exc}); re-download or re-save it."
        ) from exc
    expected = spec.expected_shapes()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise FileFormatError(
            f"{weights_path} lacks tensor(s) {missing} needed by architecture "
            f"{spec.architecture!r} (found {sorted(tensors)}); re-save it, or fix 'architecture' "
            f"in {CFG_FILENAME}."
        )
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise FileFormatError(
            f"{weights_path} holds tensor(s) {extra} that architecture {spec.architecture!r} "
            f"does not use (expected {sorted(expected)}); check 'architecture' in {CFG_FILENAME}."
        )
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise FileFormatError(
                f"{weights_path}: tensor {name!r} has shape {tuple(tensors[name].shape)} but "
                f"{CFG_FILENAME} (d_in={spec.d_in}, d_sae={spec.d_sae}, d_out={spec.d_out}) "
                f"implies {shape}; the config and weights do not belong together. Re-save them."
            )
    return cfg, spec, tensors


def write_dir(
    directory: str | os.PathLike[str], cfg: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
) -> None:
    """Write ``cfg.json`` and ``sae_weights.safetensors`` into ``directory`` (not atomic alone)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {name: t.detach().cpu().contiguous() for name, t in tensors.items()},
        str(directory / WEIGHTS_FILENAME),
    )
    (directory / CFG_FILENAME).write_text(json.dumps(cfg, indent=2), encoding="utf-8")


def is_sae_lens_transcoder(obj: Any) -> bool:
    """Whether ``obj`` looks like a sae_lens SAE/transcoder (checked without importing sae_lens)."""
    if type(obj).__module__.split(".")[0] == "sae_lens":
        return True
    cfg = getattr(obj, "cfg", None)
    return callable(getattr(cfg, "to_dict", None)) and isinstance(
        getattr(obj, "W_enc", None), torch.Tensor
    )


def read_sae_lens(obj: Any) -> tuple[dict[str, Any], TranscoderSpec, dict[str, torch.Tensor]]:
    """(cfg, spec, copied tensors) of an in-memory sae_lens transcoder, as its save_model writes."""
    name = type(obj).__name__
    cfg = json.loads(json.dumps(obj.cfg.to_dict()))  # deep, JSON-clean copy
    spec = parse_cfg(cfg, source=f"sae_lens {name}.cfg")
    tensors = {}
    for key, shape in spec.expected_shapes().items():
        value: Any = getattr(obj, key, None)
        if not isinstance(value, torch.Tensor):
            raise ConfigError(
                f"sae_lens {name} has no tensor {key!r}, which architecture "
                f"{spec.architecture!r} needs."
            )
        if tuple(value.shape) != shape:
            raise ConfigError(
                f"sae_lens {name}.{key} has shape {tuple(value.shape)}, but its cfg implies {shape}."
            )
        tensors[key] = value.detach().clone()
    return cfg, spec, tensors
