"""CrossLayerTranscoder: features read one layer's MLP input and write every later MLP output.

For layer ``l``'s input ``x_l`` and output layer ``m`` (Ameisen et al. 2025, section 2.1)::

    acts_l  = act(x_l @ W_enc[l] + b_enc[l])                          [..., d_sae]
    y_hat_m = sum_{l <= m} acts_l @ W_dec[l][:, m - l] + b_dec[m] + x_m @ W_skip[m].T

``W_dec[l]`` has shape ``[d_sae, n_layers - l, d_out]`` and ``W_skip[m]`` ``[d_out, d_in]`` (the
convention of per-layer transcoders and of the training stack). Files use circuit-tracer's
layout: for each layer ``W_enc_{l}.safetensors`` (``W_enc_{l} [d_sae, d_in]``, ``b_enc_{l}``,
``b_dec_{l}``, optional ``threshold_{l}`` and ``W_skip_{l} [d_in, d_out]``, which circuit-tracer
applies as ``x @ W_skip``) and ``W_dec_{l}.safetensors`` (``W_dec_{l}``), plus ``config.json``
(hooks, activation, k, training metadata); ``save`` and ``load`` transpose ``W_enc`` and
``W_skip`` at that boundary only. Directories without ``config.json`` load with circuit-tracer's
defaults (``hook_resid_mid`` -> ``hook_mlp_out``, JumpReLU when thresholds are present, else ReLU).

The class implements the transcoder protocol (:class:`~tl_circuits.transcoders.Transcoders`)
itself; it is not a sequence of per-layer transcoders and subclasses none.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tl_circuits._atomic import atomic_path
from tl_circuits.errors import ConfigError, FileFormatError
from tl_circuits.transcoders.activations import get_activation
from tl_circuits.transcoders.checks import check_input_width, check_ndims, check_shapes

CONFIG_FILENAME = "config.json"
PathLike = str | os.PathLike[str]
_TENSOR_LISTS = ("_W_enc", "_b_enc", "_W_dec", "_b_dec", "_threshold", "_W_skip")


class CrossLayerTranscoder:
    """A cross-layer transcoder over layers ``0..n_layers-1`` (see module docstring).

    Args:
        W_enc: per layer ``[d_in, d_sae]``; b_enc: per layer ``[d_sae]``.
        W_dec: per layer ``l`` a ``[d_sae, n_layers - l, d_out]`` tensor; b_dec: per layer ``[d_out]``.
        activation: ``"relu"``, ``"jumprelu"`` (``threshold``: per layer ``[d_sae]``) or ``"topk"``
            (``k``, applied per layer); any name registered in :mod:`.activations`.
        W_skip: optional, per output layer ``[d_out, d_in]`` (``skip = x @ W_skip.T``).
        hook_in / hook_out: per layer TransformerLens hook names read / written.
        extra_config: more JSON-able fields for ``config.json`` (e.g. training settings, metrics).

    Example:
        >>> import torch
        >>> L, d, f = 2, 8, 16
        >>> clt = CrossLayerTranscoder(
        ...     W_enc=[torch.randn(d, f) for _ in range(L)], b_enc=[torch.zeros(f)] * L,
        ...     W_dec=[torch.randn(f, L - l, d) for l in range(L)], b_dec=[torch.zeros(d)] * L,
        ...     hook_in=[f"blocks.{l}.hook_resid_mid" for l in range(L)],
        ...     hook_out=[f"blocks.{l}.hook_mlp_out" for l in range(L)])
        >>> sorted(clt.decoder_vectors(0, torch.tensor([3, 5])))
        [0, 1]
    """

    is_cross_layer = True

    def __init__(
        self,
        *,
        W_enc: Sequence[torch.Tensor],
        b_enc: Sequence[torch.Tensor],
        W_dec: Sequence[torch.Tensor],
        b_dec: Sequence[torch.Tensor],
        hook_in: Sequence[str],
        hook_out: Sequence[str],
        activation: str = "relu",
        threshold: Sequence[torch.Tensor] | None = None,
        k: int | None = None,
        W_skip: Sequence[torch.Tensor] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        L = len(W_enc)
        if L == 0:
            raise ConfigError("a CrossLayerTranscoder needs at least one layer, got none.")
        lists = {"b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "hook_in": hook_in,
                 "hook_out": hook_out}
        if threshold is not None:
            lists["threshold"] = threshold
        if W_skip is not None:
            lists["W_skip"] = W_skip
        for name, items in lists.items():
            if len(items) != L:
                raise ConfigError(f"{name} has {len(items)} entries, expected one per layer ({L}).")
        act = get_activation(activation)
        check_ndims({"W_enc[0]": (W_enc[0], "[d_in, d_sae]"), "b_dec[0]": (b_dec[0], "[d_out]")})
        d_in, d_sae = W_enc[0].shape
        d_out = b_dec[0].shape[0]
        for la in range(L):
            check_shapes(
                {f"W_enc[{la}]": (W_enc[la], (d_in, d_sae)), f"b_enc[{la}]": (b_enc[la], (d_sae,)),
                 f"W_dec[{la}]": (W_dec[la], (d_sae, L - la, d_out)),
                 f"b_dec[{la}]": (b_dec[la], (d_out,)),
                 f"W_skip[{la}]": (None if W_skip is None else W_skip[la], (d_out, d_in))},
                f"(d_in={d_in}, d_sae={d_sae}, d_out={d_out}, n_layers={L}; W_skip is [d_out, d_in])",
            )
            act.check(d_sae, None if threshold is None else threshold[la], k, where=f"[{la}]")
        self.n_layers = L
        self.activation = activation
        self.k = k
        self._W_enc = [t.detach() for t in W_enc]
        self._b_enc = [t.detach() for t in b_enc]
        self._W_dec = [t.detach() for t in W_dec]
        self._b_dec = [t.detach() for t in b_dec]
        self._threshold = None if threshold is None else [t.detach() for t in threshold]
        self._W_skip = None if W_skip is None else [t.detach() for t in W_skip]
        self._hook_in = list(hook_in)
        self._hook_out = list(hook_out)
        self.extra_config = dict(extra_config or {})

    # ---- files -------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: PathLike,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> CrossLayerTranscoder:
        """Read a circuit-tracer CLT directory (see module docstring) with safetensors only."""
        root = Path(path)
        if not root.is_dir():
            raise FileFormatError(
                f"CLT path {root} is not a directory; pass the folder holding "
                "W_enc_{l}.safetensors and W_dec_{l}.safetensors."
            )
        n = 0
        while (root / f"W_enc_{n}.safetensors").is_file():
            n += 1
        if n == 0:
            raise FileFormatError(f"no W_enc_0.safetensors in {root}; is this a circuit-tracer CLT?")
        cfg: dict[str, Any] = {}
        if (root / CONFIG_FILENAME).is_file():
            try:
                cfg = json.loads((root / CONFIG_FILENAME).read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise FileFormatError(f"{root / CONFIG_FILENAME} is not valid JSON ({exc}).") from exc
        enc, dec = [], []
        for la in range(n):
            enc.append(_read(root / f"W_enc_{la}.safetensors", ["W_enc", "b_enc", "b_dec"], la))
            dec.append(_read(root / f"W_dec_{la}.safetensors", ["W_dec"], la))
        has_thr = f"threshold_{0}" in enc[0]
        activation = cfg.get("activation", "jumprelu" if has_thr else "relu")
        in_suffix = cfg.get("feature_input_hook", "hook_resid_mid")
        out_suffix = cfg.get("feature_output_hook", "hook_mlp_out")

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype or t.dtype)

        try:
            top_k = cfg.get("k") if get_activation(activation).uses_k else None
            return cls(
                W_enc=[cast(e[f"W_enc_{la}"].T.contiguous()) for la, e in enumerate(enc)],
                b_enc=[cast(e[f"b_enc_{la}"]) for la, e in enumerate(enc)],
                W_dec=[cast(d[f"W_dec_{la}"]) for la, d in enumerate(dec)],
                b_dec=[cast(e[f"b_dec_{la}"]) for la, e in enumerate(enc)],
                threshold=[cast(e[f"threshold_{la}"]) for la, e in enumerate(enc)] if has_thr else None,
                W_skip=([cast(e[f"W_skip_{la}"].T.contiguous()) for la, e in enumerate(enc)]
                        if f"W_skip_{0}" in enc[0] else None),
                activation=activation, k=top_k,
                hook_in=[f"blocks.{la}.{in_suffix}" for la in range(n)],
                hook_out=[f"blocks.{la}.{out_suffix}" for la in range(n)],
                extra_config={k: v for k, v in cfg.items() if k in ("training", "metrics")},
            )
        except ConfigError as exc:
            raise FileFormatError(f"CLT files in {root} do not fit together: {exc}") from exc

    def save(self, path: PathLike) -> None:
        """Write the circuit-tracer layout plus ``config.json`` to ``path``, atomically
        (``W_enc`` and ``W_skip`` transposed to circuit-tracer's ``[d_sae, d_in]`` and ``[d_in, d_out]``)."""
        cfg = {
            "model_kind": "cross_layer_transcoder",
            "feature_input_hook": _suffix(self._hook_in[0]),
            "feature_output_hook": _suffix(self._hook_out[0]),
            "activation": self.activation, "n_layers": self.n_layers, "d_sae": self.d_sae(0),
            "d_in": self.d_in, "d_out": self.d_out, **self.extra_config,
        }
        if self.k is not None:
            cfg["k"] = self.k
        with atomic_path(path, directory=True) as tmp:
            for la in range(self.n_layers):
                enc = {f"W_enc_{la}": self._W_enc[la].T, f"b_enc_{la}": self._b_enc[la],
                       f"b_dec_{la}": self._b_dec[la]}
                if self._threshold is not None:
                    enc[f"threshold_{la}"] = self._threshold[la]
                if self._W_skip is not None:
                    enc[f"W_skip_{la}"] = self._W_skip[la].T  # circuit-tracer: [d_in, d_out]
                save_file({k: v.detach().cpu().contiguous() for k, v in enc.items()},
                          str(tmp / f"W_enc_{la}.safetensors"))
                save_file({f"W_dec_{la}": self._W_dec[la].detach().cpu().contiguous()},
                          str(tmp / f"W_dec_{la}.safetensors"))
            (tmp / CONFIG_FILENAME).write_text(json.dumps(cfg, indent=2), encoding="utf-8")

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> CrossLayerTranscoder:
        """This transcoder on ``device`` in ``dtype``: a new object (tensors that need no
        conversion are shared), or ``self`` when nothing changes; ``self`` is never changed."""
        moved = {}
        for name in _TENSOR_LISTS:
            items = getattr(self, name)
            moved[name] = None if items is None else [t.to(device=device, dtype=dtype) for t in items]
        if all(moved[n] is None or all(a is b for a, b in zip(moved[n], getattr(self, n), strict=True))
               for n in _TENSOR_LISTS):
            return self
        new = copy.copy(self)
        for name, items in moved.items():
            setattr(new, name, items)
        new._hook_in, new._hook_out = list(self._hook_in), list(self._hook_out)
        new.extra_config = copy.deepcopy(self.extra_config)
        return new

    # ---- container ---------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        """Layers whose MLP input is read: ``0..n_layers-1``."""
        return list(range(self.n_layers))

    @property
    def out_layers(self) -> list[int]:
        """Layers whose MLP output is written: ``0..n_layers-1``."""
        return list(range(self.n_layers))

    def __len__(self) -> int:
        """Number of layers (``len(clt.layers)``)."""
        return self.n_layers

    def __contains__(self, layer: object) -> bool:
        """Whether ``layer`` is one of ``layers``."""
        return isinstance(layer, int) and 0 <= layer < self.n_layers

    def __repr__(self) -> str:
        return (f"CrossLayerTranscoder(n_layers={self.n_layers}, d_sae={self.d_sae(0)}, "
                f"activation={self.activation!r}, skip={self._W_skip is not None})")

    # ---- protocol read by the attribution core -------------------------------------------------
    def hook_in(self, layer: int) -> str:
        """TransformerLens hook ``layer``'s features read, e.g. ``blocks.3.hook_resid_mid``."""
        return self._hook_in[layer]

    def hook_out(self, layer: int) -> str:
        """TransformerLens hook the reconstruction of ``layer`` replaces, e.g. ``blocks.3.hook_mlp_out``."""
        return self._hook_out[layer]

    @property
    def d_in(self) -> int:
        """Width of the inputs read."""
        return int(self._W_enc[0].shape[0])

    @property
    def d_out(self) -> int:
        """Width of the outputs written."""
        return int(self._b_dec[0].shape[0])

    def d_sae(self, layer: int) -> int:
        """Number of features of ``layer``."""
        return int(self._W_enc[layer].shape[1])

    def has_skip(self, layer: int) -> bool:
        """Whether output layer ``layer`` has a skip term (all layers or none)."""
        return self._W_skip is not None

    def W_enc(self, layer: int) -> Float[torch.Tensor, "d_in d_sae"]:
        """Encoder ``[d_in, d_sae]`` of ``layer``'s features."""
        return self._W_enc[layer]

    def encoder_rows(self, layer: int, feature_idx: Int[torch.Tensor, " n"]) -> Float[torch.Tensor, "n d_in"]:
        """Encoder directions of features ``feature_idx`` of ``layer``."""
        W = self._W_enc[layer]
        return W[:, feature_idx.to(W.device)].T

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the weights."""
        return self._W_enc[0].dtype

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self._W_enc[0].device

    def W_dec(self, layer: int) -> Float[torch.Tensor, "d_sae n_out d_out"]:
        """Decoder of ``layer``'s features: ``[:, j]`` writes layer ``layer + j``."""
        return self._W_dec[layer]

    def b_dec(self, layer: int) -> Float[torch.Tensor, " d_out"]:
        """Decoder bias of output layer ``layer``."""
        return self._b_dec[layer]

    def W_skip(self, layer: int) -> Float[torch.Tensor, "d_out d_in"] | None:
        """Skip matrix ``[d_out, d_in]`` of output layer ``layer`` (None without a skip)."""
        return None if self._W_skip is None else self._W_skip[layer]

    def pre_activation(
        self, layer: int, x: Float[torch.Tensor, "... d_in"]
    ) -> Float[torch.Tensor, "... d_sae"]:
        """``x @ W_enc[layer] + b_enc[layer]``; ``x`` is cast to the weights' dtype."""
        check_input_width(x, self.d_in, f"CLT layer {layer}")
        W = self._W_enc[layer]
        return x.to(W.dtype) @ W + self._b_enc[layer]

    def encode(
        self, layer: int, x: Float[torch.Tensor, "... d_in"]
    ) -> Float[torch.Tensor, "... d_sae"]:
        """Feature activations of ``layer`` (the activation of :mod:`.activations`)."""
        threshold = None if self._threshold is None else self._threshold[layer]
        return get_activation(self.activation)(
            self.pre_activation(layer, x), threshold=threshold, k=self.k
        )

    def decoder_vectors(
        self, layer: int, feature_idx: Int[torch.Tensor, " n"]
    ) -> dict[int, Float[torch.Tensor, "n d_out"]]:
        """Decoder rows of features ``feature_idx`` of ``layer``, one entry per later layer."""
        rows = self._W_dec[layer][feature_idx.to(self._W_dec[layer].device)]
        return {layer + j: rows[:, j] for j in range(self.n_layers - layer)}

    def skip(
        self, out_layer: int, x: Float[torch.Tensor, "... d_in"]
    ) -> Float[torch.Tensor, "... d_out"]:
        """``x @ W_skip[out_layer].T`` (zeros without a skip)."""
        b = self._b_dec[out_layer]
        if self._W_skip is None:
            return torch.zeros((*x.shape[:-1], self.d_out), dtype=b.dtype, device=b.device)
        W = self._W_skip[out_layer]
        return x.to(W.dtype) @ W.T

    def reconstruct(
        self,
        out_layer: int,
        acts: dict[int, Float[torch.Tensor, "... d_sae"]],
        x: dict[int, Float[torch.Tensor, "... d_in"]],
    ) -> Float[torch.Tensor, "... d_out"]:
        """``sum_{l <= out_layer} acts[l] @ W_dec[l][:, out_layer - l] + b_dec + skip``; every
        layer ``l <= out_layer`` must be in ``acts``."""
        missing = [la for la in range(out_layer + 1) if la not in acts]
        if missing:
            raise ConfigError(f"reconstructing layer {out_layer} needs activations of layers {missing}.")
        out = self._b_dec[out_layer] + sum(
            acts[la].to(self._W_dec[la].dtype) @ self._W_dec[la][:, out_layer - la]
            for la in range(out_layer + 1)
        )
        if self._W_skip is not None:
            out = out + self.skip(out_layer, x[out_layer])
        return out


def _suffix(hook: str) -> str:
    parts = hook.split(".", 2)
    return parts[2] if len(parts) == 3 and parts[0] == "blocks" else hook


def _read(path: Path, names: list[str], layer: int) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileFormatError(f"{path} is missing; a CLT needs W_enc_{{l}} and W_dec_{{l}} files for every layer.")
    try:
        tensors = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise FileFormatError(f"{path} is corrupt or truncated ({exc}); re-download or re-save it.") from exc
    missing = [f"{n}_{layer}" for n in names if f"{n}_{layer}" not in tensors]
    if missing:
        raise FileFormatError(f"{path} lacks {missing} (found {sorted(tensors)}).")
    return tensors
