"""Transcoder training on a tiny model: it learns, resumes exactly, saves atomically, fails clearly."""

from __future__ import annotations

import random

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import VOCAB, tiny_model
from tl_circuits import ConfigError, CrossLayerTranscoder, TranscoderSet
from tl_circuits.training.checkpoint import checkpoint_dir
from tl_circuits.training.corpus import tokenize_contexts, writable_dir

SMALL = dict(d_sae=32, k=4, batch=4, ctx_len=16, progress=False, bfloat16_model=False)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", dtype=torch.float32, tokenizer=True, seed=21)


@pytest.fixture(scope="module")
def texts():
    rng = random.Random(0)
    words = VOCAB[2:]
    # Text with structure (repeated phrases) so there is something to learn.
    phrases = [" ".join(rng.choice(words) for _ in range(4)) for _ in range(12)]
    return [" ".join(rng.choice(phrases) for _ in range(60)) for _ in range(8)]


def _weights(result):
    if isinstance(result, CrossLayerTranscoder):
        return [result.W_enc(la) for la in result.layers] + [result.W_dec(la) for la in result.layers]
    return [t for tcd in result for t in (tcd.W_enc, tcd.W_dec, tcd.b_enc, tcd.b_dec)]


def test_topk_training_learns_and_saves_saelens_directories(model, texts, tmp_path):
    result = tc.train_transcoders(model, texts, steps=30, lr=1e-2, out_dir=tmp_path / "tc", **SMALL)
    assert isinstance(result, TranscoderSet) and result.layers == [0, 1, 2]
    metrics = [t.cfg["metrics"] for t in result]
    assert all(m["l0"] <= 4.0 for m in metrics)
    assert sum(m["fvu"] for m in metrics) / 3 < 0.7, metrics  # untrained: about 1
    assert result[0].cfg["training"]["steps"] == 30 and result[0].cfg["training"]["kind"] == "topk"
    loaded = TranscoderSet.load(tmp_path / "tc")
    assert torch.equal(loaded[2].W_dec, result[2].W_dec)
    assert loaded[1].cfg["metrics"] == pytest.approx(metrics[1])
    assert not checkpoint_dir(tmp_path / "tc").exists()  # removed after a finished run


def test_resume_after_interrupt_gives_the_uninterrupted_result(model, texts, tmp_path):
    settings = dict(steps=12, checkpoint_every=4, **SMALL)
    full = tc.train_transcoders(model, texts, out_dir=tmp_path / "a", **settings)

    def interrupt(step, metrics):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tc.train_transcoders(model, texts, out_dir=tmp_path / "b", callback=interrupt, **settings)
    assert not (tmp_path / "b").exists()  # no half-written output
    assert checkpoint_dir(tmp_path / "b").is_dir()
    steps_run = []
    resumed = tc.train_transcoders(model, texts, out_dir=tmp_path / "b",
                                   callback=lambda s, m: steps_run.append(s), **settings)
    assert steps_run == list(range(7, 12))
    for a, b in zip(_weights(full), _weights(resumed)):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    # A checkpoint of other settings is refused, not silently mixed in.
    with pytest.raises(KeyboardInterrupt):
        tc.train_transcoders(model, texts, out_dir=tmp_path / "c", callback=interrupt, **settings)
    with pytest.raises(ConfigError, match="other settings"):
        tc.train_transcoders(model, texts, out_dir=tmp_path / "c", **{**settings, "steps": 13})


def test_cross_layer_training_writes_a_loadable_clt(model, texts, tmp_path):
    clt = tc.train_transcoders(model, texts, steps=30, lr=3e-3, cross_layer=True, skip=True,
                               out_dir=tmp_path / "clt", **SMALL)
    assert isinstance(clt, CrossLayerTranscoder) and clt.has_skip(0)
    assert clt.W_dec(0).shape == (32, 3, 16)
    back = CrossLayerTranscoder.load(tmp_path / "clt")
    x = torch.randn(3, 16)
    assert torch.equal(back.encode(1, x), clt.encode(1, x))
    assert back.extra_config["training"]["cross_layer"] is True
    assert max(back.extra_config["metrics"]["fvu"]) < 1.0


def test_jumprelu_training_learns_thresholds(model, texts):
    result = tc.train_transcoders(model, texts, kind="jumprelu", steps=15, lr=1e-2, **SMALL)
    for t in result:
        assert t.activation == "jumprelu" and t.threshold is not None and (t.threshold > 0).all()
        assert 0 < t.cfg["metrics"]["l0"] < 32 and t.cfg["metrics"]["fvu"] < 1.0


def test_evaluate_matches_a_direct_computation(model, texts):
    result = tc.train_transcoders(model, texts, steps=10, **SMALL)
    ev = tc.evaluate_transcoders(model, result, texts[:2], ctx_len=16)
    tokens = tokenize_contexts(model.tokenizer, texts[:2], 16, bos_token_id=0)
    _, cache = model.run_with_cache(tokens)
    t = result[1]
    x = cache[t.hook_name][:, 1:].reshape(-1, 16)
    y = cache[t.hook_name_out][:, 1:].reshape(-1, 16).double()
    fvu = (y - t(x).double()).pow(2).sum() / (y - y.mean(0)).pow(2).sum()
    assert ev["fvu"][1] == pytest.approx(float(fvu), rel=1e-5)
    assert ev["l0"][1] == pytest.approx(float((t.encode(x) > 0).sum(-1).double().mean()))
    assert 0.0 <= ev["top1_agreement"] <= 1.0 and ev["kl"] >= 0.0
    assert ev["n_tokens"] == tokens[:, 1:].numel()
    assert ev["mean_fvu"] == pytest.approx(sum(ev["fvu"]) / 3)
    from_tokens = tc.evaluate_transcoders(model, result, tokens)
    assert from_tokens["fvu"] == pytest.approx(ev["fvu"]) and from_tokens["kl"] == pytest.approx(ev["kl"])
    with pytest.raises(ConfigError, match="2-D long tensor"):
        tc.evaluate_transcoders(model, result, tokens.float())
    window = [t.cfg["metrics"]["dead_last_20_steps"] for t in result]
    assert window == [0.0, 0.0, 0.0]  # a 10-step run cannot hold a feature silent for 20 steps


def test_held_out_split_is_the_last_contexts():
    from tl_circuits.training.corpus import split_contexts

    contexts = torch.arange(40).view(20, 2)
    train, held = split_contexts(contexts, 0.05)
    assert held.tolist() == [[38, 39]] and len(train) == 19
    assert len(split_contexts(contexts[:1], 0.5)[1]) == 0


def test_bad_input_raises_config_errors(model, texts, tmp_path):
    with pytest.raises(ConfigError, match="no training text"):
        tc.train_transcoders(model, ["   "], steps=1, **SMALL)
    with pytest.raises(ConfigError, match="shorter than one context"):
        tc.train_transcoders(model, ["w1 w2 w3"], steps=1, **SMALL)
    with pytest.raises(ConfigError, match="requested transcoder sites"):
        tc.train_transcoders(model, texts, steps=1, hook_in="blocks.{l}.mlp.hook_nope", **SMALL)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not writable"):
        writable_dir(blocker / "cache", "cache directory")
    with pytest.raises(ConfigError, match="not writable"):
        tc.train_transcoders(model, texts, steps=1, out_dir=blocker / "sub" / "out", **SMALL)


def test_evaluate_reports_the_mean_graph_scores_of_the_prompt_set(model, texts):
    result = tc.train_transcoders(model, texts, steps=10, **SMALL)
    prompts = ["w1 w2 Paris w3", "London w4 w5 w6 w7"]
    ev = tc.evaluate_transcoders(model, result, texts[:1], ctx_len=16, graph_prompts=prompts)
    graphs = [tc.attribute(model, result, p, max_feature_nodes=1024, progress=False) for p in prompts]
    direct = [g.scores() for g in graphs]
    assert [s["prompt"] for s in ev["graph_scores"]] == prompts
    assert ev["replacement_score"] == pytest.approx(sum(d["replacement"] for d in direct) / 2, rel=1e-9)
    assert ev["completeness_score"] == pytest.approx(sum(d["completeness"] for d in direct) / 2, rel=1e-9)
    assert 0.0 < ev["replacement_score"] < 1.0 and 0.0 < ev["completeness_score"] <= 1.0
    # transcoders that explain nothing (decoders zeroed) leave everything to the error nodes
    import copy

    silent = copy.deepcopy(result)
    for t in silent:
        t.W_dec.data.zero_()
    worse = tc.evaluate_transcoders(model, silent, texts[:1], ctx_len=16, graph_prompts=prompts)
    assert worse["replacement_score"] < ev["replacement_score"]
    assert tc.evaluate_transcoders(model, result, texts[:1], ctx_len=16, graph_prompts=None).keys() \
        .isdisjoint({"replacement_score", "completeness_score"})
    from tl_circuits.training.evaluate import GRAPH_PROMPTS

    default = tc.evaluate_transcoders(model, result, texts[:1], ctx_len=16)
    assert [s["prompt"] for s in default["graph_scores"]] == list(GRAPH_PROMPTS)
