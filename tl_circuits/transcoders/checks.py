"""Checks shared by per-layer and cross-layer transcoders: tensor shapes at construction, the
width of inputs at use. Each error names the tensor, the shape found and the shape expected."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from tl_circuits.errors import ConfigError


def check_shapes(
    expected: Mapping[str, tuple[torch.Tensor | None, tuple[int, ...]]], explain: str
) -> None:
    """Raise a ConfigError for the first ``name: (tensor, shape)`` whose tensor has another
    shape (``None`` tensors are skipped); ``explain`` says where the expected shapes come from.

    Example:
        >>> import torch
        >>> check_shapes({"b_enc": (torch.zeros(3), (4,))}, "(d_sae=4)")
        Traceback (most recent call last):
        ...
        tl_circuits.errors.ConfigError: b_enc has shape (3,), expected (4,) (d_sae=4).
    """
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ConfigError(f"{name} has shape {tuple(tensor.shape)}, expected {shape} {explain}.")


def check_ndims(expected: Mapping[str, tuple[torch.Tensor, str]]) -> None:
    """Raise a ConfigError unless each ``name: (tensor, layout)`` has as many dimensions as its
    layout names (``"[d_sae, n_out, d_out]"`` is 3-D).

    Example:
        >>> import torch
        >>> check_ndims({"W_enc": (torch.zeros(3), "[d_in, d_sae]"),
        ...              "W_dec": (torch.zeros(3, 2), "[d_sae, d_out]")})
        Traceback (most recent call last):
        ...
        tl_circuits.errors.ConfigError: W_enc and W_dec must be matrices [d_in, d_sae] and [d_sae, d_out]; got shapes (3,) and (3, 2).
    """
    ndims = {name: layout.count(",") + 1 for name, (_, layout) in expected.items()}
    if all(t.ndim == ndims[name] for name, (t, _) in expected.items()):
        return
    kind = "matrices" if set(ndims.values()) == {2} else "tensors"
    raise ConfigError(
        f"{' and '.join(expected)} must be {kind} "
        f"{' and '.join(layout for _, layout in expected.values())}; got shapes "
        f"{' and '.join(str(tuple(t.shape)) for t, _ in expected.values())}."
    )


def check_input_width(x: torch.Tensor, d_in: int, what: str) -> None:
    """Raise a ConfigError unless ``x``'s last dimension is ``d_in`` (``what`` names the reader)."""
    if x.shape[-1] != d_in:
        raise ConfigError(
            f"{what} expects inputs with last dimension d_in={d_in}, got shape {tuple(x.shape)}; "
            "pass the activations of the hook it reads."
        )
