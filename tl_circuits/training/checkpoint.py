"""Training checkpoints: parameters, Adam state and counters in safetensors, settings in JSON.

A checkpoint directory is written atomically (a crash or Ctrl-C leaves the previous one whole)
and holds no pickle: ``state.safetensors`` (module state and Adam moments) and ``state.json``
(step, the training settings it belongs to, Adam step counts).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.optim import Optimizer

from tl_circuits._atomic import atomic_path
from tl_circuits.errors import ConfigError, FileFormatError


def checkpoint_dir(out_dir: Path) -> Path:
    """Where the checkpoint of a run writing ``out_dir`` lives (beside it, hidden)."""
    return out_dir.with_name(f".{out_dir.name}.checkpoint")


def save_checkpoint(
    path: Path, *, step: int, settings: dict[str, Any], module: torch.nn.Module,
    optimizer: Optimizer, seconds: float = 0.0,
    gather: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    write: bool = True,
) -> None:
    """Write ``path`` atomically: the module's state dict, Adam moments, step and settings (and
    the seconds of training so far, for time budgets).

    ``gather`` turns a rank's tensors into the full ones (a sharded run; every rank calls it),
    and only the rank with ``write`` writes."""
    tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    names = {id(p): n for n, p in module.named_parameters()}
    steps: dict[str, float] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state:
                continue
            name = names[id(p)]
            tensors[f"adam.{name}.exp_avg"] = state["exp_avg"].detach().cpu().contiguous()
            tensors[f"adam.{name}.exp_avg_sq"] = state["exp_avg_sq"].detach().cpu().contiguous()
            steps[name] = float(state["step"])
    if gather is not None:
        tensors = gather(tensors)
    if not write:
        return
    meta = {"step": step, "settings": settings, "adam_steps": steps, "format": 1,
            "seconds": round(seconds, 3)}
    with atomic_path(path, directory=True) as tmp:
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def load_checkpoint(
    path: Path, *, settings: dict[str, Any], module: torch.nn.Module,
    optimizer: Optimizer, scatter: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> int:
    """Restore module and optimizer from ``path``; return the step to continue from.
    ``scatter`` takes this rank's part of the full tensors (a sharded run).

    Raises ConfigError when the checkpoint was written by a run with other settings.
    """
    try:
        meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
        tensors = load_file(path / "state.safetensors", device="cpu")
    except (OSError, json.JSONDecodeError, SafetensorError, ValueError) as exc:
        raise FileFormatError(
            f"the training checkpoint {path} is unreadable ({exc}); delete it to start afresh."
        ) from exc
    if meta.get("settings") != json.loads(json.dumps(settings)):
        diff = sorted(
            k for k in set(settings) | set(meta.get("settings", {}))
            if meta.get("settings", {}).get(k) != json.loads(json.dumps(settings.get(k)))
        )
        raise ConfigError(
            f"the checkpoint {path} belongs to a run with other settings (differing: {diff}); "
            "pass resume=False to start afresh, or delete the checkpoint."
        )
    if scatter is not None:
        tensors = scatter(tensors)
    module.load_state_dict(
        {k.removeprefix("module."): v for k, v in tensors.items() if k.startswith("module.")}
    )
    params = dict(module.named_parameters())
    for name, step in meta["adam_steps"].items():
        optimizer.state[params[name]] = {
            "step": torch.tensor(step),
            "exp_avg": tensors[f"adam.{name}.exp_avg"].to(params[name].device, copy=True),
            "exp_avg_sq": tensors[f"adam.{name}.exp_avg_sq"].to(params[name].device, copy=True),
        }
    return int(meta["step"])


def recover_checkpoint(path: Path) -> bool:
    """Put back a checkpoint that a kill caught between the two renames of its atomic replacement
    (the previous one then sits at ``.NAME.old-PID`` beside it); True if ``path`` now exists."""
    if not path.is_dir():
        left = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
        if left and (left[-1] / "state.json").is_file():
            left[-1].rename(path)
    return path.is_dir()


def checkpoint_seconds(path: Path) -> float:
    """Seconds of training the checkpoint at ``path`` holds (0 for one written without them)."""
    try:
        return float(json.loads((path / "state.json").read_text(encoding="utf-8")).get("seconds", 0.0))
    except (OSError, json.JSONDecodeError, TypeError, ValueError):
        return 0.0
