"""QK attribution: the terms sum to the model's own score, each pair term is the bilinear part of
the score in the frozen model (brute force), and bad input is refused clearly."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.attention.conftest import CASES, PROMPT, model_pattern
from tests.attention.reference import combine, frozen_scores, parse_id
from tests.hosts.reference import _clean, source_adds
from tl_circuits.attention.inputs import read_inputs
from tl_circuits.attention.qk import explain_many
from tl_circuits.errors import ConfigError
from tl_circuits.hosts import as_host

LAYER, HEAD, QUERY = 2, 3, 6


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_terms_sum_to_the_models_own_scores(models, family, kind):
    model, transcoders, plain = models(family, kind)
    tokens = torch.tensor(PROMPT)
    inp = read_inputs(model, transcoders, PROMPT)
    exs = explain_many(inp, [(LAYER, HEAD, QUERY, k) for k in range(QUERY + 1)], top=5)
    for ex in exs:
        total = sum(p.term for p in ex.pairs) + sum(ex.other.values())
        assert abs(total - ex.score) <= 1e-6 * abs(ex.score) + 1e-12
        assert ex.softcapped == (family == "gemma2")
        assert len(ex.pairs) == 5
    # The model's own pattern is the softmax of the (soft-capped) scores over the keys it sees.
    pattern = model_pattern(plain, tokens, LAYER)[HEAD, QUERY, : QUERY + 1].double()
    seen = pattern > 0  # Gemma-3's local layers see a window
    capped = torch.tensor([ex.capped_score for ex in exs], dtype=torch.float64)[seen]
    torch.testing.assert_close(torch.log_softmax(capped, 0), pattern[seen].log(), rtol=0, atol=1e-9)
    torch.testing.assert_close(torch.tensor([ex.pattern for ex in exs], dtype=torch.float64),
                               pattern, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_pair_terms_are_the_bilinear_part_of_the_frozen_score(models, family, kind):
    """Scaling query-side source s by (1+e) and key-side source s' by (1+d) in the frozen model
    changes the score by e*d*(P[s,s'] + P[s',s]) plus terms in e, d, e^2, d^2 alone; and with
    every node's write removed the score is the bias x bias term."""
    model, transcoders, _ = models(family, kind)
    host, tokens = as_host(model), torch.tensor(PROMPT)
    key = 2
    inp = read_inputs(model, transcoders, PROMPT)
    ex = explain_many(inp, [(LAYER, HEAD, QUERY, key)], top=10**9)[0]
    terms = {(p.query, p.key): p.term for p in ex.pairs}
    assert ex.other["other pairs"] == pytest.approx(0.0, abs=1e-9)
    named = {"bias", "position"}
    ids = sorted(({s for s, _ in ex.query_sources} | {s for s, _ in ex.key_sources}) - named)
    full = _clean(host, tokens, transcoders)
    adds = source_adds(host, transcoders, [parse_id(i) for i in ids], full, has_bos=inp.has_bos)
    by_id = dict(zip(ids, adds.values()))
    positions = learned_positions(host, tokens)
    assert (positions is not None) == (family == "gpt2")
    if positions is not None:  # GPT-2: tokens write their token embedding, "position" the rest
        embed = host.embed_hook()
        for i in ids:
            if i.startswith("E_"):
                p = parse_id(i).position
                by_id[i] = {**by_id[i], (embed, p): by_id[i][(embed, p)] - positions[p]}
        by_id["position"] = {(embed, p): positions[p] for p in range(len(PROMPT))}
        ids.append("position")
    q_side = [s for s, _ in ex.query_sources if s != "bias"][:3]
    k_side = [s for s, _ in ex.key_sources if s != "bias"][:3]
    if positions is not None:
        assert "position" in dict(ex.query_sources) or "position" in dict(ex.key_sources)
    e, d = 0.5, -0.7
    rows, pairs = [{}], []
    for s in q_side:
        for s2 in k_side:
            pairs.append((s, s2))
            rows += [combine((by_id[s], e)), combine((by_id[s2], d)),
                     combine((by_id[s], e), (by_id[s2], d))]
    rows.append(combine(*((by_id[s], -1.0) for s in ids)))  # every node removed
    rotary = kind != "tl" or family != "gpt2"
    scores = frozen_scores(host, tokens, transcoders, rows, LAYER, HEAD, QUERY, key, rotary=rotary)
    assert float(scores[0]) == pytest.approx(ex.score, rel=1e-9)
    for j, (s, s2) in enumerate(pairs):
        s_e, s_d, s_ed = scores[1 + 3 * j : 4 + 3 * j]
        mixed = float(s_ed - s_e - s_d + scores[0]) / (e * d)
        want = terms.get((s, s2), 0.0) + terms.get((s2, s), 0.0)  # 2 P[s, s] for one source
        assert mixed == pytest.approx(want, rel=1e-6, abs=1e-9 * abs(ex.score)), (s, s2)
    assert float(scores[-1]) == pytest.approx(terms[("bias", "bias")], rel=1e-6, abs=1e-9)


def learned_positions(host, tokens):
    """The model's learned position embeddings on the prompt, or None (rotary models)."""
    model = getattr(host, "model", None)
    if model is not None and hasattr(model, "W_pos"):
        return model.W_pos[: tokens.numel()].detach()
    wpe = getattr(getattr(getattr(host, "hf_model", None), "transformer", None), "wpe", None)
    return None if wpe is None else wpe.weight[: tokens.numel()].detach()


def test_bad_input_is_refused_clearly(models):
    model, transcoders, _ = models("llama", "hf")
    def explain(*where, prompt=PROMPT):
        return tc.explain_attention(model, transcoders, prompt, *where)

    with pytest.raises(ConfigError, match="layer 3 does not exist"):
        explain(3, 0, 2, 1)
    with pytest.raises(ConfigError, match="head 4 does not exist"):
        explain(0, 4, 2, 1)
    with pytest.raises(ConfigError, match="query_pos=7 is outside"):
        explain(0, 0, 7, 1)
    with pytest.raises(ConfigError, match="after query_pos=2: causal attention masks it"):
        explain(0, 0, 2, 4)
    graph = tc.attribute(model, transcoders, PROMPT, progress=False)
    other, _, _ = models("qwen2", "hf")
    with pytest.raises(ConfigError, match="another model"):
        tc.explain_attention(other, transcoders, graph, 0, 0, 2, 1)
    wider = tc.TranscoderSet([t for t in transcoders][:2])
    with pytest.raises(ConfigError, match="another model or transcoders"):
        tc.explain_attention(model, wider, graph, 0, 0, 2, 1)
    bridge, _, _ = models("llama", "bridge")
    with pytest.raises(ConfigError, match="Pass the Hugging Face model itself"):
        tc.explain_attention(bridge, transcoders, PROMPT, 0, 0, 2, 1)
    nnsight_model, _, _ = models("qwen2", "nnsight")
    with pytest.raises(ConfigError, match="head_loadings=True needs a local run"):
        tc.attribute(nnsight_model, transcoders, PROMPT, remote="local", head_loadings=True)


def test_a_graph_gives_its_own_prompt_and_node_ids(models):
    model, transcoders, _ = models("gemma2", "hf")
    graph = tc.attribute(model, transcoders, PROMPT, progress=False)
    from_graph = tc.explain_attention(model, transcoders, graph, 1, 2, 5, 3)
    from_prompt = tc.explain_attention(model, transcoders, PROMPT, 1, 2, 5, 3)
    assert from_graph.to_json() == from_prompt.to_json()
    entry = from_graph.to_json()
    assert entry["softcapped"] is True and len(entry["pairs"]) == 20
    assert sum(p["term"] for p in entry["pairs"]) + sum(entry["other"].values()) == pytest.approx(entry["score"])
    node_ids = {f"{n.layer}_{n.index}_{n.position}" for n in graph.nodes if n.kind == "feature"}
    listed = {p[side] for p in entry["pairs"] for side in ("query", "key")}
    assert any(i in node_ids for i in listed)
    assert "L1H2 query 5 -> key 3" in str(from_graph)
