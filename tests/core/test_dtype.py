"""``attribute(..., dtype=...)`` runs the whole pass in another dtype on a cast copy of the model;
``pattern_dtype`` holds the frozen attention patterns in a compact dtype. Neither changes the
user's objects; a float64 pass of a float32 model is exact against brute force."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.reference import brute_force_rows
from tests.core.tiny import tiny_model, tiny_set
from tl_circuits.errors import ConfigError
from tl_circuits.replacement import prepare, run_replacement
from tl_circuits.replacement.frozen_attention import PatternScope

PROMPT = [3, 17, 9, 41, 5, 22, 7, 8, 30, 2, 11, 19]


def _rows(graph):
    return graph.adjacency.to_dense()[graph.rows_computed].double()


def _relative(got, want):
    """Per-edge |got - want| over the largest |edge| of its row."""
    return (got - want).abs() / want.abs().amax(1, keepdim=True).clamp(min=1e-30)


def test_a_float64_pass_of_a_float32_model_is_exact_against_brute_force():
    model = tiny_model("llama", dtype=torch.float32, seed=1)
    transcoders = tiny_set("jumprelu_skip", seed=2)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    graph = tc.attribute(model, transcoders, PROMPT, dtype=torch.float64, progress=False)
    assert graph.settings["dtype"] == "float64" and graph.adjacency.dtype == torch.float64
    # the reference runs on a float64 copy of the same weights
    reference = tiny_model("llama", dtype=torch.float32, seed=1).to(torch.float64)
    expected = brute_force_rows(reference, transcoders.to(dtype=torch.float64), graph)
    got = _rows(graph)
    assert float((got - expected).abs().max() / expected.abs().max()) <= 1e-10
    assert all(p.dtype == torch.float32 and torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert model.cfg.dtype == torch.float32


def _shared_edges(a, b) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edges of rows both graphs computed, matched by node identity (rounding may switch a
    feature on or off): ``(a's values, b's values, the largest |a| of each edge's row)``."""
    where = {n: i for i, n in enumerate(b.nodes)}
    na, da, db = a.nodes, a.adjacency.to_dense().double(), b.adjacency.to_dense().double()
    rows = [r for r in a.rows_computed.tolist() if na[r] in where]
    cols = [c for c in range(a.n_nodes) if na[c] in where]
    ra, ca = torch.tensor(rows), torch.tensor(cols)
    rb, cb = torch.tensor([where[na[r]] for r in rows]), torch.tensor([where[na[c]] for c in cols])
    va, vb = da[ra][:, ca], db[rb][:, cb]
    return va, vb, da[ra].abs().amax(1, keepdim=True).expand_as(va)


def test_a_bfloat16_pass_is_close_to_float64_and_names_its_dtype():
    model = tiny_model("llama", seed=1)
    transcoders = tiny_set("jumprelu_skip", seed=2)
    exact = tc.attribute(model, transcoders, PROMPT, progress=False)
    low = tc.attribute(model, transcoders, PROMPT, dtype="bfloat16", progress=False)
    assert low.settings["dtype"] == "bfloat16" and exact.settings["dtype"] == "float64"
    assert low.adjacency.dtype == torch.bfloat16
    assert model.cfg.dtype == torch.float64 and model.W_U.dtype == torch.float64
    want, got, scale = _shared_edges(exact, low)
    assert want.shape[0] > 50 and want.shape[1] > 100
    err = (got - want).abs() / scale
    # bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.2%), compounded over the
    # forward and backward passes: measured 99th percentile 0.012, max 0.06 of a row's largest edge
    assert float(err.quantile(0.99)) <= 0.03
    assert float(err.max()) <= 0.15
    assert float(err.max()) > 1e-4  # it is a different pass, not the float64 one


def test_pattern_dtype_keeps_the_forward_pass_and_moves_edges_by_rounding_only():
    model = tiny_model("gemma2", seed=3)
    transcoders = tiny_set("relu_skip", seed=4)
    exact = tc.attribute(model, transcoders, PROMPT, progress=False)
    assert exact.settings["pattern_dtype"] is None
    # measured here: float16 99th percentile 4e-5, max 8e-3; bfloat16 3e-4 and 5e-2 (of the
    # largest edge of each row)
    for dtype, q99, most in ((torch.float16, 2e-4, 2e-2), (torch.bfloat16, 2e-3, 0.12)):
        compact = tc.attribute(model, transcoders, PROMPT, pattern_dtype=dtype, progress=False)
        assert compact.settings["pattern_dtype"] == str(dtype).removeprefix("torch.")
        assert compact.nodes == exact.nodes and torch.equal(compact.activations, exact.activations)
        assert compact.adjacency.dtype == torch.float64
        err = _relative(_rows(compact), _rows(exact))
        assert 1e-12 < float(err.max()) <= most and float(err.quantile(0.99)) <= q99, dtype


def test_compact_patterns_are_what_the_backward_pass_holds():
    model = tiny_model("llama", seed=1)
    host, transcoders = prepare(model, tiny_set("relu", seed=2))
    tokens = torch.tensor(PROMPT)
    for dtype in (None, torch.bfloat16):
        state = run_replacement(host, transcoders, tokens, pattern_dtype=dtype)
        assert isinstance(state.patterns, PatternScope) and state.patterns.storage == dtype
        held = _saved_patterns(state.logits.grad_fn)
        assert len(held) == model.cfg.n_layers
        assert {t.dtype for t in held} == {dtype or torch.float64}
        # the patterns kept for prefix passes are the very tensors the products hold: one copy
        kept = state.patterns.kept
        assert len(kept) == model.cfg.n_layers
        assert {t.data_ptr() for t in kept.values()} == {t.data_ptr() for t in held}


def _saved_patterns(fn) -> list[torch.Tensor]:
    """The tensors saved by the frozen products in the autograd graph below ``fn``."""
    seen, stack, out = set(), [fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "FrozenProductBackward":
            out.extend(node.saved_tensors)
        stack.extend(nxt for nxt, _ in node.next_functions)
    return out


def test_bad_dtypes_and_remote_casts_are_refused():
    model = tiny_model("gpt2")
    with pytest.raises(ConfigError, match="floating dtype"):
        tc.attribute(model, tiny_set("relu"), [1, 2, 3], dtype=torch.int8, progress=False)
    with pytest.raises(ConfigError, match="floating dtype"):
        tc.attribute(model, tiny_set("relu"), [1, 2, 3], dtype="half-ish", progress=False)
    with pytest.raises(ConfigError, match="remote run"):
        tc.attribute(model, tiny_set("relu"), [1, 2, 3], dtype="float32", remote="local", progress=False)


def test_a_compact_pattern_multiplies_in_the_values_dtype():
    """A pattern handed over already compact (a prefix pass's view of a kept one) is cast for the
    product and held as it is."""
    from tl_circuits.replacement.frozen_attention import FrozenProduct

    scope = PatternScope(storage=torch.bfloat16)
    pattern = torch.tril(torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(0))).to(torch.bfloat16)
    v = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    out = FrozenProduct.apply(pattern, v, scope)
    assert torch.equal(out, pattern.double() @ v)
    assert _saved_patterns(out.grad_fn)[0].data_ptr() == pattern.data_ptr()  # no second copy
    grad = torch.randn(2, 5, 3, dtype=torch.float64)
    (got,) = torch.autograd.grad(out, v, grad)
    assert torch.allclose(got, pattern.double().transpose(-1, -2) @ grad, rtol=1e-12, atol=1e-12)
