"""Attribution targets: the output directions a graph explains, read off the final residual stream.

A logit target for token ``t`` reads ``(W_U[:, t] - mean_j W_U[:, j]) . r`` where ``r`` is the final
normalised residual at the last position: the logit of ``t`` relative to the mean logit, which
is what a softmax cares about, minus its constant unembedding bias.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float

from ..errors import ConfigError
from ..hosts.base import Host

#: What a user may pass as one target: a token id, a single-token string, a pair
#: ``(a, b)`` meaning logit(a) - logit(b), or a direction vector in d_model.
TargetSpec = int | str | tuple | torch.Tensor


@dataclass(frozen=True)
class Target:
    """One target node: a label, the token ids it involves, its probability and weight."""

    label: str
    kind: str  # "logit" | "logit_diff" | "direction"
    token_ids: tuple[int, ...]
    probability: float
    weight: float


def default_targets(
    host: Host,
    last_logits: Float[torch.Tensor, " d_vocab"],
    *,
    max_n_logits: int,
    desired_logit_prob: float,
) -> tuple[list[Target], Float[torch.Tensor, "n_targets d_model"]]:
    """The most likely next tokens until their probabilities sum to ``desired_logit_prob``."""
    if max_n_logits < 1:
        raise ConfigError(f"max_n_logits must be at least 1, got {max_n_logits}")
    if not 0 < desired_logit_prob <= 1:
        raise ConfigError(f"desired_logit_prob must be in (0, 1], got {desired_logit_prob}")
    probs = torch.softmax(last_logits.double(), dim=-1)
    top_p, top_i = probs.topk(max_n_logits)
    n = int((top_p.cumsum(0) < desired_logit_prob).sum().item()) + 1
    n = min(n, max_n_logits)
    ids = [int(i) for i in top_i[:n]]
    strings = host.token_strings(ids)
    targets = [
        Target(label=s, kind="logit", token_ids=(i,), probability=float(p), weight=float(p))
        for i, s, p in zip(ids, strings, top_p[:n].tolist())
    ]
    return targets, _logit_directions(host, ids)


def custom_targets(
    host: Host,
    last_logits: Float[torch.Tensor, " d_vocab"],
    specs: Sequence[TargetSpec],
) -> tuple[list[Target], Float[torch.Tensor, "n_targets d_model"]]:
    """Targets from user specs; each gets weight 1/len(specs)."""
    if len(specs) == 0:
        raise ConfigError("targets is an empty list; pass None for the default targets")
    probs = torch.softmax(last_logits.double(), dim=-1)
    weight = 1.0 / len(specs)
    targets: list[Target] = []
    vectors: list[torch.Tensor] = []
    for spec in specs:
        if isinstance(spec, torch.Tensor):
            if spec.shape != (host.d_model,):
                raise ConfigError(
                    f"a direction target must have shape ({host.d_model},) (d_model), "
                    f"got {tuple(spec.shape)}"
                )
            targets.append(Target("direction", "direction", (), float("nan"), weight))
            vectors.append(spec.to(host.device, host.dtype))
        elif isinstance(spec, tuple):
            if len(spec) != 2:
                raise ConfigError(f"a logit-difference target is a pair (a, b), got {spec!r}")
            a, b = (_token_id(host, s) for s in spec)
            label = " - ".join(repr(s) for s in host.token_strings([a, b]))
            diff = float(probs[a] - probs[b])
            targets.append(Target(label, "logit_diff", (a, b), diff, weight))
            vectors.append(host.W_U[:, a] - host.W_U[:, b])
        else:
            t = _token_id(host, spec)
            targets.append(Target(host.token_strings([t])[0], "logit", (t,), float(probs[t]), weight))
            vectors.append(_logit_directions(host, [t])[0])
    return targets, torch.stack(vectors)


def _token_id(host: Host, spec: object) -> int:
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise ConfigError(
            f"cannot use {spec!r} as a target: give a token id, a single-token string, a pair "
            "(a, b) for a logit difference, or a d_model direction tensor"
        )
    if isinstance(spec, str):
        return host.single_token_id(spec)
    d_vocab = host.W_U.shape[1]
    if not 0 <= spec < d_vocab:
        raise ConfigError(f"target token id {spec} is outside the vocabulary (0..{d_vocab - 1})")
    return spec


def _logit_directions(host: Host, ids: list[int]) -> Float[torch.Tensor, "n d_model"]:
    W_U = host.W_U
    return (W_U[:, ids] - W_U.mean(dim=1, keepdim=True)).T.contiguous()
