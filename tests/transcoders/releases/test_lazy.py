"""LazyTranscoders: a memory-mapped set gives what the same set in memory gives, for every
protocol member and for attribution, interventions, dashboards and check_graph; encoders are
applied in blocks, never whole, when they are not cached; ``to`` returns new sets."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_model, tiny_set
from tl_circuits.transcoders import CrossLayerTranscoder, LazyTranscoders
from tl_circuits.transcoders.releases.load import resolve_spec

from .test_circuit_tracer_configs import assert_same_set

PROMPT = [0, 3, 17, 9, 41, 5, 22]


def _clt(seed=0):
    g = torch.Generator().manual_seed(seed)
    L, d, f = 3, 16, 24
    return CrossLayerTranscoder(
        W_enc=[torch.randn(d, f, generator=g, dtype=torch.float64) / 4 for _ in range(L)],
        b_enc=[0.3 * torch.randn(f, generator=g, dtype=torch.float64) - 0.3 for _ in range(L)],
        W_dec=[0.5 * torch.randn(f, L - la, d, generator=g, dtype=torch.float64) for la in range(L)],
        b_dec=[0.2 * torch.randn(d, generator=g, dtype=torch.float64) for _ in range(L)],
        threshold=[0.1 * torch.randn(f, generator=g, dtype=torch.float64).abs() for _ in range(L)],
        W_skip=[0.1 * torch.randn(d, d, generator=g, dtype=torch.float64) for _ in range(L)],
        hook_in=[f"blocks.{la}.hook_resid_mid" for la in range(L)],
        hook_out=[f"blocks.{la}.hook_mlp_out" for la in range(L)], activation="jumprelu")


@pytest.fixture(params=["saelens_folder", "converted", "clt"])
def pair(request, tmp_path):
    """(in-memory set, the same set memory-mapped from disk), float64."""
    if request.param == "clt":
        eager = _clt()
        eager.save(tmp_path / "clt")
        return eager, tc.load_transcoders(tmp_path / "clt", lazy=True)
    eager = tiny_set("jumprelu_skip", hook_in="blocks.{l}.mlp.hook_in")
    eager.save(tmp_path / "saelens")
    if request.param == "converted":
        tc.transcoders.convert_transcoders(tmp_path / "saelens", tmp_path / "mapped", progress=False)
        return eager, tc.load_transcoders(tmp_path / "mapped", lazy=True)
    return eager, tc.load_transcoders(tmp_path / "saelens", lazy=True)


def test_every_protocol_member_matches(pair):
    eager, lazy = pair
    assert isinstance(lazy, LazyTranscoders) and lazy.dtype == torch.float64
    assert_same_set(lazy, eager)


def test_encoders_are_read_in_blocks_when_not_cached(pair, monkeypatch):
    eager, lazy = pair
    spec = lazy.spec
    blocked = LazyTranscoders(spec, chunk_bytes=5 * 16 * 8, encoder_cache_bytes=0)
    seen = []
    original = LazyTranscoders._encoder_blocks

    def record(self, layer):
        for block in original(self, layer):
            seen.append(block.shape[0])
            yield block

    monkeypatch.setattr(LazyTranscoders, "_encoder_blocks", record)
    x = torch.randn(4, 16, dtype=torch.float64)
    for la in eager.layers:
        torch.testing.assert_close(blocked.encode(la, x), eager.encode(la, x))
    assert max(seen) == 5 and len(seen) == 5 * len(eager.layers)  # 24 rows in blocks of 5
    assert not blocked._encoders  # nothing kept
    assert not LazyTranscoders(spec)._cache_left  # on the CPU, the OS page cache is the cache
    cached = LazyTranscoders(spec, encoder_cache_bytes=2**20)
    torch.testing.assert_close(cached.encode(0, x), eager.encode(0, x))
    assert 0 in cached._encoders


def test_to_returns_a_new_set_and_leaves_this_one(pair):
    _, lazy = pair
    assert lazy.to() is lazy and lazy.to(dtype=torch.float64) is lazy
    single = lazy.to(dtype=torch.float32)
    assert single is not lazy and single.dtype == torch.float32 and lazy.dtype == torch.float64
    x = torch.randn(3, 16, dtype=torch.float64)
    torch.testing.assert_close(single.encode(0, x), lazy.encode(0, x).float(), rtol=1e-5, atol=1e-5)
    assert single.encode(0, x).dtype == torch.float32


def test_attribution_interventions_dashboards_and_check_graph(pair, tmp_path):
    eager, lazy = pair
    model = tiny_model("gemma2" if isinstance(eager, CrossLayerTranscoder) else "llama", tokenizer=True)
    want, got = (tc.attribute(model, t, PROMPT, progress=False) for t in (eager, lazy))
    dense = want.adjacency.to_dense()
    assert float((got.adjacency.to_dense() - dense).abs().max()) <= 1e-9 * float(dense.abs().max())
    node = got.top_nodes(1)[0].node
    edits = [(node.layer, node.position, node.index, 0.0)]
    a, b = (tc.intervene(model, t, PROMPT, edits) for t in (eager, lazy))
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-9, atol=1e-9)
    assert tc.generate(model, lazy, PROMPT, 3, interventions=edits) == tc.generate(model, eager, PROMPT, 3, interventions=edits)
    texts = ["w1 w2 w3 w4 w5 w6", "w7 w8 w9 w1 w2 w3", "Paris w4 London w5 w6 w7"]
    da = tc.build_dashboards(model, eager, texts, out_path=tmp_path / "a", progress=False)
    db = tc.build_dashboards(model, lazy, texts, out_path=tmp_path / "b", progress=False)
    for la in eager.layers:
        for f in (0, 7, 13):
            fa, fb = da.feature(la, f), db.feature(la, f)
            assert fa["density"] == fb["density"] and fa["top_logits"] == fb["top_logits"]
            assert fa["act_max"] == pytest.approx(fb["act_max"], rel=1e-9)
    check = tc.check_graph(model, lazy, got, top=5)
    assert check.max_abs_error < 1e-9


def test_save_writes_a_set_that_reloads_the_same(pair, tmp_path):
    _, lazy = pair
    lazy.save(tmp_path / "again")
    assert_same_set(tc.load_transcoders(tmp_path / "again", lazy=True), lazy)
    assert resolve_spec(tmp_path / "again").mappable


def test_a_lazy_set_refuses_to_be_pickled(pair):
    import pickle

    from tl_circuits.errors import ConfigError

    _, lazy = pair
    with pytest.raises(ConfigError, match="cannot be pickled or sent elsewhere"):
        pickle.dumps(lazy)
