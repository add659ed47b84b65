"""Activation functions of transcoder features, by name: one registry read by per-layer and
cross-layer transcoders at inference and by the training stack.

For pre-activations ``pre [..., d_sae]`` (Ameisen et al. 2025, "Circuit tracing", section 2.1)::

    relu(pre)             = max(pre, 0)
    jumprelu(pre; theta)  = relu(pre) * H(pre - theta)        theta: [d_sae] per-feature thresholds
    topk(pre; k)          = relu(pre) at the k largest entries of each row, 0 elsewhere
    jumprelu_signed(pre; theta) = pre * H(pre - theta)      circuit-tracer's JumpReLU (equals
                                                            jumprelu when every theta >= 0)
    topk_signed(pre; k)   = pre at the k largest entries    circuit-tracer's TopK (no relu: a
                                                            negative value among the k is kept)

The two signed forms are what circuit-tracer-format releases need (a negative threshold,
``activation: topk`` in a ``config.yaml``), so their graphs match circuit-tracer's.

Training forms (used by :mod:`tl_circuits.training.stack`) have the same forward values, with
gradients the inference forms lack. JumpReLU and its L0 penalty use the straight-through
estimator of Rajamanoharan et al. 2024 ("Jumping ahead", section 4), on ``log theta`` with a
rectangle kernel ``K(u) = 1[|u| < eps/2] / eps``::

    d jumprelu / d log theta = -theta^2 K(pre - theta)      (pre > theta > 0, so relu is inactive)
    d H(pre - theta) / d log theta = -theta K(pre - theta)

TopK trains through its ``k`` values and indices (a sparse decode reads only those rows).

A release format with another activation (batch TopK, a JumpReLU parameterised differently)
adds one :class:`Activation` with :func:`register_activation`; transcoders then accept its name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from tl_circuits.errors import ConfigError

BANDWIDTH = 0.05
"""Width ``eps`` of the straight-through kernel of JumpReLU training (normalised units)."""

Forward = Callable[[torch.Tensor, torch.Tensor | None, int | None], torch.Tensor]


@dataclass(frozen=True)
class Activation:
    """One activation function: its inference form and which parameters it takes.

    Args:
        name: the name transcoders and configs use (``"jumprelu"``).
        forward: ``(pre [..., d_sae], threshold [d_sae] | None, k | None) -> acts [..., d_sae]``.
        uses_threshold: takes per-feature thresholds ``[d_sae]``.
        uses_k: takes an integer ``0 < k <= d_sae``.
        trainable: :mod:`tl_circuits.training` can train it (it has a training form here).
    """

    name: str
    forward: Forward
    uses_threshold: bool = False
    uses_k: bool = False
    trainable: bool = False

    def __call__(
        self,
        pre: Float[torch.Tensor, "... d_sae"],
        *,
        threshold: Float[torch.Tensor, " d_sae"] | None = None,
        k: int | None = None,
    ) -> Float[torch.Tensor, "... d_sae"]:
        """Feature activations from pre-activations (parameters checked by :meth:`check`)."""
        return self.forward(pre, threshold, k)

    def check(
        self, d_sae: int, threshold: torch.Tensor | None, k: int | None, *, where: str = ""
    ) -> None:
        """Raise a ConfigError unless ``threshold`` and ``k`` fit this activation and ``d_sae``;
        ``where`` names the layer in messages (``"[2]"`` for a cross-layer transcoder)."""
        name = f"activation={self.name!r}"
        if self.uses_threshold:
            if threshold is None:
                raise ConfigError(f"{name} needs a threshold tensor of shape [d_sae]{where}.")
            if tuple(threshold.shape) != (d_sae,):
                raise ConfigError(
                    f"threshold{where} has shape {tuple(threshold.shape)}, expected ({d_sae},) = "
                    "[d_sae], one threshold per feature."
                )
        elif threshold is not None:
            users = _users("uses_threshold")
            raise ConfigError(
                f"threshold is only used by activation={users}, not {self.name!r}; drop it or "
                "pick that activation."
            )
        if self.uses_k:
            if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= d_sae:
                raise ConfigError(
                    f"{name} needs an integer k with 0 < k <= d_sae={d_sae}, got {k!r}."
                )
        elif k is not None:
            raise ConfigError(
                f"k is only used by activation={_users('uses_k')}, not {self.name!r}; drop it or "
                "pick that activation."
            )


_REGISTRY: dict[str, Activation] = {}


def register_activation(activation: Activation, *, replace: bool = False) -> Activation:
    """Add ``activation`` to the registry (``replace=True`` to redefine a name) and return it."""
    if activation.name in _REGISTRY and not replace:
        raise ConfigError(
            f"an activation named {activation.name!r} is already registered; pick another name "
            "or pass replace=True."
        )
    _REGISTRY[activation.name] = activation
    return activation


def activation_names() -> tuple[str, ...]:
    """Names of the registered activations, in registration order."""
    return tuple(_REGISTRY)


def get_activation(name: str) -> Activation:
    """The registered activation called ``name``; a ConfigError listing the names otherwise.

    Example:
        >>> import torch
        >>> get_activation("topk")(torch.tensor([[0.5, -1.0, 2.0, 1.0]]), k=2)
        tensor([[0., 0., 2., 1.]])
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"activation={name!r} is not supported; use one of {activation_names()} (or register "
            "one with tl_circuits.transcoders.activations.register_activation)."
        ) from None


def trainable_activation(name: str) -> Activation:
    """The registered activation ``name``, if training has a form for it; a ConfigError if not."""
    activation = get_activation(name)
    if not activation.trainable:
        can = tuple(n for n, a in _REGISTRY.items() if a.trainable)
        raise ConfigError(f"activation {name!r} cannot be trained here; train one of {can}.")
    return activation


def _users(flag: str) -> str:
    return " or ".join(repr(n) for n, a in _REGISTRY.items() if getattr(a, flag))


# ---- inference forms ---------------------------------------------------------------------------
def _relu(pre: torch.Tensor, threshold: torch.Tensor | None, k: int | None) -> torch.Tensor:
    return pre.relu()


def _jumprelu(pre: torch.Tensor, threshold: torch.Tensor | None, k: int | None) -> torch.Tensor:
    assert threshold is not None
    return pre.relu() * (pre > threshold).to(pre.dtype)


def topk_sparse(
    pre: Float[torch.Tensor, "... d_sae"], k: int
) -> tuple[Float[torch.Tensor, "... k"], Int[torch.Tensor, "... k"]]:
    """The ``k`` largest pre-activations of each row, relu'd, and their feature ids (unsorted);
    the same selection as sae_lens' ``TopK``. Inference scatters them, training decodes them."""
    values, indices = torch.topk(pre, k=k, dim=-1, sorted=False)
    return values.relu(), indices


def _topk(pre: torch.Tensor, threshold: torch.Tensor | None, k: int | None) -> torch.Tensor:
    assert k is not None
    values, indices = topk_sparse(pre, k)
    return torch.zeros_like(pre).scatter(-1, indices, values)


def _jumprelu_signed(pre: torch.Tensor, threshold: torch.Tensor | None, k: int | None) -> torch.Tensor:
    assert threshold is not None
    return pre * (pre > threshold).to(pre.dtype)


def _topk_signed(pre: torch.Tensor, threshold: torch.Tensor | None, k: int | None) -> torch.Tensor:
    assert k is not None
    values, indices = torch.topk(pre, k=k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, indices, values)


RELU = register_activation(Activation("relu", _relu, trainable=False))
JUMPRELU = register_activation(Activation("jumprelu", _jumprelu, uses_threshold=True, trainable=True))
TOPK = register_activation(Activation("topk", _topk, uses_k=True, trainable=True))
JUMPRELU_SIGNED = register_activation(Activation("jumprelu_signed", _jumprelu_signed, uses_threshold=True))
TOPK_SIGNED = register_activation(Activation("topk_signed", _topk_signed, uses_k=True))


# ---- training forms ----------------------------------------------------------------------------
def _kernel(pre: torch.Tensor, thr: torch.Tensor, bandwidth: float) -> torch.Tensor:
    return ((pre - thr).abs() < bandwidth / 2).to(pre.dtype) / bandwidth


class _JumpReLUSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, log_thr, bandwidth):  # type: ignore[override]
        thr = log_thr.exp()
        ctx.save_for_backward(pre, thr)
        ctx.bandwidth = bandwidth
        return pre * (pre > thr).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        pre, thr = ctx.saved_tensors
        g_thr = -thr * thr * _kernel(pre, thr, ctx.bandwidth) * grad
        return grad * (pre > thr).to(pre.dtype), g_thr.sum_to_size(thr.shape), None


class _StepSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, log_thr, bandwidth):  # type: ignore[override]
        thr = log_thr.exp()
        ctx.save_for_backward(pre, thr)
        ctx.bandwidth = bandwidth
        return (pre > thr).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        pre, thr = ctx.saved_tensors
        g_thr = -thr * _kernel(pre, thr, ctx.bandwidth) * grad
        return None, g_thr.sum_to_size(thr.shape), None


def jumprelu_ste(
    pre: Float[torch.Tensor, "*batch d_sae"],
    log_threshold: Float[torch.Tensor, "*#batch d_sae"],
    bandwidth: float = BANDWIDTH,
) -> Float[torch.Tensor, "*batch d_sae"]:
    """JumpReLU for training: ``pre * H(pre - exp(log_threshold))``, the inference values for
    positive thresholds, with the straight-through gradient on ``log_threshold`` (module doc).
    ``log_threshold`` broadcasts against ``pre``; its gradient is summed back to its shape."""
    out = _JumpReLUSTE.apply(pre, log_threshold, bandwidth)
    assert isinstance(out, torch.Tensor)
    return out


def step_ste(
    pre: Float[torch.Tensor, "*batch d_sae"],
    log_threshold: Float[torch.Tensor, "*#batch d_sae"],
    bandwidth: float = BANDWIDTH,
) -> Float[torch.Tensor, "*batch d_sae"]:
    """``H(pre - exp(log_threshold))`` (which features fire, summed for an L0 penalty), with the
    straight-through gradient on ``log_threshold`` and none on ``pre``."""
    out = _StepSTE.apply(pre, log_threshold, bandwidth)
    assert isinstance(out, torch.Tensor)
    return out
