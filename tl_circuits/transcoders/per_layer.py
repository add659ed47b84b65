"""A per-layer transcoder: reads one hook (e.g. an MLP input), writes another (the MLP output).

The math (Dunefsky et al. 2024, "Transcoders find interpretable LLM feature circuits"; Ameisen et
al. 2025, "Circuit tracing", section 2.1), for ``x`` of shape ``[..., d_in]``::

    pre   = x @ W_enc + b_enc                               [..., d_sae]
    acts  = relu(pre)                                       activation="relu"
          | relu(pre) * (pre > threshold)                   activation="jumprelu"
          | relu of the k largest entries of pre, 0 else    activation="topk"
    out   = acts @ W_dec + b_dec + x @ W_skip.T             [..., d_out]  (W_skip optional)

The activation functions (and any a release format registers) live in :mod:`.activations`.
Weights follow sae_lens' shapes and names (``W_skip`` is ``[d_out, d_in]``), and ``save``/``load``
use its directory format.
"""

import copy
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from jaxtyping import Float
from torch import nn

from tl_circuits._atomic import atomic_path
from tl_circuits.errors import ConfigError
from tl_circuits.transcoders import saelens_io
from tl_circuits.transcoders.activations import get_activation
from tl_circuits.transcoders.checks import check_input_width, check_ndims, check_shapes
from tl_circuits.transcoders.saelens_io import TranscoderSpec

_LAYER_RE = re.compile(r"blocks\.(\d+)\.")
_PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec", "W_skip", "threshold")


def layer_of_hook(hook_name: str) -> int:
    """The layer index in a TransformerLens hook name: ``"blocks.3.ln2.hook_normalized"`` -> 3."""
    match = _LAYER_RE.search(hook_name)
    if match is None:
        raise ConfigError(
            f"hook name {hook_name!r} has no layer; expected a TransformerLens name such as "
            "'blocks.3.ln2.hook_normalized'."
        )
    return int(match.group(1))


class Transcoder(nn.Module):
    """One layer's transcoder, in sae_lens' parameter layout.

    Args:
        W_enc: ``[d_in, d_sae]``; b_enc: ``[d_sae]``; W_dec: ``[d_sae, d_out]``; b_dec: ``[d_out]``.
        hook_name / hook_name_out: the TransformerLens hooks read and written; the layer is
            parsed from ``hook_name``.
        activation: ``"relu"``, ``"jumprelu"`` (needs ``threshold [d_sae]``) or ``"topk"``
            (needs ``k``); any name registered in :mod:`.activations`.
        W_skip: optional ``[d_out, d_in]`` linear skip connection.
        cfg: the SAELens ``cfg.json`` dictionary, kept whole so ``save`` writes it back unchanged;
            built from the arguments when omitted.

    The tensors become frozen ``nn.Parameter``s sharing storage with the arguments. ``to`` is
    ``nn.Module.to`` (in place); :meth:`converted` returns a moved or cast copy instead.

    Example:
        >>> import torch
        >>> tc = Transcoder(torch.randn(8, 16), torch.zeros(16), torch.randn(16, 8),
        ...                 torch.zeros(8), hook_name="blocks.0.ln2.hook_normalized",
        ...                 hook_name_out="blocks.0.hook_mlp_out")
        >>> tc(torch.randn(2, 5, 8)).shape
        torch.Size([2, 5, 8])
    """

    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter
    W_skip: nn.Parameter | None
    threshold: nn.Parameter | None

    def __init__(
        self,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        W_dec: torch.Tensor,
        b_dec: torch.Tensor,
        *,
        hook_name: str,
        hook_name_out: str,
        activation: str = "relu",
        threshold: torch.Tensor | None = None,
        k: int | None = None,
        W_skip: torch.Tensor | None = None,
        cfg: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        spec = _check_arguments(
            W_enc, b_enc, W_dec, b_dec, W_skip, threshold, activation, k, hook_name, hook_name_out
        )
        if cfg is None:
            cfg = saelens_io.build_cfg(spec=spec, dtype=W_enc.dtype)
        else:
            _check_cfg_agrees(saelens_io.parse_cfg(cfg, source="cfg"), spec)
        self.cfg: dict[str, Any] = copy.deepcopy(dict(cfg))
        self.hook_name = hook_name
        self.hook_name_out = hook_name_out
        self.layer = layer_of_hook(hook_name)
        self.activation = activation
        self.k = k
        tensors = [W_enc, b_enc, W_dec, b_dec, W_skip, threshold]
        for name, tensor in zip(_PARAM_NAMES, tensors, strict=True):
            param = None if tensor is None else nn.Parameter(tensor.detach(), requires_grad=False)
            self.register_parameter(name, param)

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @property
    def d_out(self) -> int:
        return self.W_dec.shape[1]

    @property
    def has_skip(self) -> bool:
        return self.W_skip is not None

    # ---- math --------------------------------------------------------------------------------
    def pre_activation(
        self, x: Float[torch.Tensor, "... d_in"]
    ) -> Float[torch.Tensor, "... d_sae"]:
        """``x @ W_enc + b_enc``; ``x`` is cast to the weights' dtype (as sae_lens does)."""
        check_input_width(x, self.d_in, f"transcoder for {self.hook_name!r}")
        return x.to(self.W_enc.dtype) @ self.W_enc + self.b_enc

    def activation_fn(
        self, pre: Float[torch.Tensor, "... d_sae"]
    ) -> Float[torch.Tensor, "... d_sae"]:
        """Feature activations from pre-activations (relu, jumprelu or topk; see module doc)."""
        return get_activation(self.activation)(pre, threshold=self.threshold, k=self.k)

    def encode(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_sae"]:
        """Feature activations ``activation_fn(pre_activation(x))``."""
        return self.activation_fn(self.pre_activation(x))

    def decode(self, acts: Float[torch.Tensor, "... d_sae"]) -> Float[torch.Tensor, "... d_out"]:
        """``acts @ W_dec + b_dec`` (without the skip connection)."""
        return acts.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def skip(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_out"]:
        """``x @ W_skip.T``, or zeros of shape ``[..., d_out]`` when there is no skip."""
        if self.W_skip is None:
            return torch.zeros(
                (*x.shape[:-1], self.d_out), dtype=self.W_dec.dtype, device=self.W_dec.device
            )
        return x.to(self.W_skip.dtype) @ self.W_skip.T

    def forward(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_out"]:
        """The reconstruction ``decode(encode(x)) + skip(x)`` of the output hook."""
        return self.decode(self.encode(x)) + self.skip(x)

    def extra_repr(self) -> str:
        return (
            f"layer={self.layer}, d_in={self.d_in}, d_sae={self.d_sae}, d_out={self.d_out}, "
            f"activation={self.activation!r}"
            + (f", k={self.k}" if self.k is not None else "")
            + f", skip={self.has_skip}"
        )

    # ---- files and conversion ----------------------------------------------------------------
    def converted(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> "Transcoder":
        """This transcoder on ``device`` in ``dtype`` as a new object (tensors that need no
        conversion are shared), or ``self`` when nothing changes; ``self`` is never changed."""
        params = dict(self.named_parameters())
        moved = {name: p.to(device=device, dtype=dtype) for name, p in params.items()}
        if all(moved[name] is p for name, p in params.items()):
            return self
        return type(self)._from_spec(self.cfg, saelens_io.parse_cfg(self.cfg), moved)

    def state_for_saving(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(cfg, tensors) as written to disk; ``cfg["dtype"]`` follows the current weights."""
        cfg = copy.deepcopy(self.cfg)
        if saelens_io.dtype_from_str(cfg.get("dtype")) != self.W_enc.dtype:
            cfg["dtype"] = saelens_io.dtype_to_str(self.W_enc.dtype)
        return cfg, {name: p.detach() for name, p in self.named_parameters()}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a SAELens directory (``cfg.json``, ``sae_weights.safetensors``) atomically."""
        with atomic_path(path, directory=True) as tmp:
            saelens_io.write_dir(tmp, *self.state_for_saving())

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> "Transcoder":
        """Read a SAELens transcoder directory (saved by this class or by sae_lens' save_model).

        ``dtype`` defaults to the config's ``dtype`` field (as sae_lens does), ``device`` to CPU;
        the config's ``device`` field is ignored.
        """
        cfg, spec, tensors = saelens_io.read_dir(path)
        dtype = dtype or saelens_io.dtype_from_str(cfg.get("dtype"))
        tensors = {n: t.to(device=device, dtype=dtype or t.dtype) for n, t in tensors.items()}
        return cls._from_spec(cfg, spec, tensors)

    @classmethod
    def from_sae_lens(cls, sae: Any) -> "Transcoder":
        """Copy a sae_lens transcoder (``Transcoder``, ``SkipTranscoder``, ``JumpReLUTranscoder``,
        ``JumpReLUSkipTranscoder``, or a TopK one with ``d_out``) into this class, losslessly."""
        cfg, spec, tensors = saelens_io.read_sae_lens(sae)
        return cls._from_spec(cfg, spec, tensors)

    @classmethod
    def _from_spec(
        cls, cfg: dict[str, Any], spec: TranscoderSpec, tensors: dict[str, torch.Tensor]
    ) -> "Transcoder":
        return cls(
            tensors["W_enc"],
            tensors["b_enc"],
            tensors["W_dec"],
            tensors["b_dec"],
            hook_name=spec.hook_name,
            hook_name_out=spec.hook_name_out,
            activation=spec.activation,
            threshold=tensors.get("threshold"),
            k=spec.k,
            W_skip=tensors.get("W_skip"),
            cfg=cfg,
        )


def _check_arguments(
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    W_skip: torch.Tensor | None,
    threshold: torch.Tensor | None,
    activation: str,
    k: int | None,
    hook_name: str,
    hook_name_out: str,
) -> TranscoderSpec:
    act = get_activation(activation)
    check_ndims({"W_enc": (W_enc, "[d_in, d_sae]"), "W_dec": (W_dec, "[d_sae, d_out]")})
    d_in, d_sae = W_enc.shape
    d_out = W_dec.shape[1]
    check_shapes(
        {
            "W_dec": (W_dec, (d_sae, d_out)),
            "b_enc": (b_enc, (d_sae,)),
            "b_dec": (b_dec, (d_out,)),
            "W_skip": (W_skip, (d_out, d_in)),
        },
        f"from W_enc {tuple(W_enc.shape)} = [d_in, d_sae] and W_dec {tuple(W_dec.shape)} = "
        "[d_sae, d_out] (W_dec's rows must equal W_enc's columns; W_skip is [d_out, d_in])",
    )
    act.check(d_sae, threshold, k)
    layer_of_hook(hook_name)
    has_skip = W_skip is not None
    return TranscoderSpec(
        architecture=saelens_io.architecture_name(activation, has_skip),
        activation=activation,
        has_skip=has_skip,
        hook_name=hook_name,
        hook_name_out=hook_name_out,
        d_in=d_in,
        d_sae=d_sae,
        d_out=d_out,
        k=k,
    )


def _check_cfg_agrees(from_cfg: TranscoderSpec, from_args: TranscoderSpec) -> None:
    fields = ("activation", "has_skip", "hook_name", "hook_name_out", "d_in", "d_sae", "d_out", "k")
    for field in fields:
        in_cfg, in_args = getattr(from_cfg, field), getattr(from_args, field)
        if in_cfg != in_args:
            raise ConfigError(
                f"cfg says {field}={in_cfg!r} but the arguments give {in_args!r}; pass a cfg that "
                "describes these tensors, or cfg=None to build one."
            )
