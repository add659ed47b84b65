"""Training and evaluation on every host: activations through the host's hooks (stopped early),
transcoders trained on nnsight, TransformerBridge and a saved Hugging Face folder (CLI), each set
then used by ``attribute`` on the model it was trained on."""

from __future__ import annotations

import random

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import VOCAB, tiny_tokenizer
from tests.hosts.hf_tiny import hf_model, on_host
from tl_circuits import TranscoderSet
from tl_circuits.hosts import as_host
from tl_circuits.replacement import activations_at
from tl_circuits.training.corpus import split_contexts, tokenize_contexts

KINDS = ("hooked", "bridge", "nnsight", "hf")
SMALL = dict(d_sae=32, k=4, batch=4, ctx_len=16, progress=False)
PROMPT = "w1 w2 Paris w3 London"

#: The last decoder layer of the model each host holds, as a plain torch module.
LAST_BLOCK = {
    "hooked": lambda m: m.blocks[2],
    "bridge": lambda m: m.blocks[2],
    "nnsight": lambda m: m._module.model.layers[2],
    "hf": lambda m: m.hf_model.model.layers[2],
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = hf_model("llama", dtype=torch.float32, seed=3)
    tmp = tmp_path_factory.mktemp("hosts")
    return {kind: on_host(kind, base, tmp) for kind in KINDS}


@pytest.fixture(scope="module")
def texts():
    rng = random.Random(1)
    words = VOCAB[2:]
    phrases = [" ".join(rng.choice(words) for _ in range(4)) for _ in range(10)]
    return [" ".join(rng.choice(phrases) for _ in range(40)) for _ in range(6)]


@pytest.mark.parametrize("kind", KINDS)
def test_activations_stop_after_the_last_site_on_every_host(kind, models):
    host = as_host(models[kind])
    tokens = torch.tensor([[0, 5, 9, 13, 2, 7], [0, 8, 8, 3, 11, 4]])
    sites = ["blocks.0.ln2.hook_normalized", "blocks.1.hook_mlp_out"]
    before = host.forward(tokens)
    calls: list[int] = []
    handle = LAST_BLOCK[kind](models[kind]).register_forward_hook(lambda *args: calls.append(1))
    try:
        early = activations_at(host, tokens, sites)
        assert calls == []  # layer 2 never ran
        full = activations_at(host, tokens, sites, stop_early=False)
        assert calls == [1]
    finally:
        handle.remove()
    reference = activations_at(as_host(models["hf"]), tokens, sites, stop_early=False)
    for site in sites:
        assert early[site].shape == (2, 6, 16)
        assert torch.equal(early[site], full[site])
        assert torch.allclose(early[site], reference[site], atol=1e-5)
    assert torch.equal(host.forward(tokens), before)


def test_train_on_nnsight_then_attribute(models, texts, tmp_path):
    model = models["nnsight"]
    # bfloat16_model=True (the default): the forward passes run on the host's bfloat16 copy.
    result = tc.train_transcoders(model, texts, steps=8, lr=1e-2, out_dir=tmp_path / "tc", **SMALL)
    assert result.layers == [0, 1, 2]
    assert next(model._module.parameters()).dtype == torch.float32  # the user's model untouched
    loaded = TranscoderSet.load(tmp_path / "tc")
    graph = tc.attribute(model, loaded, PROMPT, progress=False)
    assert graph.n_features > 0 and graph.settings["transcoder_layers"] == [0, 1, 2]
    # evaluation reads the same activations through any host: through the nnsight trace and
    # through plain Hugging Face module hooks (same tokenizer, so the same contexts) it agrees
    on_nnsight = tc.evaluate_transcoders(model, loaded, texts[:2], ctx_len=16)
    on_hf = tc.evaluate_transcoders(models["hf"], loaded, texts[:2], ctx_len=16)
    assert on_nnsight["fvu"] == pytest.approx(on_hf["fvu"], rel=1e-6)
    assert on_nnsight["kl"] == pytest.approx(on_hf["kl"], rel=1e-6)
    assert on_nnsight["n_tokens"] == on_hf["n_tokens"] > 0
    assert 0.0 < on_nnsight["mean_fvu"] < 1.0 and on_nnsight["kl"] > 0.0


def test_train_on_a_bridge_reports_the_fvu_of_its_held_out_activations(models, texts, tmp_path):
    bridge = models["bridge"]
    result = tc.train_transcoders(bridge, texts, steps=8, lr=1e-2, bfloat16_model=False,
                                  out_dir=tmp_path / "tc", **SMALL)
    contexts = tokenize_contexts(bridge.tokenizer, texts, 16, bos_token_id=0)
    _, held_out = split_contexts(contexts, 0.05)
    _, cache = bridge.run_with_cache(held_out)  # the Bridge's own hooks, not tl_circuits'
    x = {la: cache[result.hook_in(la)][:, 1:].reshape(-1, 16) for la in result.layers}
    acts = {la: result.encode(la, x[la]) for la in result.layers}
    for t in result:
        y = cache[result.hook_out(t.layer)][:, 1:].reshape(-1, 16).double()
        y_hat = result.reconstruct(t.layer, acts, x).double()
        fvu = (y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum()
        assert t.cfg["metrics"]["fvu"] == pytest.approx(float(fvu), rel=1e-4)
        assert t.cfg["training"]["model"] == "tiny"
    graph = tc.attribute(bridge, TranscoderSet.load(tmp_path / "tc"), PROMPT, progress=False)
    assert graph.n_features > 0


def test_cli_trains_on_a_saved_hugging_face_folder(texts, tmp_path, capsys):
    from tl_circuits.cli import main
    from tl_circuits.demo import model_loader

    folder = tmp_path / "tiny-llama"
    hf_model("llama", dtype=torch.float32, seed=5).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts), encoding="utf-8")
    out = tmp_path / "tc"
    code = main(["train", "--model", str(folder), "--steps", "2", "--texts", str(corpus),
                 "--out", str(out), "--ctx-len", "16", "--batch", "2", "--d-sae", "32", "--k", "4"])
    assert code == 0, capsys.readouterr().err
    assert f"saved transcoders to {out}" in capsys.readouterr().out
    loaded = TranscoderSet.load(out)
    assert loaded.layers == [0, 1, 2] and loaded.d_sae(0) == 32
    graph = tc.attribute(model_loader(str(folder))(), loaded, PROMPT, progress=False)
    assert graph.n_features > 0
    # a context longer than the model's (32 tokens) is refused before any training
    assert main(["train", "--model", str(folder), "--texts", str(corpus), "--out",
                 str(tmp_path / "o2"), "--ctx-len", "64"]) == 2
    assert "longer than the model's context of 32" in capsys.readouterr().err
