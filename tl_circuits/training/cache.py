"""An activation cache on disk: every layer's MLP inputs and outputs, sharded safetensors.

One pass over the model fills the cache; later runs (other widths, sparsities, per-layer or
cross-layer) train from it without running the model. Layout of a cache folder::

    meta.json                 settings (model fingerprint, hooks, ctx_len, dtype), shard size
    shard_00000.safetensors   in.{i} / out.{i}: [n_tokens, d] for site i, tokens: [n_ctx, ctx_len];
    ...                       header: n_ctx, n_tokens, tokens_sha (a hash of the token ids)

A shard holds whole contexts (``contexts_per_shard``, sized to about ``shard_mb`` megabytes) and
is written atomically, so an interrupted or failed build (Ctrl-C, a full disk) keeps every
finished shard and resumes from the first missing one. The token hash in each shard's header
makes a run over other text fail instead of training on activations of the wrong contexts; a
run over more text extends the cache and a run over less reads its beginning. Under
``torchrun`` each rank writes every ``world``-th shard.

Training reads the cache in shuffled order (:class:`ShuffledBatches`): each epoch permutes the
shards, loads them a group at a time (``mix_tokens``) and permutes the tokens of a group; the
batch of a step depends only on the seed and the step number, so a resumed run reads what an
uninterrupted one would.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from safetensors import safe_open
from safetensors.torch import save_file

from tl_circuits._atomic import atomic_path
from tl_circuits.errors import ConfigError, FileFormatError

FORMAT = 1
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _sha(tokens: torch.Tensor) -> str:
    return hashlib.sha256(tokens.contiguous().numpy().tobytes()).hexdigest()[:20]


def model_fingerprint(model: Any) -> str:
    """A short hash of a model's parameter shapes and the first and last values of each, so that
    two models of the same name but other weights get other caches."""
    h = hashlib.sha256()
    # the model itself, or the module a host (``hf_model``) or nnsight (``_module``) holds
    module = next((m for m in (model, getattr(model, "hf_model", None), getattr(model, "_module", None))
                   if isinstance(m, torch.nn.Module)), None)
    tensors = [] if module is None else list(module.parameters())
    for p in tensors:
        flat = p.detach().reshape(-1)
        h.update(str(tuple(p.shape)).encode())
        h.update(torch.cat([flat[:16], flat[-16:]]).float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class ActivationCache:
    """An activation cache folder (see module docstring), as one run reads it: ``shards`` are
    the entries of the run's contexts (a longer run's last shard read in part)."""

    def __init__(self, root: str | Path, shards: list[dict[str, Any]]) -> None:
        self.root = Path(root)
        self.meta = read_meta(self.root)
        self.shards = shards

    @property
    def n_tokens(self) -> int:
        return sum(s["n_tokens"] for s in self.shards)

    @property
    def n_sites(self) -> tuple[int, int]:
        return len(self.meta["settings"]["hooks_in"]), len(self.meta["settings"]["hooks_out"])

    def shard(self, i: int) -> tuple[Float[torch.Tensor, "n_in n d_in"], Float[torch.Tensor, "n_out n d_out"]]:
        """Shard ``i``'s inputs ``[n_in, n, d_in]`` and outputs ``[n_out, n, d_out]``, in the
        cache's dtype (cast to float32 per batch by the reader)."""
        path = self.root / _name(i)
        n_in, n_out = self.n_sites
        n = self.shards[i]["n_tokens"]
        try:
            with safe_open(str(path), framework="pt") as f:
                x = torch.stack([f.get_slice(f"in.{j}")[:n] for j in range(n_in)])
                y = torch.stack([f.get_slice(f"out.{j}")[:n] for j in range(n_out)])
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types
            raise FileFormatError(f"the activation cache shard {path} is unreadable ({exc}); "
                                  "delete the cache folder to rebuild it.") from exc
        return x, y


def read_meta(root: Path) -> dict[str, Any]:
    """A cache folder's ``meta.json`` (ConfigError / FileFormatError when missing / unreadable)."""
    try:
        return json.loads((root / "meta.json").read_text("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{root} is not an activation cache (no meta.json); build one with "
                          "train_transcoders(cache_dir=...).") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"the activation cache {root} is unreadable ({exc}); delete it to "
                              "rebuild.") from exc


def _name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def _shard_header(path: Path) -> dict[str, str] | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001
        raise FileFormatError(f"the activation cache shard {path} is unreadable ({exc}); delete "
                              "it to rebuild.") from exc


def _shard_tokens(path: Path) -> torch.Tensor:
    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor("tokens")


def _status(root: Path, i: int, chunk: torch.Tensor) -> str:
    """``"ok"`` (holds these contexts, or more), ``"todo"`` (missing, or a shorter run's last
    shard this run extends); ConfigError when it holds other text."""
    head = _shard_header(root / _name(i))
    if head is None:
        return "todo"
    have = int(head["n_ctx"])
    if have == len(chunk) and head["tokens_sha"] == _sha(chunk):
        return "ok"
    if have < len(chunk) and head["tokens_sha"] == _sha(chunk[:have]):
        return "todo"
    if have > len(chunk) and torch.equal(_shard_tokens(root / _name(i))[: len(chunk)], chunk):
        return "ok"
    raise ConfigError(f"the activation cache {root} was built from other text (shard {i}'s "
                      "contexts differ); use another cache_dir, or delete it to rebuild.")


def build_activation_cache(
    root: str | Path,
    contexts: Int[torch.Tensor, "n_ctx ctx_len"],
    read: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    *,
    settings: dict[str, Any],
    dtype: torch.dtype = torch.float32,
    batch: int = 8,
    shard_mb: float = 256.0,
    progress: bool = True,
    rank: int = 0,
    world: int = 1,
) -> int:
    """Fill (or extend, or resume) the cache at ``root`` with the activations of ``contexts``;
    return how many forward batches ran (0 when the cache already held them).

    ``read(tokens)`` returns ``(x [n_in, n, d_in], y [n_out, n, d_out])`` for a batch of
    contexts (:func:`tl_circuits.training.data.layer_activations`); ``settings`` (model
    fingerprint, ``hooks_in``, ``hooks_out``, ...) must equal those of an existing cache. Shards
    already there for the same contexts are kept. With ``world > 1`` rank ``rank`` writes shards
    ``rank, rank + world, ...``; open the cache with :func:`open_cache` after all ranks are done.

    Example:
        >>> build_activation_cache(tmp, contexts, read, settings=s)  # doctest: +SKIP
        >>> open_cache(tmp, contexts).n_tokens  # doctest: +SKIP
    """
    root = Path(root)
    settings = json.loads(json.dumps(settings))
    if (root / "meta.json").is_file():
        meta = read_meta(root)
        if meta.get("settings") != settings or meta.get("format") != FORMAT:
            diff = sorted(k for k in set(settings) | set(meta.get("settings", {}))
                          if meta.get("settings", {}).get(k) != settings.get(k))
            raise ConfigError(f"the activation cache {root} was built with other settings "
                              f"(differing: {diff}); use another cache_dir or delete it.")
    else:
        probe_x, probe_y = read(contexts[:1])
        per_token = probe_x.shape[0] * probe_x.shape[-1] + probe_y.shape[0] * probe_y.shape[-1]
        per_ctx = per_token * probe_x.shape[1] * torch.empty((), dtype=dtype).element_size()
        meta = {"format": FORMAT, "settings": settings, "dtype": str(dtype).removeprefix("torch."),
                "contexts_per_shard": max(1, int(shard_mb * 2**20 // per_ctx))}
        if rank == 0:
            _write_meta(root, meta)
    per_shard = int(meta["contexts_per_shard"])
    n_shards = math.ceil(len(contexts) / per_shard)
    chunks = [contexts[i * per_shard : (i + 1) * per_shard] for i in range(n_shards)]
    # every rank checks every shard, so a cache of other text fails on all of them alike
    todo = [i for i in range(n_shards) if _status(root, i, chunks[i]) == "todo" and i % world == rank]
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(len(chunks[i]) for i in todo), desc="caching activations", unit="ctx",
               disable=not progress or not todo)
    runs = 0
    try:
        for i in todo:
            xs, ys = [], []
            for lo in range(0, len(chunks[i]), batch):
                x, y = read(chunks[i][lo : lo + batch])
                runs += 1
                xs.append(x.to("cpu", dtype))
                ys.append(y.to("cpu", dtype))
                bar.update(len(chunks[i][lo : lo + batch]))
            x, y = torch.cat(xs, 1), torch.cat(ys, 1)
            tensors = {f"in.{j}": x[j].contiguous() for j in range(x.shape[0])}
            tensors |= {f"out.{j}": y[j].contiguous() for j in range(y.shape[0])}
            tensors["tokens"] = chunks[i].contiguous()
            header = {"n_ctx": str(len(chunks[i])), "n_tokens": str(x.shape[1]),
                      "tokens_sha": _sha(chunks[i])}
            try:
                _write_shard(root / _name(i), tensors, header)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise ConfigError(
                        f"the disk is full while writing the activation cache {root} (shard {i} "
                        f"of {n_shards}, about {shard_mb:.0f} MB each); finished shards are "
                        "kept: free space (or use another cache_dir) and run again to resume."
                    ) from exc
                raise
    finally:
        bar.close()
    return runs


def open_cache(root: str | Path, contexts: Int[torch.Tensor, "n_ctx ctx_len"]) -> ActivationCache:
    """The cache at ``root`` as a run over ``contexts`` reads it (every shard must be there)."""
    root = Path(root)
    per_shard = int(read_meta(root)["contexts_per_shard"])
    shards = []
    for i in range(math.ceil(len(contexts) / per_shard)):
        chunk = contexts[i * per_shard : (i + 1) * per_shard]
        if _status(root, i, chunk) != "ok":
            raise ConfigError(f"the activation cache {root} lacks shard {i}; build it first.")
        head = _shard_header(root / _name(i))
        assert head is not None
        per_ctx = int(head["n_tokens"]) // int(head["n_ctx"])
        shards.append({"n_ctx": len(chunk), "n_tokens": len(chunk) * per_ctx})
    return ActivationCache(root, shards)


def _write_shard(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, str]) -> None:
    """Write one shard atomically (a separate function so tests can simulate a full disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def _write_meta(root: Path, meta: dict[str, Any]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with atomic_path(root / "meta.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")


class ShuffledBatches:
    """Batches of ``tokens_per_step`` activations read from a cache in shuffled order (see the
    module docstring); ``batch(step)`` is a function of ``(seed, step)`` only.

    Example:
        >>> batches = ShuffledBatches(cache, 4096, seed=0)  # doctest: +SKIP
        >>> x, y = batches.batch(0)  # doctest: +SKIP
    """

    def __init__(self, cache: ActivationCache, tokens_per_step: int, *, seed: int = 0,
                 mix_tokens: int = 1 << 16) -> None:
        self.cache, self.per_step, self.seed = cache, tokens_per_step, seed
        if cache.n_tokens < tokens_per_step:
            raise ConfigError(f"the activation cache {cache.root} holds {cache.n_tokens} tokens, "
                              f"fewer than one batch of {tokens_per_step}; cache more text or "
                              "use a smaller batch.")
        self.mix_tokens = max(mix_tokens, tokens_per_step)
        self._loaded: tuple[tuple[int, int], torch.Tensor, torch.Tensor] | None = None
        self._epochs: dict[int, list[tuple[list[int], int]]] = {}

    def _groups(self, epoch: int) -> list[tuple[list[int], int]]:
        """The epoch's groups of shards and how many batches each gives."""
        if epoch not in self._epochs:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.cache.shards), generator=gen).tolist()
            groups: list[list[int]] = [[]]
            size = 0
            for i in order:
                if size >= self.mix_tokens:
                    groups.append([])
                    size = 0
                groups[-1].append(i)
                size += self.cache.shards[i]["n_tokens"]
            if size < self.per_step and len(groups) > 1:  # a too-small last group joins the one before
                groups[-2] += groups.pop()
            counts = [sum(self.cache.shards[i]["n_tokens"] for i in g) // self.per_step for g in groups]
            self._epochs = {epoch: list(zip(groups, counts, strict=True))}
        return self._epochs[epoch]

    @property
    def steps_per_epoch(self) -> int:
        return sum(c for _, c in self._groups(0))

    def batch(self, step: int) -> tuple[Float[torch.Tensor, "n_in n d_in"], Float[torch.Tensor, "n_out n d_out"]]:
        """The activations of ``step``, float32."""
        epoch, rest = divmod(step, self.steps_per_epoch)
        groups = self._groups(epoch)
        g = 0
        while rest >= groups[g][1]:
            rest -= groups[g][1]
            g += 1
        shards = groups[g][0]
        if self._loaded is None or self._loaded[0] != (epoch, g):
            parts = [self.cache.shard(i) for i in shards]
            x = torch.cat([p[0] for p in parts], 1)
            y = torch.cat([p[1] for p in parts], 1)
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 7919 + g)
            perm = torch.randperm(x.shape[1], generator=gen)
            self._loaded = ((epoch, g), x[:, perm], y[:, perm])
        _, x, y = self._loaded
        rows = slice(rest * self.per_step, (rest + 1) * self.per_step)
        return x[:, rows].float(), y[:, rows].float()


def storage_dtype(name: str) -> torch.dtype:
    """``"float32" | "bfloat16" | "float16"`` as a torch dtype (ConfigError otherwise)."""
    if name not in _DTYPES:
        raise ConfigError(f"cache dtype {name!r} is not one of {sorted(_DTYPES)}.")
    return _DTYPES[name]
