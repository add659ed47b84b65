"""The transcoder protocol: per-layer sets and cross-layer transcoders both implement it, without
inheriting from each other, and a CLT whose decoder is zero off the diagonal behaves exactly like
the per-layer set with the same weights; ``as_transcoders`` accepts what works and says why not."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_model, tiny_transcoder
from tl_circuits import ConfigError, CrossLayerTranscoder, Transcoder, TranscoderSet
from tl_circuits.transcoders import Transcoders, as_transcoders

PROMPT = [3, 17, 9, 41, 5]
L, D, S = 3, 16, 24


def pair(arch: str) -> tuple[TranscoderSet, CrossLayerTranscoder]:
    """A per-layer set and the CLT with the same weights, whose decoder is zero off the diagonal."""
    ts = TranscoderSet([tiny_transcoder(la, arch, seed=7) for la in range(L)])
    per = [ts[la] for la in range(L)]

    def diagonal(w: torch.Tensor, la: int) -> torch.Tensor:
        return torch.cat([w[:, None], torch.zeros(S, L - la - 1, D, dtype=w.dtype)], 1)

    clt = CrossLayerTranscoder(
        W_enc=[t.W_enc for t in per], b_enc=[t.b_enc for t in per],
        W_dec=[diagonal(t.W_dec, la) for la, t in enumerate(per)], b_dec=[t.b_dec for t in per],
        threshold=[t.threshold for t in per] if per[0].threshold is not None else None,
        k=per[0].k, W_skip=[t.W_skip for t in per] if per[0].W_skip is not None else None,
        activation=per[0].activation,
        hook_in=[t.hook_name for t in per], hook_out=[t.hook_name_out for t in per],
    )
    return ts, clt


def test_both_kinds_implement_the_protocol_and_neither_inherits():
    ts, clt = pair("relu")
    assert isinstance(ts, Transcoders) and isinstance(clt, Transcoders)
    assert not isinstance(clt, TranscoderSet) and not isinstance(ts, CrossLayerTranscoder)
    assert not issubclass(CrossLayerTranscoder, TranscoderSet)
    assert not issubclass(TranscoderSet, CrossLayerTranscoder)
    assert not hasattr(clt, "__getitem__") and not hasattr(clt, "__iter__")
    assert not isinstance(ts[0], Transcoders)  # one per-layer transcoder is not a set


@pytest.mark.parametrize("arch", ["relu_skip", "jumprelu", "topk_skip"])
def test_a_diagonal_clt_answers_every_protocol_member_like_the_per_layer_set(arch):
    ts, clt = pair(arch)
    for name in ("layers", "out_layers", "d_in", "d_out", "dtype", "device"):
        assert getattr(ts, name) == getattr(clt, name), name
    assert ts.layers == [0, 1, 2] and ts.dtype == torch.float64
    gen = torch.Generator().manual_seed(0)
    x = {la: torch.randn(2, 5, D, generator=gen, dtype=torch.float64) for la in range(L)}
    acts = {}
    for la in range(L):
        for name in ("d_sae", "hook_in", "hook_out", "has_skip"):
            assert getattr(ts, name)(la) == getattr(clt, name)(la), (name, la)
        assert torch.equal(ts.pre_activation(la, x[la]), clt.pre_activation(la, x[la]))
        acts[la] = ts.encode(la, x[la])
        assert torch.equal(acts[la], clt.encode(la, x[la]))
        assert acts[la].count_nonzero() > 0 and (acts[la] == 0).any()
        idx = torch.tensor([5, 0, 5, 23])
        assert torch.equal(ts.encoder_rows(la, idx), clt.encoder_rows(la, idx))
        assert torch.equal(ts.encoder_rows(la, idx), ts[la].W_enc[:, idx].T)
        rows, clt_rows = ts.decoder_vectors(la, idx), clt.decoder_vectors(la, idx)
        assert list(rows) == [la] and list(clt_rows) == list(range(la, L))
        assert torch.equal(rows[la], clt_rows[la])
        assert all(not v.any() for m, v in clt_rows.items() if m != la)
        assert torch.equal(ts.skip(la, x[la]), clt.skip(la, x[la]))
    assert ts.has_skip(0) == arch.endswith("_skip")
    for m in range(L):
        torch.testing.assert_close(clt.reconstruct(m, acts, x), ts.reconstruct(m, acts, x),
                                   rtol=0, atol=1e-12)
        torch.testing.assert_close(ts.reconstruct(m, acts, x), ts[m](x[m]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("arch", ["relu_skip", "topk"])
def test_to_and_save_behave_alike(tmp_path, arch):
    ts, clt = pair(arch)
    x = torch.randn(4, D, dtype=torch.float64)
    for obj, load in ((ts, TranscoderSet.load), (clt, CrossLayerTranscoder.load)):
        assert obj.to() is obj and obj.to(device="cpu", dtype=torch.float64) is obj
        cast = obj.to(dtype=torch.float32)
        assert cast is not obj and type(cast) is type(obj)
        assert (cast.dtype, obj.dtype) == (torch.float32, torch.float64)
        assert cast.encode(1, x).dtype == torch.float32
        obj.save(tmp_path / type(obj).__name__)
        back = load(tmp_path / type(obj).__name__)
        acts = {la: obj.encode(la, x) for la in range(L)}
        xs = dict.fromkeys(range(L), x)
        for m in range(L):
            assert torch.equal(back.reconstruct(m, acts, xs), obj.reconstruct(m, acts, xs))


def test_a_diagonal_clt_gives_the_graph_of_the_per_layer_set():
    model = tiny_model("llama", seed=4)
    ts, clt = pair("jumprelu_skip")
    a = tc.attribute(model, ts, PROMPT, progress=False)
    b = tc.attribute(model, clt, PROMPT, progress=False)
    assert a.nodes == b.nodes and a.n_features > 10
    dense_a, dense_b = a.adjacency.to_dense(), b.adjacency.to_dense()
    assert dense_a.abs().max() > 0.1
    assert float((dense_a - dense_b).abs().max()) <= 1e-9


# ---- as_transcoders ------------------------------------------------------------------------------
def test_as_transcoders_returns_protocol_objects_unchanged_and_wraps_per_layer_ones():
    ts, clt = pair("relu")
    assert as_transcoders(ts) is ts and as_transcoders(clt) is clt
    one = tiny_transcoder(2, "topk")
    wrapped = as_transcoders(one)
    assert isinstance(wrapped, TranscoderSet) and wrapped.layers == [2] and wrapped[2] is one
    listed = as_transcoders((tiny_transcoder(1, "relu"), one))
    assert isinstance(listed, TranscoderSet) and listed.layers == [1, 2] and listed[2] is one


@pytest.mark.parametrize(("obj", "message"), [
    (42, "expected transcoders, got int; pass a TranscoderSet, a CrossLayerTranscoder"),
    ([], "expected transcoders, got an empty list; pass at least one transcoder"),
    ("some/path", "expected transcoders, got str; pass a TranscoderSet"),
    ([tiny_transcoder(0, "relu"), 3], "item 1 of the list: expected a tl_circuits Transcoder or "
                                      "a sae_lens transcoder, got int."),
    ([pair("relu")[1]], "got CrossLayerTranscoder. A set of transcoders (such as a "
                        "CrossLayerTranscoder) is passed on its own, not in a list."),
])
def test_as_transcoders_says_what_would_work(obj, message):
    with pytest.raises(ConfigError) as info:
        as_transcoders(obj)
    assert message in str(info.value)


def test_attribute_names_the_wrong_argument():
    with pytest.raises(ConfigError, match="expected transcoders, got int"):
        tc.attribute(tiny_model("llama"), 7, PROMPT, progress=False)
    assert isinstance(tiny_transcoder(0, "relu"), Transcoder)
