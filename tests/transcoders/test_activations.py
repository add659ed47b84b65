"""The activation registry: one definition of each activation for per-layer transcoders, CLTs and
training, its parameter checks, its straight-through training forms, and registering a new one."""

from __future__ import annotations

import pytest
import torch

from tests.transcoders.test_cross_layer import tiny_clt
from tl_circuits import ConfigError, CrossLayerTranscoder, Transcoder
from tl_circuits.transcoders import activations
from tl_circuits.transcoders.activations import (
    Activation,
    get_activation,
    jumprelu_ste,
    register_activation,
    step_ste,
    topk_sparse,
    trainable_activation,
)

PRE = torch.tensor([[0.5, -1.0, 2.0, 1.0], [0.05, 0.3, -0.2, 0.2]], dtype=torch.float64)
THR = torch.tensor([0.6, 0.0, 1.5, 0.1], dtype=torch.float64)


def test_inference_forms_by_name():
    assert activations.activation_names()[:3] == ("relu", "jumprelu", "topk")
    assert torch.equal(get_activation("relu")(PRE), PRE.clamp_min(0))
    # Row 1: 0.5 < 0.6 and 2.0 > 1.5 (above its threshold); row 2: 0.05 < 0.6 cut, 0.3 > 0 kept.
    want = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.3, 0.0, 0.2]], dtype=torch.float64)
    assert torch.equal(get_activation("jumprelu")(PRE, threshold=THR), want)
    # TopK keeps the 2 largest of each row, relu'd: row 2's second largest (0.2) stays, -0.2 never.
    want = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.3, 0.0, 0.2]], dtype=torch.float64)
    assert torch.equal(get_activation("topk")(PRE, k=2), want)
    vals, idx = topk_sparse(torch.tensor([[-3.0, -1.0, -2.0]]), 2)
    assert torch.equal(vals, torch.zeros(1, 2)) and sorted(idx[0].tolist()) == [1, 2]


@pytest.mark.parametrize(("name", "threshold", "k", "message"), [
    ("jumprelu", None, None, "activation='jumprelu' needs a threshold tensor of shape [d_sae][2]."),
    ("jumprelu", torch.zeros(3), None, "threshold[2] has shape (3,), expected (4,) = [d_sae]"),
    ("relu", torch.zeros(4), None, "threshold is only used by activation='jumprelu' or 'jumprelu_signed', not 'relu'"),
    ("topk", None, None, "activation='topk' needs an integer k with 0 < k <= d_sae=4, got None."),
    ("topk", None, 5, "0 < k <= d_sae=4, got 5."),
    ("topk", None, True, "got True."),
    ("jumprelu", torch.zeros(4), 2, "k is only used by activation='topk' or 'topk_signed', not 'jumprelu'"),
])
def test_parameter_checks_say_what_is_wrong(name, threshold, k, message):
    with pytest.raises(ConfigError) as info:
        get_activation(name).check(4, threshold, k, where="[2]")
    assert message in str(info.value)


def test_unknown_and_untrainable_names():
    with pytest.raises(ConfigError, match=r"activation='gelu' is not supported; use one of "
                                          r"\('relu', 'jumprelu', 'topk'"):
        get_activation("gelu")
    with pytest.raises(ConfigError, match=r"'relu' cannot be trained here; train one of "
                                          r"\('jumprelu', 'topk'\)"):
        trainable_activation("relu")
    with pytest.raises(ConfigError, match="already registered"):
        register_activation(Activation("relu", lambda pre, t, k: pre))


def test_training_forms_match_inference_and_have_straight_through_gradients():
    pre = torch.tensor([[0.11, 0.5, -0.3]], dtype=torch.float64, requires_grad=True)
    log_thr = torch.full((1, 3), 0.1, dtype=torch.float64).log().requires_grad_(True)
    acts = jumprelu_ste(pre, log_thr)
    assert torch.equal(acts, get_activation("jumprelu")(pre, threshold=log_thr.exp()[0]))
    acts.sum().backward()
    assert pre.grad is not None and log_thr.grad is not None
    assert torch.equal(pre.grad, torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64))
    # Only pre=0.11 lies within the kernel (|0.11 - 0.1| < 0.025): -theta^2 / eps = -0.01 / 0.05.
    torch.testing.assert_close(log_thr.grad, torch.tensor([[-0.2, 0.0, 0.0]], dtype=torch.float64))
    log_thr.grad = None
    fired = step_ste(pre, log_thr)
    assert torch.equal(fired, torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64))
    fired.sum().backward()
    torch.testing.assert_close(log_thr.grad, torch.tensor([[-2.0, 0.0, 0.0]], dtype=torch.float64))
    # A broadcast threshold gets its gradient summed over the broadcast rows.
    many = pre.detach().expand(3, 3)
    shared = torch.full((1, 3), 0.1, dtype=torch.float64).log().requires_grad_(True)
    jumprelu_ste(many, shared).sum().backward()
    assert shared.grad is not None
    torch.testing.assert_close(shared.grad, torch.tensor([[-0.6, 0.0, 0.0]], dtype=torch.float64))


def test_a_registered_activation_works_in_both_transcoder_kinds(monkeypatch):
    """What a release format does: register a JumpReLU without the relu, then load weights."""
    monkeypatch.setattr(activations, "_REGISTRY", dict(activations._REGISTRY))
    register_activation(Activation(
        "jumprelu_nogate", lambda pre, thr, k: pre * (pre > thr).to(pre.dtype), uses_threshold=True,
    ))
    W_enc = torch.eye(4, dtype=torch.float64)
    z = torch.zeros(4, dtype=torch.float64)
    thr = torch.full((4,), -0.5, dtype=torch.float64)
    one = Transcoder(W_enc, z, W_enc, z, hook_name="blocks.0.ln2.hook_normalized",
                     hook_name_out="blocks.0.hook_mlp_out", activation="jumprelu_nogate", threshold=thr)
    x = torch.tensor([[-0.4, -0.6, 0.3, 0.0]], dtype=torch.float64)
    assert torch.equal(one.encode(x), torch.tensor([[-0.4, 0.0, 0.3, 0.0]], dtype=torch.float64))
    base = tiny_clt("jumprelu")
    clt = CrossLayerTranscoder(
        W_enc=[base.W_enc(la) for la in range(3)], b_enc=base._b_enc,
        W_dec=[base.W_dec(la) for la in range(3)], b_dec=[base.b_dec(la) for la in range(3)],
        threshold=[-t for t in base._threshold], activation="jumprelu_nogate",
        hook_in=[base.hook_in(la) for la in range(3)], hook_out=[base.hook_out(la) for la in range(3)])
    xs = torch.randn(64, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pre = clt.pre_activation(1, xs)
    assert torch.equal(clt.encode(1, xs), pre * (pre > -base._threshold[1]))
    assert (clt.encode(1, xs) < 0).any()  # negative activations that jumprelu would cut
