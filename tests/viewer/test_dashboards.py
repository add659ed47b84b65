"""Dashboards agree with a brute-force pass over the same texts; lookups read one feature."""

from __future__ import annotations

import json

import pytest
import torch

import tl_circuits
from tl_circuits.errors import ConfigError, FileFormatError
from tl_circuits.hosts import as_host


def brute_force_acts(model, transcoders, texts, layer):
    """Activations [token, d_sae] of every non-BOS token of every text (all of equal length)."""
    host = as_host(model)
    ids = torch.stack([host.tokenize(text) for text in texts])
    _, cache = model.run_with_cache(ids, names_filter=transcoders.hook_in(layer))
    acts = transcoders.encode(layer, cache[transcoders.hook_in(layer)]).float()
    return list(acts[:, 1:])  # drop BOS


@pytest.mark.parametrize("layer", [0, 2])
def test_top_activation_density_and_logits_match_brute_force(model, transcoders, texts, dashboards, layer):
    per_text = brute_force_acts(model, transcoders, texts, layer)
    all_acts = torch.cat(per_text)
    density = (all_acts > 0).float().mean(0)
    per_text_max = torch.stack([a.max(0).values for a in per_text])  # [text, d_sae]
    W = (transcoders[layer].W_dec @ model.W_U).float()
    checked = 0
    for f in range(transcoders.d_sae(layer)):
        d = dashboards.feature(layer, f)
        assert d["density"] == pytest.approx(float(density[f]), abs=1e-6)
        assert d["act_max"] == pytest.approx(float(all_acts[:, f].max()), rel=1e-4, abs=1e-6)
        top = d["examples_quantiles"][0]
        assert top["quantile_name"] == "Top activations"
        expected = per_text_max[:, f].sort(descending=True).values
        expected = expected[expected > 0][:5]
        assert [e["max_act"] for e in top["examples"]] == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-5)
        for ex in top["examples"]:
            assert len(ex["tokens"]) == len(ex["tokens_acts_list"]) <= 7  # context 3 each side
            assert max(ex["tokens_acts_list"]) == pytest.approx(ex["max_act"], rel=2e-3)  # float16 window
        for q in d["examples_quantiles"][1:]:
            assert all(0 < e["max_act"] <= expected[0] + 1e-5 for e in q["examples"])
        top_ids = W[f].topk(10).indices.tolist()
        assert d["top_logits"] == as_host(model).token_strings(top_ids)
        assert d["top_logits_values"] == pytest.approx(W[f].topk(10).values.tolist(), abs=1e-4)
        assert d["bottom_logits_values"][0] == pytest.approx(float(W[f].min()), abs=1e-4)
        checked += len(top["examples"])
    assert checked > 10  # the fixture's features do fire


def test_top_example_tokens_are_the_window_around_the_peak(model, transcoders, texts, dashboards):
    host = as_host(model)
    layer, f = 1, 3
    per_text = brute_force_acts(model, transcoders, texts, layer)
    best = max(range(len(texts)), key=lambda i: float(per_text[i][:, f].max()))
    pos = int(per_text[best][:, f].argmax()) + 1  # undo the BOS drop
    ids = host.tokenize(texts[best]).tolist()
    window = host.token_strings(ids[max(0, pos - 3): pos + 4])
    assert dashboards.feature(layer, f)["examples_quantiles"][0]["examples"][0]["tokens"] == window


def test_open_errors(tmp_path, dashboards):
    with pytest.raises(FileFormatError, match="no dashboards"):
        tl_circuits.Dashboards.open(tmp_path)
    with pytest.raises(KeyError, match="no dashboard for layer 7"):
        dashboards.feature(7, 0)
    index = json.loads((dashboards.path / "index.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dashboards.safetensors").write_bytes((dashboards.path / "dashboards.safetensors").read_bytes())
    (bad / "index.json").write_text(json.dumps({**index, "format_version": 99}))
    with pytest.raises(FileFormatError, match="format version 99"):
        tl_circuits.Dashboards.open(bad)


def test_bad_arguments(model, transcoders, tmp_path):
    with pytest.raises(ConfigError, match="n_top >= 1"):
        tl_circuits.build_dashboards(model, transcoders, ["w1"], out_path=tmp_path / "d", n_top=0)
    with pytest.raises(ConfigError, match="no non-empty texts"):
        tl_circuits.build_dashboards(model, transcoders, [], out_path=tmp_path / "d", progress=False)
    assert not (tmp_path / "d").exists()


def test_cross_layer_transcoder_sums_its_decoder_rows(model, texts, tmp_path):
    gen = torch.Generator().manual_seed(5)
    L, d, s = 3, 16, 8

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    clt = tl_circuits.CrossLayerTranscoder(
        W_enc=[rnd(d, s) / 4 for _ in range(L)], b_enc=[rnd(s) * 0.1 for _ in range(L)],
        W_dec=[rnd(s, L - la, d) for la in range(L)], b_dec=[torch.zeros(d, dtype=torch.float64)] * L,
        hook_in=[f"blocks.{la}.ln2.hook_normalized" for la in range(L)],
        hook_out=[f"blocks.{la}.hook_mlp_out" for la in range(L)],
    )
    dash = tl_circuits.build_dashboards(model, clt, texts[:6], out_path=tmp_path / "d", progress=False)
    W = clt.decoder_vectors(0, torch.arange(s))
    total = torch.stack(list(W.values())).sum(0) @ model.W_U
    assert len(W) == L
    assert dash.feature(0, 2)["top_logits_values"][0] == pytest.approx(float(total[2].max()), abs=1e-4)
    assert dash.feature(2, 2)["examples_quantiles"][0]["quantile_name"] == "Top activations"
