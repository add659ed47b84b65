"""Feature dashboards: top-activating contexts, quantile samples, density and promoted logits.

``build_dashboards`` makes one streaming pass over a corpus. For each text and each feature it
keeps the position where the feature is strongest, with the activations of a window of
``context`` tokens on either side; a running top-``n_top`` per feature holds the best of these,
and a reservoir (uniform random sample of the texts where the feature fires) gives examples from
lower quantiles. Output tokens come from ``W_dec @ W_U``. Everything is stored in one
``dashboards.safetensors`` (numbers) and one ``index.json`` (settings, token strings); a lookup
reads only the slices of one feature.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from ._atomic import atomic_path
from .errors import ConfigError, FileFormatError
from .hosts import as_host
from .replacement import activations_at
from .transcoders import as_transcoders

FORMAT_VERSION = 1
TENSORS_FILE = "dashboards.safetensors"
INDEX_FILE = "index.json"


class _LayerState:
    """Running top-k, reservoir and counts of one layer's features."""

    def __init__(self, d_sae: int, n_top: int, n_reservoir: int, window: int, gen: torch.Generator):
        self.gen = gen
        self.count = torch.zeros(d_sae, dtype=torch.float64)
        self.act_max = torch.zeros(d_sae)
        self.top_val = torch.full((d_sae, n_top), -torch.inf)
        self.top_tok = torch.full((d_sae, n_top, window), -1, dtype=torch.int32)
        self.top_act = torch.zeros(d_sae, n_top, window, dtype=torch.float16)
        self.res_key = torch.full((d_sae, n_reservoir), torch.inf)
        self.res_val = torch.full((d_sae, n_reservoir), -torch.inf)
        self.res_tok = torch.full((d_sae, n_reservoir, window), -1, dtype=torch.int32)
        self.res_act = torch.zeros(d_sae, n_reservoir, window, dtype=torch.float16)

    def update(self, val: Float[torch.Tensor, "d_sae cand"], tok: Int[torch.Tensor, "d_sae cand window"],
               act: Float[torch.Tensor, "d_sae cand window"]) -> None:
        """Merge one batch's candidates (one per text: the text's strongest position)."""
        val = torch.where(val > 0, val, torch.full_like(val, -torch.inf))
        all_val = torch.cat([self.top_val, val], 1)
        keep = all_val.topk(self.top_val.shape[1], dim=1).indices
        self.top_val = all_val.gather(1, keep)
        self.top_tok, self.top_act = _take(self.top_tok, self.top_act, tok, act, keep)
        key = torch.rand(val.shape, generator=self.gen)
        key = torch.where(val > -torch.inf, key, torch.full_like(key, torch.inf))
        all_key = torch.cat([self.res_key, key], 1)
        keep = all_key.topk(self.res_key.shape[1], dim=1, largest=False).indices
        self.res_key = all_key.gather(1, keep)
        self.res_val = torch.cat([self.res_val, val], 1).gather(1, keep)
        self.res_tok, self.res_act = _take(self.res_tok, self.res_act, tok, act, keep)

    def tensors(self, layer: int, n_tokens: int) -> dict[str, torch.Tensor]:
        # sort the reservoir by value, strongest first, so quantile bins are contiguous slices
        order = self.res_val.argsort(dim=1, descending=True)
        idx3 = order[..., None].expand(-1, -1, self.res_tok.shape[2])
        return {
            f"L{layer}.density": (self.count / max(n_tokens, 1)).float(),
            f"L{layer}.act_max": self.act_max,
            f"L{layer}.top_val": self.top_val.nan_to_num(neginf=0.0),
            f"L{layer}.top_tok": self.top_tok,
            f"L{layer}.top_act": self.top_act,
            f"L{layer}.res_val": self.res_val.gather(1, order).nan_to_num(neginf=0.0),
            f"L{layer}.res_tok": self.res_tok.gather(1, idx3),
            f"L{layer}.res_act": self.res_act.gather(1, idx3),
        }


def _take(old_tok: torch.Tensor, old_act: torch.Tensor, tok: torch.Tensor, act: torch.Tensor,
          keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    idx = keep[..., None].expand(-1, -1, old_tok.shape[2])
    return (torch.cat([old_tok, tok], 1).gather(1, idx),
            torch.cat([old_act, act.to(old_act.dtype)], 1).gather(1, idx))


def build_dashboards(
    model: Any,
    transcoders: Any,
    texts: Iterable[str | Sequence[int]],
    *,
    out_path: str | os.PathLike[str],
    n_top: int = 16,
    n_reservoir: int = 32,
    n_quantiles: int = 4,
    context: int = 8,
    n_logits: int = 10,
    batch_size: int = 8,
    max_tokens_per_text: int | None = None,
    skip_bos: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> Dashboards:
    """Compute dashboards of every feature of ``transcoders`` over ``texts`` and save them.

    Args:
        model: a model a host adapts (``HookedTransformer``, ...).
        transcoders: any set :func:`~tl_circuits.transcoders.as_transcoders` accepts (a
            :class:`~tl_circuits.TranscoderSet`, a cross-layer transcoder, ...); a copy cast to the
            model's device and dtype is used.
        texts: strings (tokenized by the model) or token-id lists; read once, streaming.
        out_path: directory to write (``dashboards.safetensors`` + ``index.json``), atomically.
        n_top: top-activating contexts kept per feature (at most one per text).
        n_reservoir: random active contexts kept per feature, split into ``n_quantiles`` bins.
        context: tokens shown on each side of the activating token.
        n_logits: promoted and suppressed output tokens kept per feature.
        max_tokens_per_text: truncate longer texts (defaults to the model's context length).
        skip_bos: ignore activations on a leading BOS token (they are usually outliers).

    Returns:
        The opened :class:`Dashboards`.

    Example:
        >>> d = build_dashboards(model, transcoders, ["a text", ...], out_path="dash")  # doctest: +SKIP
        >>> d.feature(0, 3)["examples_quantiles"][0]["examples"][0]["tokens"]  # doctest: +SKIP
    """
    if n_top < 1 or n_reservoir < 0 or context < 0 or batch_size < 1:
        raise ConfigError(
            f"expected n_top >= 1, n_reservoir >= 0, context >= 0, batch_size >= 1; got n_top="
            f"{n_top}, n_reservoir={n_reservoir}, context={context}, batch_size={batch_size}."
        )
    host = as_host(model)
    transcoders = as_transcoders(transcoders).to(device=host.device, dtype=host.dtype)
    layers = list(transcoders.layers)
    sites = {la: transcoders.hook_in(la) for la in layers}
    window = 2 * context + 1
    gen = torch.Generator().manual_seed(seed)
    states = {la: _LayerState(transcoders.d_sae(la), n_top, n_reservoir, window, gen) for la in layers}
    max_len = max_tokens_per_text or host.n_ctx or 1024
    n_tokens = 0
    n_texts = 0

    def run_batch(batch: list[torch.Tensor]) -> None:
        nonlocal n_tokens
        lengths = torch.tensor([len(t) for t in batch])
        t_max = int(lengths.max())
        tokens = torch.zeros(len(batch), t_max, dtype=torch.long)
        for i, t in enumerate(batch):
            tokens[i, : len(t)] = t
        valid = torch.arange(t_max)[None, :] < lengths[:, None]
        if skip_bos and host.bos_token_id is not None:
            valid[:, 0] &= tokens[:, 0] != host.bos_token_id
        n_tokens += int(valid.sum())
        captured = activations_at(host, tokens, list(sites.values()))
        padded_tok = torch.nn.functional.pad(tokens, (context, context), value=-1).to(torch.int32)
        offsets = torch.arange(window)
        for la in layers:
            with torch.no_grad():
                acts = transcoders.encode(la, captured[sites[la]]).float().cpu()  # [batch, pos, d_sae]
            acts = acts * valid[..., None]
            st = states[la]
            st.count += (acts > 0).sum((0, 1)).double()
            st.act_max = torch.maximum(st.act_max, acts.amax((0, 1)))
            val, pos = acts.max(dim=1)  # [batch, d_sae]
            idx = (pos[..., None] + offsets).clamp(max=t_max + 2 * context - 1)  # [batch, d_sae, window]
            acts_p = torch.nn.functional.pad(acts.transpose(1, 2), (context, context))
            win_act = acts_p.gather(2, idx)
            win_tok = padded_tok[:, None, :].expand(-1, acts.shape[2], -1).gather(2, idx)
            st.update(val.T, win_tok.transpose(0, 1), win_act.transpose(0, 1))

    batch: list[torch.Tensor] = []
    for text in tqdm(texts, desc="dashboards", unit="text", disable=not progress):
        ids = host.tokenize(text) if isinstance(text, str) else torch.as_tensor(list(text), dtype=torch.long)
        if ids.numel() == 0:
            continue
        batch.append(ids[:max_len].cpu())
        n_texts += 1
        if len(batch) == batch_size:
            run_batch(batch)
            batch = []
    if batch:
        run_batch(batch)
    if n_texts == 0:
        raise ConfigError("build_dashboards got no non-empty texts; pass a list of strings or token-id lists.")

    tensors: dict[str, torch.Tensor] = {}
    for la in layers:
        tensors.update(states[la].tensors(la, n_tokens))
        tensors.update(_logit_tensors(la, transcoders, host.W_U.detach(), n_logits))
    used = torch.cat([t.flatten() for k, t in tensors.items() if k.endswith(("_tok", "_ids"))]).unique()
    used = used[used >= 0].tolist()
    index = {
        "format_version": FORMAT_VERSION,
        "layers": layers,
        "d_sae": {str(la): transcoders.d_sae(la) for la in layers},
        "n_texts": n_texts,
        "n_tokens": n_tokens,
        "context": context,
        "n_quantiles": n_quantiles,
        "token_strings": dict(zip(map(str, used), host.token_strings(used))),
    }
    _save(out_path, tensors, index)
    return Dashboards.open(out_path)


def _logit_tensors(layer: int, transcoders: Any, W_U: Float[torch.Tensor, "d_model d_vocab"],
                   k: int) -> dict[str, torch.Tensor]:
    """Top and bottom ``k`` of ``W_dec @ W_U`` per feature, in chunks of rows. A cross-layer
    feature's decoder rows (one per layer it writes to) are summed: its total direct write."""
    k = min(k, W_U.shape[1])
    parts: list[tuple[torch.Tensor, ...]] = []
    d_sae = transcoders.d_sae(layer)
    for start in range(0, d_sae, 1024):
        idx = torch.arange(start, min(start + 1024, d_sae))
        with torch.no_grad():
            vecs = transcoders.decoder_vectors(layer, idx).values()
            rows = torch.stack([v.detach().to(W_U.device, W_U.dtype) for v in vecs]).sum(0)
            logits = (rows @ W_U).float().cpu()
        top, bot = logits.topk(k, dim=1), logits.topk(k, dim=1, largest=False)
        parts.append((top.values, top.indices, bot.values, bot.indices))
    names = ("logit_top_val", "logit_top_ids", "logit_bot_val", "logit_bot_ids")
    out = {f"L{layer}.{n}": torch.cat([p[i] for p in parts]) for i, n in enumerate(names)}
    for n in ("logit_top_ids", "logit_bot_ids"):
        out[f"L{layer}.{n}"] = out[f"L{layer}.{n}"].to(torch.int32)
    return out


def _save(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], index: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path, directory=True) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / TENSORS_FILE))
        (tmp / INDEX_FILE).write_text(json.dumps(index), encoding="utf-8")


class Dashboards:
    """Read access to dashboards written by :func:`build_dashboards`; one feature at a time."""

    def __init__(self, path: Path, index: dict[str, Any]):
        self.path = path
        self.index = index
        self.layers: list[int] = [int(la) for la in index["layers"]]
        self._strings: dict[str, str] = index["token_strings"]

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Dashboards:
        """Open a dashboards directory (reads only the JSON index)."""
        root = Path(path)
        if not (root / INDEX_FILE).is_file() or not (root / TENSORS_FILE).is_file():
            raise FileFormatError(
                f"no dashboards at {root}: expected {INDEX_FILE} and {TENSORS_FILE} there; build "
                "them with tl_circuits.build_dashboards(model, transcoders, texts, out_path=...)."
            )
        try:
            index = json.loads((root / INDEX_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FileFormatError(f"{root / INDEX_FILE} is not valid JSON ({e}); rebuild the dashboards.") from e
        version = index.get("format_version") if isinstance(index, dict) else None
        if version != FORMAT_VERSION:
            raise FileFormatError(
                f"dashboards at {root} have format version {version!r}, expected {FORMAT_VERSION}; "
                "rebuild them with this version of tl_circuits."
            )
        return cls(root, index)

    def d_sae(self, layer: int) -> int:
        return int(self.index["d_sae"][str(layer)])

    def has(self, layer: int, index: int) -> bool:
        """Whether dashboards cover feature ``index`` of ``layer``."""
        return layer in self.layers and 0 <= index < self.d_sae(layer)

    def _strs(self, ids: Sequence[int]) -> list[str]:
        return [self._strings.get(str(i), f"<{i}>") for i in ids]

    def feature(self, layer: int, index: int) -> dict[str, Any]:
        """One feature's dashboard as a JSON-ready dict (Neuronpedia-like field names).

        Keys: ``layer``, ``index``, ``density``, ``act_max``, ``examples_quantiles`` (list of
        ``{quantile_name, examples: [{tokens, tokens_acts_list, max_act}]}``), ``top_logits``,
        ``top_logits_values``, ``bottom_logits``, ``bottom_logits_values``.
        """
        from safetensors import safe_open

        if not self.has(layer, index):
            raise KeyError(
                f"no dashboard for layer {layer} feature {index}; these dashboards cover layers "
                f"{self.layers} with d_sae {self.index['d_sae']}"
            )
        with safe_open(str(self.path / TENSORS_FILE), framework="pt") as f:
            def row(name: str) -> torch.Tensor:
                return f.get_slice(f"L{layer}.{name}")[index : index + 1][0]

            groups = [("Top activations", row("top_val"), row("top_tok"), row("top_act"))]
            res_val, res_tok, res_act = row("res_val"), row("res_tok"), row("res_act")
            n_active = int((res_val > 0).sum())
            n_q = max(1, int(self.index["n_quantiles"]))
            for q in range(n_q):
                lo, hi = q * n_active // n_q, (q + 1) * n_active // n_q
                if hi > lo:
                    groups.append((f"Quantile {q + 1}/{n_q}", res_val[lo:hi], res_tok[lo:hi], res_act[lo:hi]))
            out: dict[str, Any] = {
                "layer": layer,
                "index": index,
                "density": float(row("density")),
                "act_max": float(row("act_max")),
                "examples_quantiles": [
                    {"quantile_name": name, "examples": self._examples(vals, toks, acts)}
                    for name, vals, toks, acts in groups
                ],
            }
            for side in ("top", "bot"):
                key = "top_logits" if side == "top" else "bottom_logits"
                out[key] = self._strs(row(f"logit_{side}_ids").tolist())
                out[key + "_values"] = [round(v, 5) for v in row(f"logit_{side}_val").tolist()]
        return out

    def _examples(self, vals: torch.Tensor, toks: torch.Tensor, acts: torch.Tensor) -> list[dict[str, Any]]:
        examples = []
        for v, t, a in zip(vals.tolist(), toks.tolist(), acts.float().tolist()):
            if v <= 0:
                continue
            keep = [i for i, tok in enumerate(t) if tok >= 0]
            examples.append({
                "tokens": self._strs([t[i] for i in keep]),
                "tokens_acts_list": [round(a[i], 4) for i in keep],
                "max_act": round(v, 5),
            })
        return examples
