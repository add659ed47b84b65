"""Activation functions of released transcoders, by name, including two that circuit-tracer's
loaders use and ``relu`` / ``jumprelu`` / ``topk`` (sae_lens' forms) cannot express.

For pre-activations ``pre [..., d_sae]``::

    relu             max(pre, 0)
    jumprelu         relu(pre) * 1[pre > theta]           (sae_lens, GemmaScope; theta [d_sae])
    topk             relu(pre) at the k largest entries    (sae_lens TopK)
    jumprelu_signed  pre * 1[pre > theta]                 (circuit-tracer's JumpReLU; equals
                                                          jumprelu when every theta >= 0)
    topk_signed      pre at the k largest entries          (circuit-tracer's TopK: no relu, so
                                                          a negative value among the k is kept)

The last two are produced only when a circuit-tracer-format release needs them (a negative
threshold; ``activation: topk`` in a ``config.yaml``), so graphs match circuit-tracer's.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from tl_circuits.errors import ConfigError

#: Activations the in-memory Transcoder / CrossLayerTranscoder classes hold today.
BASE = ("relu", "jumprelu", "topk")
#: Every activation a release may use here (the others are served by the lazy set).
KNOWN = (*BASE, "jumprelu_signed", "topk_signed")
USES_THRESHOLD = ("jumprelu", "jumprelu_signed")
USES_K = ("topk", "topk_signed")


def check_activation(name: str, *, source: str) -> None:
    """A ConfigError naming the known activations unless ``name`` is one of them."""
    if name not in KNOWN:
        raise ConfigError(
            f"{source} asks for activation {name!r}, which tl_circuits does not know; known: "
            f"{', '.join(KNOWN)} (circuit-tracer configs: relu, jumprelu, topk)."
        )


def apply_activation(
    name: str,
    pre: Float[torch.Tensor, "... d_sae"],
    threshold: Float[torch.Tensor, " d_sae"] | None = None,
    k: int | None = None,
) -> Float[torch.Tensor, "... d_sae"]:
    """Feature activations from pre-activations (see the module docstring).

    Example:
        >>> pre = torch.tensor([[0.5, -1.0, 2.0, -0.2]])
        >>> apply_activation("topk", pre, k=3), apply_activation("topk_signed", pre, k=3)
        (tensor([[0.5000, 0.0000, 2.0000, 0.0000]]), tensor([[ 0.5000,  0.0000,  2.0000, -0.2000]]))
    """
    if name == "relu":
        return pre.relu()
    if name in USES_THRESHOLD:
        assert threshold is not None
        gate = (pre > threshold).to(pre.dtype)
        return (pre.relu() if name == "jumprelu" else pre) * gate
    if name in USES_K:
        assert k is not None
        values, indices = torch.topk(pre, k=k, dim=-1, sorted=False)
        kept = values.relu() if name == "topk" else values
        return torch.zeros_like(pre).scatter(-1, indices, kept)
    raise ConfigError(f"activation {name!r} is not one of {KNOWN}.")
