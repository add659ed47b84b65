"""Tiny fakes of published transcoder releases, in each release's exact on-disk layout (key names,
shapes, transposes, dtype, config files, as sae_lens' and circuit-tracer's loaders read them),
placed in a Hugging Face cache folder (``models--org--repo/blobs``, ``snapshots/<commit>/...``
symlinks, ``refs/main``) so that every loader resolves them offline.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

D, F, L = 16, 24, 3  # d_model of the tiny test models, features per layer, layers


def use_cache(tmp_path: Path, monkeypatch) -> Path:
    """An empty Hugging Face cache under ``tmp_path``, offline, used by every loader."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def put(cache: Path, repo_id: str, files: dict[str, bytes], revision: str = "main") -> Path:
    """Write ``files`` (path in repo -> bytes) as one commit of ``repo_id``; return the snapshot."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repr(sorted((k, hashlib.sha1(v).hexdigest()) for k, v in files.items())).encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / revision).write_text(commit)
    return snapshot


def st(tensors: dict[str, torch.Tensor]) -> bytes:
    return save({k: v.contiguous() for k, v in tensors.items()})


def npz(arrays: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: v.numpy() for k, v in arrays.items()})
    return buf.getvalue()


def text(value: object) -> bytes:
    return (value if isinstance(value, str) else json.dumps(value)).encode()


def weights(layer: int, *, d: int = D, f: int = F, seed: int = 0, n_out: int | None = None,
            skip: bool = False, threshold: bool = True) -> dict[str, torch.Tensor]:
    """Random float32 weights in tl_circuits' orientation (W_enc [f, d], W_dec [f, d] or
    [f, n_out, d], W_skip [d, d] as [d_out, d_in]); features fire on about a third of inputs."""
    g = torch.Generator().manual_seed(1000 * seed + layer)
    dec_shape = (f, d) if n_out is None else (f, n_out, d)
    w = {
        "W_enc": torch.randn(f, d, generator=g) / d**0.5,
        "b_enc": 0.3 * torch.randn(f, generator=g) - 0.3,
        "W_dec": 0.5 * torch.randn(*dec_shape, generator=g),
        "b_dec": 0.2 * torch.randn(d, generator=g),
    }
    if threshold:
        w["threshold"] = 0.1 * torch.randn(f, generator=g).abs()
    if skip:
        w["W_skip"] = 0.1 * torch.randn(d, d, generator=g)
    return w


# ---- one builder per release family: files in the layout its loaders read ---------------------
def gemmascope(cache: Path, layers=range(L), seed: int = 0) -> tuple[str, list[str]]:
    """google/gemma-scope-2b-pt-transcoders: layer_{l}/width_16k/average_l0_N/params.npz with
    W_enc [d_in, d_sae] (sae_lens' orientation; circuit-tracer transposes it), float32."""
    files, ids = {}, []
    for la in layers:
        w = weights(la, seed=seed)
        sae_id = f"layer_{la}/width_16k/average_l0_{[76, 65, 49][la % 3]}"
        files[f"{sae_id}/params.npz"] = npz({"W_enc": w["W_enc"].T, "W_dec": w["W_dec"], "b_enc": w["b_enc"],
                                             "b_dec": w["b_dec"], "threshold": w["threshold"]})
        ids.append(sae_id)
    put(cache, "google/gemma-scope-2b-pt-transcoders", files)
    return "google/gemma-scope-2b-pt-transcoders", ids


def gemmascope2(cache: Path, size: str = "270m", affine: bool = True, layers=range(L), seed: int = 0,
                folder: str = "transcoder", config: bool = True) -> tuple[str, list[str]]:
    """google/gemma-scope-2-{size}-pt: {folder}/layer_{l}_width_16k_l0_small[_affine]/params.safetensors
    (w_enc [d_in, d_sae], w_dec [d_sae, d_out], affine_skip_connection [d_in, d_out]) and config.json."""
    files, ids = {}, []
    for la in layers:
        w = weights(la, seed=seed, skip=affine)
        name = f"layer_{la}_width_16k_l0_small" + ("_affine" if affine else "")
        tensors = {"w_enc": w["W_enc"].T, "w_dec": w["W_dec"], "b_enc": w["b_enc"], "b_dec": w["b_dec"],
                   "threshold": w["threshold"]}
        if affine:
            tensors["affine_skip_connection"] = w["W_skip"].T
        files[f"{folder}/{name}/params.safetensors"] = st(tensors)
        if config:
            files[f"{folder}/{name}/config.json"] = text({
                "architecture": "jump_relu", "model_name": f"gemma-v3-{size}-pt",
                "hf_hook_point_in": f"model.layers.{la}.pre_feedforward_layernorm.output",
                "hf_hook_point_out": f"model.layers.{la}.post_feedforward_layernorm.output",
                "affine_connection": affine, "width": F, "l0": "small", "type": "transcoder"})
        ids.append(f"{folder}/{name}" if folder == "transcoder" else name)
    repo = f"google/gemma-scope-2-{size}-pt"
    put(cache, repo, files)
    return repo, ids


def qwen3(cache: Path, size: str = "0.6b", layers=range(L), seed: int = 0, skip: bool = False,
          repo_suffix: str = "-lowl0") -> tuple[str, list[str]]:
    """mwhanna/qwen3-{size}-transcoders[-lowl0]: layer_{l}.safetensors in circuit-tracer's layout
    (W_enc [d_sae, d_model], W_dec [d_sae, d_model], b_enc, b_dec), config.yaml, wandb-config.yaml."""
    files = {f"layer_{la}.safetensors": st({k: v for k, v in weights(la, seed=seed, threshold=False, skip=skip).items()})
             for la in layers}
    files["config.yaml"] = text(
        f"model_name: Qwen/Qwen3-{size.upper()}\nmodel_kind: transcoder_set\n"
        "feature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n")
    files["wandb-config.yaml"] = text(
        f"d_model:\n  value: {D}\nd_feature:\n  value: {F}\nbatch_size:\n  value: 4096\n")
    repo = f"mwhanna/qwen3-{size}-transcoders{repo_suffix}"
    put(cache, repo, files)
    return repo, [f"layer_{la}" for la in layers]


def mntss_clt(cache: Path, repo: str = "mntss/clt-gemma-2-2b-2.5M", n_layers: int = L, seed: int = 0,
              skip: bool = False, threshold: bool = True, extra: dict | None = None) -> str:
    """A circuit-tracer CLT repo: W_enc_{l}.safetensors (W_enc_{l} [d_sae, d_in], b_enc_{l},
    b_dec_{l}, threshold_{l}, W_skip_{l} [d_in, d_out]), W_dec_{l}.safetensors (W_dec_{l}
    [d_sae, L - l, d_out]) and config.yaml."""
    files = {}
    for la in range(n_layers):
        w = weights(la, seed=seed, n_out=n_layers - la, skip=skip, threshold=threshold)
        enc = {f"W_enc_{la}": w["W_enc"], f"b_enc_{la}": w["b_enc"], f"b_dec_{la}": w["b_dec"]}
        if threshold:
            enc[f"threshold_{la}"] = w["threshold"]
        if skip:
            enc[f"W_skip_{la}"] = w["W_skip"].T
        files[f"W_enc_{la}.safetensors"] = st(enc)
        files[f"W_dec_{la}.safetensors"] = st({f"W_dec_{la}": w["W_dec"]})
    cfg = {"model_name": "google/gemma-2-2b", "model_kind": "cross_layer_transcoder",
           "feature_input_hook": "hook_resid_mid", "feature_output_hook": "hook_mlp_out", **(extra or {})}
    files["config.yaml"] = text("\n".join(f"{k}: {v}" for k, v in cfg.items()) + "\n")
    put(cache, repo, files)
    return repo


def patch_sae_lens_shapes(monkeypatch) -> None:
    """sae_lens reads safetensors headers over HTTP ranges; read them from the cache instead."""
    from huggingface_hub import hf_hub_download
    from sae_lens.loading import pretrained_sae_loaders as loaders
    from safetensors import safe_open

    def shapes(repo_id: str, filename: str) -> dict[str, list[int]]:
        with safe_open(hf_hub_download(repo_id, filename), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118

    monkeypatch.setattr(loaders, "get_safetensors_tensor_shapes", shapes)


def patch_release(monkeypatch, release: str, **changes: object) -> None:
    """Change sae_lens' registry entry of ``release`` (e.g. config_overrides for tiny shapes)."""
    import dataclasses

    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    monkeypatch.setitem(directory, release, dataclasses.replace(directory[release], **changes))


Builder = Callable[..., object]


# ---- circuit-tracer config.yaml sets ------------------------------------------------------------
def ct_layer_file(w: dict[str, torch.Tensor]) -> bytes:
    """One layer in circuit-tracer's per-layer layout (what its to_safetensors writes)."""
    out = {"W_enc": w["W_enc"], "W_dec": w["W_dec"], "b_enc": w["b_enc"], "b_dec": w["b_dec"]}
    if "threshold" in w:
        out["activation_function.threshold"] = w["threshold"]
    if "W_skip" in w:
        out["W_skip"] = w["W_skip"]
    return st(out)


def ct_config(kind: str, entries: list[str] | None, *, hook_in: str = "ln2.hook_normalized",
              hook_out: str = "hook_mlp_out", activation: str | None = None, k: int | None = None) -> bytes:
    lines = [f"model_kind: {kind}", f"feature_input_hook: {hook_in}", f"feature_output_hook: {hook_out}"]
    if activation is not None:
        lines.append(f"activation: {activation}")
    if k is not None:
        lines.append(f"k: {k}")
    if entries:
        lines.append("transcoders:")
        lines += [f"  - {e}" for e in entries]
    return text("\n".join(lines) + "\n")


def ct_set(cache: Path, repo: str, activation: str, *, skip: bool, seed: int = 0, k: int = 4,
           folder: str = "", listed: bool = True, hook_in: str = "ln2.hook_normalized",
           hook_out: str = "hook_mlp_out", revision: str = "main") -> dict[int, dict[str, torch.Tensor]]:
    """A circuit-tracer per-layer set in a repo: layer files + config.yaml listing them as hf://
    references (``listed``) or not (circuit-tracer then globs layer_*.safetensors)."""
    prefix = f"{folder}/" if folder else ""
    ws = {la: weights(la, seed=seed, skip=skip, threshold=activation == "jumprelu") for la in range(L)}
    files = {f"{prefix}layer_{la}.safetensors": ct_layer_file(w) for la, w in ws.items()}
    entries = [f"hf://{repo}/{prefix}layer_{la}.safetensors?revision={revision}" for la in range(L)]
    files[f"{prefix}config.yaml"] = ct_config(
        "transcoder_set", entries if listed else None, hook_in=hook_in, hook_out=hook_out,
        activation=activation, k=k if activation == "topk" else None)
    put(cache, repo, files, revision=revision)
    return ws


def gemmascope2_clt(cache: Path, seed: int = 0, affine: bool = True) -> tuple[str, dict[int, dict]]:
    """GemmaScope 2 cross-layer transcoder files (w_dec [d_sae, L, d_out], used from slot l) and a
    circuit-tracer config.yaml in another repo listing them, as mwhanna's configs do."""
    ws, files, entries = {}, {}, []
    for la in range(L):
        w = weights(la, seed=seed, skip=affine, n_out=L)
        w["W_dec"][:, :la] = 0.0  # slots before the layer are unused
        ws[la] = w
        t = {"w_enc": w["W_enc"].T, "w_dec": w["W_dec"], "b_enc": w["b_enc"], "b_dec": w["b_dec"],
             "threshold": w["threshold"]}
        if affine:
            t["affine_skip_connection"] = w["W_skip"].T
        name = f"clt/width_16k_l0_small{'_affine' if affine else ''}/layer_{la}.safetensors"
        files[name] = st(t)
        entries.append(f"hf://google/gemma-scope-2-270m-pt/{name}")
    put(cache, "google/gemma-scope-2-270m-pt", files)
    repo = "mwhanna/gemma-scope-2-270m-pt-clt"
    put(cache, repo, {"config.yaml": ct_config("cross_layer_transcoder", entries, hook_in="mlp.hook_in")})
    return repo, ws
