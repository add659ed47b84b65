"""The batched backward pass through frozen attention (tl_circuits.replacement.frozen_attention)
against the straightforward one: the same graphs in float64, on every host and several families."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import FAMILIES, tiny_model, tiny_set
from tl_circuits.attribution import engine
from tl_circuits.hosts import as_host
from tl_circuits.replacement import frozen, frozen_attention, run_replacement
from tl_circuits.replacement.frozen_attention import PatternScope, frozen_pattern_vjp

#: 20 tokens: longer than the query blocks set below, features at every position.
LONG_PROMPT = [3, 17, 9, 41, 5, 22, 8, 30, 11, 2, 45, 19, 7, 33, 26, 14, 38, 6, 29, 12]


def _pattern(causal: bool, shape=(2, 3, 9, 9)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(shape, generator=gen, dtype=torch.float64)
    if causal:
        scores = scores.masked_fill(torch.ones(shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("limit", [9, 5, 1])
def test_pattern_vjp_equals_the_transposed_product_vmapped_and_not(causal, limit, monkeypatch):
    monkeypatch.setattr(frozen_attention, "_BLOCK", 2)
    pattern = _pattern(causal)
    gen = torch.Generator().manual_seed(1)
    grads = torch.randn(4, 2, 3, 9, 5, generator=gen, dtype=torch.float64)
    if causal:  # what a read-out at positions < limit leaves: nothing after it
        grads[..., limit:, :] = 0
    expected = pattern.transpose(-1, -2) @ grads
    one = frozen_pattern_vjp(pattern, grads[0], limit, causal)
    batched = torch.func.vmap(lambda g: frozen_pattern_vjp(pattern, g, limit, causal))(grads)
    assert float((one - expected[0]).abs().max()) < 1e-14
    assert float((batched - expected).abs().max()) < 1e-14
    if causal:
        assert torch.all(batched[..., limit:, :] == 0)
    # batched patterns too (not the engine's case): one product per read-out
    patterns = torch.stack([pattern, pattern.flip(0)])
    both = torch.func.vmap(lambda p, g: frozen_pattern_vjp(p, g, limit, causal))(patterns, grads[:2])
    assert float((both - patterns.transpose(-1, -2) @ grads[:2]).abs().max()) < 1e-14


@pytest.mark.parametrize("family", FAMILIES)
def test_every_pattern_takes_the_batched_backward(family):
    model = tiny_model(family)
    state = run_replacement(as_host(model), tiny_set("relu"), torch.tensor(LONG_PROMPT))
    assert state.patterns == PatternScope(limit=None, frozen=3, routed=3)
    plain = run_replacement(as_host(model), tiny_set("relu"), torch.tensor(LONG_PROMPT),
                            batched_patterns=False)
    assert plain.patterns is None and torch.equal(plain.logits, state.logits)


def _dense_rows(graph):
    return graph.adjacency.to_dense()[graph.rows_computed]


def _both(model, transcoders, monkeypatch, prefix_step=4, lengths=None, **kw):
    """(batched graph, reference graph) of the long prompt; the batched one runs backward passes
    on forward passes of prefixes in steps of ``prefix_step`` positions (checked to happen; their
    lengths are appended to ``lengths``)."""
    monkeypatch.setattr(frozen_attention, "_BLOCK", 4)
    monkeypatch.setattr(engine, "PREFIX_STEP", prefix_step)
    lengths = [] if lengths is None else lengths
    run_prefix = frozen.run_prefix

    def counted(host, transcoders, tokens, patterns):
        lengths.append(len(tokens))
        return run_prefix(host, transcoders, tokens, patterns)

    with monkeypatch.context() as m:
        m.setattr(frozen, "run_prefix", counted)
        fast = tc.attribute(model, transcoders, LONG_PROMPT, progress=False, **kw)
    if prefix_step < len(LONG_PROMPT):
        assert lengths and all(n % prefix_step == 0 and n < len(LONG_PROMPT) for n in lengths)
        assert len(set(lengths)) == len(lengths)  # one forward pass per prefix length
    with monkeypatch.context() as m:
        m.setattr(engine, "REFERENCE", True)
        ref = tc.attribute(model, transcoders, LONG_PROMPT, progress=False, **kw)
    return fast, ref


def _assert_equal_graphs(fast, ref):
    assert torch.equal(fast.rows_computed, ref.rows_computed)
    assert torch.equal(fast.node_index, ref.node_index)
    a, b = _dense_rows(fast), _dense_rows(ref)
    assert float(b.abs().max()) > 0
    err = float((a - b).abs().max() / b.abs().max())
    assert err <= 1e-12, f"max relative difference {err:.3g}"


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_batched_graph_equals_reference_float64(family, grouped, monkeypatch):
    """All rows (chunks spanning layers and positions, or grouped by layer as long prompts get
    them), then a budget with a feature pool (the pool pass reads every target at once; the
    chosen rows sit at many positions)."""
    if grouped:
        monkeypatch.setattr(engine, "GROUP_FROM", len(LONG_PROMPT))
    model = tiny_model(family, seed=7)
    transcoders = tiny_set("jumprelu_skip", seed=3)
    fast, ref = _both(model, transcoders, monkeypatch, batch_size=5)
    assert fast.n_features > 100
    positions = fast.node_position[fast.rows_computed[fast.node_kind[fast.rows_computed] == 0]]
    assert len(set(positions.tolist())) == len(LONG_PROMPT)
    _assert_equal_graphs(fast, ref)
    fast, ref = _both(model, transcoders, monkeypatch, batch_size=6, max_feature_nodes=40,
                      feature_pool=60)
    assert fast.settings["feature_pool"] == 60
    _assert_equal_graphs(fast, ref)


def test_prefix_passes_are_bounded_on_long_prompts(monkeypatch):
    """Past ``PREFIX_PASSES * PREFIX_STEP`` positions the step grows, so that at most
    ``PREFIX_PASSES - 1`` prefix passes are kept whatever the prompt's length; graphs unchanged."""
    n = len(LONG_PROMPT)
    assert [engine.prefix_step(m) for m in (1, 2048, 2049, 4096, 8192)] == [256, 256, 512, 512, 1024]
    monkeypatch.setattr(engine, "PREFIX_PASSES", 3)
    monkeypatch.setattr(engine, "GROUP_FROM", n)
    lengths: list[int] = []
    fast, ref = _both(tiny_model("llama", seed=7), tiny_set("jumprelu_skip", seed=3), monkeypatch,
                      prefix_step=2, lengths=lengths, batch_size=5)
    assert engine.prefix_step(n) == 8  # 20 positions / 3 passes, rounded up to steps of 2
    assert sorted(lengths) == [8, 16]
    _assert_equal_graphs(fast, ref)


def test_long_chunks_keep_read_outs_times_positions_bounded(monkeypatch):
    """On the grouped path a chunk holds at most ``CHUNK_POSITIONS // pass length`` read-outs
    (one at least): many at early positions, one near the end; graphs unchanged."""
    monkeypatch.setattr(engine, "GROUP_FROM", len(LONG_PROMPT))
    monkeypatch.setattr(engine, "CHUNK_POSITIONS", 24)
    seen: list[tuple[int, int]] = []
    chunk_rows = engine.RowEngine._chunk_rows

    def spy(self, reads):
        if not engine.REFERENCE:  # _both also builds the reference graph
            seen.append((len(reads.pos), max(reads.pos)))
        return chunk_rows(self, reads)

    monkeypatch.setattr(engine.RowEngine, "_chunk_rows", spy)
    fast, ref = _both(tiny_model("llama", seed=7), tiny_set("jumprelu_skip", seed=3), monkeypatch,
                      prefix_step=4, batch_size=8)
    _assert_equal_graphs(fast, ref)
    lengths = [(size, min(-(-(last + 1) // 4) * 4, len(LONG_PROMPT))) for size, last in seen]
    assert all(size == 1 or size * length <= 24 for size, length in lengths)
    assert any(size == 6 for size, length in lengths if length == 4)  # early rows: 6 a pass
    assert all(size == 1 for size, length in lengths if length == 20)  # the last positions: 1


@pytest.mark.parametrize("kind", ["hf", "bridge", pytest.param("nnsight", marks=pytest.mark.slow),
                                  pytest.param("bridge_compat", marks=pytest.mark.slow)])
def test_every_host_routes_its_patterns_and_matches_the_reference(kind, tmp_path, monkeypatch):
    from tests.core.tiny import tiny_transcoder
    from tests.hosts.hf_tiny import float64_softmax, hf_model, on_host

    monkeypatch.setattr(engine, "GROUP_FROM", 0 if kind.startswith("bridge") else 10**6)
    model = on_host(kind, hf_model("llama", seed=2), tmp_path)
    transcoders = tc.TranscoderSet([
        tiny_transcoder(la, "jumprelu_skip", hook_in="blocks.{l}.ln2.hook_normalized", seed=la)
        for la in range(3)])
    with float64_softmax():
        state = run_replacement(as_host(model), transcoders, torch.tensor(LONG_PROMPT))
        assert state.patterns is not None and state.patterns.all_routed
        fast, ref = _both(model, transcoders, monkeypatch, batch_size=7)
    _assert_equal_graphs(fast, ref)


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_pass_is_the_prompts_pass_cut_short_and_shares_its_patterns(family, monkeypatch):
    model = tiny_model(family, seed=5)
    transcoders = tiny_set("topk_skip", seed=1)
    state = run_replacement(as_host(model), transcoders, torch.tensor(LONG_PROMPT))
    assert state.prefix is not None and state.patterns is not None
    kept = dict(state.patterns.kept)
    assert len(kept) == 3
    part = state.prefix(7)
    assert part.patterns is state.patterns
    assert all(state.patterns.kept[k] is v for k, v in kept.items())  # the prompt's, kept
    assert state.patterns.all_routed and state.patterns.causal
    for layer in transcoders.layers:
        assert torch.allclose(part.x_in[layer], state.x_in[layer][:, :7], rtol=0, atol=1e-12)
        assert torch.allclose(part.writes[layer], state.writes[layer][:, :7], rtol=0, atol=1e-12)
    assert torch.allclose(part.resid_final, state.resid_final[:, :7], rtol=0, atol=1e-12)
    assert part.embed is not None and part.embed.shape[1] == 7 and part.embed.requires_grad
    # the prefix's patterns are views of the prompt's: a product reads the same memory
    seen = []
    original = frozen_attention.FrozenProduct.forward

    def spy(ctx, pattern, v, scope):
        seen.append(pattern)
        return original(ctx, pattern, v, scope)

    monkeypatch.setattr(frozen_attention.FrozenProduct, "forward", staticmethod(spy))
    state.prefix(5)
    assert len(seen) == 3
    assert {p.untyped_storage().data_ptr() for p in seen} == {p.untyped_storage().data_ptr() for p in kept.values()}
    assert all(p.shape[-2:] == (5, 5) for p in seen)


def test_prefix_hook_refuses_a_pattern_it_did_not_keep():
    scope = PatternScope()
    hook = frozen_attention.prefix_pattern_hook(scope, "blocks.0.attn.hook_pattern")
    with pytest.raises(ValueError, match="no frozen pattern"):
        hook(torch.zeros(1, 2, 3, 3))


@pytest.mark.parametrize(("family", "grouped"), [
    pytest.param(f, g, marks=() if (f, g) == ("llama", True) else pytest.mark.slow)
    for f in FAMILIES for g in (False, True)])  # the fast suite: tests/conftest.py's `backward`
def test_prefix_passes_match_brute_force_on_a_long_prompt(family, grouped, monkeypatch):
    """Every edge of rows at many positions of a prompt past the grouping threshold, computed on
    prefix passes of 3-position steps, against perturbation in the frozen model (a small feature
    pool keeps the brute force's columns few)."""
    from tests.core.test_edges import assert_edges_match

    if grouped:
        monkeypatch.setattr(engine, "GROUP_FROM", len(LONG_PROMPT))
    monkeypatch.setattr(engine, "PREFIX_STEP", 3)
    monkeypatch.setattr(frozen_attention, "_BLOCK", 2)
    model = tiny_model(family, seed=11)
    transcoders = tiny_set("jumprelu_skip", seed=4)
    graph = tc.attribute(model, transcoders, LONG_PROMPT, batch_size=6, max_feature_nodes=60,
                         feature_pool=80, progress=False)
    feats = graph.rows_computed[graph.node_kind[graph.rows_computed] == 0]
    assert len(set(graph.node_position[feats].tolist())) >= 6
    assert_edges_match(model, transcoders, graph)
