"""The batched training stack against a layer-by-layer reference written from its docstring."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tl_circuits.training.stack import TranscoderStack

L, N, D, S, K = 3, 40, 8, 24, 4


def _reference_loss(stack: TranscoderStack, x, y):
    """FVU per layer and L0, one layer at a time, float32 throughout (no autocast)."""
    xn = x * stack.in_scale[:, None, None]
    yn = y * stack.out_scale[:, None, None]
    recon = [stack.b_dec[m].expand(N, -1) for m in range(L)]
    if stack.W_skip is not None:
        recon = [recon[m] + xn[m] @ stack.W_skip[m].T for m in range(L)]
    l0 = []
    for la in range(L):
        pre = xn[la] @ stack.W_enc[la] + stack.b_enc[la]
        if stack.kind == "topk":
            vals, idx = pre.topk(K, dim=-1)
            acts = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        else:
            acts = pre * (pre > stack.log_threshold[la].exp())
        l0.append(float((acts > 0).float().sum(-1).mean()))
        if stack.cross_layer:
            rows = stack.W_dec[la].view(S, L - la, D)
            for j, m in enumerate(range(la, L)):
                recon[m] = recon[m] + acts @ rows[:, j]
        else:
            recon[la] = recon[la] + acts @ stack.W_dec_stacked[la]
    fvu = torch.stack([(recon[m] - yn[m]).pow(2).sum(-1).mean()
                       / (yn[m] - yn[m].mean(0)).pow(2).sum(-1).mean() for m in range(L)])
    return fvu, torch.tensor(l0)


@pytest.mark.parametrize(("kind", "skip", "cross_layer"), [
    ("topk", False, False), ("topk", True, False), ("jumprelu", True, False), ("topk", False, True),
])
def test_batched_forward_and_gradients_match_the_per_layer_reference(kind, skip, cross_layer):
    torch.manual_seed(0)
    x, y = torch.randn(L, N, D), torch.randn(L, N, D)
    stack = TranscoderStack(L, D, D, S, kind=kind, k=K, skip=skip, cross_layer=cross_layer, seed=3)
    stack.init_from_batch(x, y)
    with torch.no_grad():
        for p in stack.parameters():
            p.add_(0.05 * torch.randn_like(p))
    # Encoders in float32 here, like the reference (training runs them in bfloat16); the skip
    # product stays bfloat16, hence the 1e-2 tolerances.
    stack.pre_activations = lambda xn: torch.bmm(xn, stack.W_enc) + stack.b_enc[:, None, :]
    out = stack(x, y)
    fvu_ref, l0_ref = _reference_loss(stack, x, y)
    torch.testing.assert_close(out["fvu"], fvu_ref.detach(), rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(out["l0"], l0_ref)
    assert math.isclose(float(out["fvu"].sum()), float(fvu_ref.sum()), rel_tol=1e-2)
    if kind == "topk":  # same objective, same gradients (JumpReLU adds a straight-through term)
        params = [stack.W_enc, stack.decoder(0) if cross_layer else stack.W_dec_stacked]
        got = torch.autograd.grad(out["loss"], params)  # loss = sum of FVUs without AuxK
        want = torch.autograd.grad(fvu_ref.sum(), params)
        for g, w in zip(got, want, strict=True):
            assert float((g - w).abs().max() / w.abs().max()) < 2e-2


def test_aux_loss_only_for_layers_with_dead_features():
    torch.manual_seed(1)
    x, y = torch.randn(L, N, D), torch.randn(L, N, D)
    stack = TranscoderStack(L, D, D, S, kind="topk", k=K)
    stack.init_from_batch(x, y)
    assert float(stack(x, y, aux_k=8, dead_after=10)["aux"]) == 0.0  # nothing dead yet
    stack.since_fired[1, :5] = 100  # five dead features in layer 1 only
    aux = float(stack(x, y, aux_k=8, dead_after=10)["aux"])
    # one layer's normalised residual fit: about 1 for an untrained decoder, never 0 or 3
    assert 0.0 < aux < 2.0
    stack.since_fired[2, :5] = 100
    assert float(stack(x, y, aux_k=8, dead_after=10)["aux"]) > aux


def test_topk_decode_reads_only_the_active_rows():
    stack = TranscoderStack(L, D, D, S, kind="topk", k=K)
    idx = torch.randint(0, S, (L, N, K))
    vals = torch.rand(L, N, K)
    out = stack._decode_topk(idx, vals)
    want = torch.stack([F.embedding_bag(idx[la], stack.W_dec_stacked[la], per_sample_weights=vals[la],
                                        mode="sum") for la in range(L)])
    torch.testing.assert_close(out, want)


def _raw_reconstruction(stack: TranscoderStack, x):
    """``y_hat_m`` of the stack's docstring in raw units, from its parameters, layer by layer."""
    xn = x * stack.in_scale[:, None, None]
    recon = [stack.b_dec[m] + xn[m] @ stack.W_skip[m].T for m in range(L)]
    for la in range(L):
        pre = xn[la] @ stack.W_enc[la] + stack.b_enc[la]
        vals, idx = pre.topk(K, dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        if stack.cross_layer:
            rows = stack.W_dec[la].view(S, L - la, D)
            for j, m in enumerate(range(la, L)):
                recon[m] = recon[m] + acts @ rows[:, j]
        else:
            recon[la] = recon[la] + acts @ stack.W_dec_stacked[la]
    return torch.stack(recon) / stack.out_scale[:, None, None]


@pytest.mark.parametrize("cross_layer", [True, False])
def test_exported_skip_transcoders_reconstruct_what_the_stack_computes_after_a_round_trip(
    tmp_path, cross_layer
):
    """Issue #15: the stack's W_skip is [d_out, d_in]; the CLT it exported used to apply the
    transpose (``d_in == d_out``, so no shape check caught it). In float64, so exact to rounding."""
    from tl_circuits import CrossLayerTranscoder, TranscoderSet

    gen = torch.Generator().manual_seed(4)
    scales = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64)[:, None, None]
    x = torch.randn(L, N, D, generator=gen, dtype=torch.float64) * scales
    y = torch.randn(L, N, D, generator=gen, dtype=torch.float64) / scales
    stack = TranscoderStack(L, D, D, S, kind="topk", k=K, skip=True, cross_layer=cross_layer,
                            seed=2).double()
    stack.init_from_batch(x, y)
    with torch.no_grad():
        for p in stack.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    assert stack.W_skip is not None
    assert float((stack.W_skip - stack.W_skip.transpose(1, 2)).abs().max()) > 0.1  # not symmetric
    expected = _raw_reconstruction(stack, x)
    skip_part = torch.stack([x[m] @ stack.W_skip[m].T for m in range(L)]) * (
        stack.in_scale / stack.out_scale)[:, None, None]
    assert float(skip_part.abs().max()) > 0.5  # the skip term matters

    exported = stack.export([f"blocks.{la}.ln2.hook_normalized" for la in range(L)],
                            [f"blocks.{la}.hook_mlp_out" for la in range(L)], {})
    exported.save(tmp_path / "out")
    back = (CrossLayerTranscoder if cross_layer else TranscoderSet).load(tmp_path / "out")
    assert back.dtype == torch.float64 and back.has_skip(2)
    xs = dict(enumerate(x))
    acts = {la: back.encode(la, x[la]) for la in range(L)}
    got = torch.stack([back.reconstruct(m, acts, xs) for m in range(L)])
    assert float((got - expected).abs().max()) <= 1e-6
    # The stack's own forward pass computes the same reconstruction (float64: no bfloat16 encoders).
    with torch.no_grad():
        assert float((stack.reconstruct(x) - expected).abs().max()) <= 1e-6
