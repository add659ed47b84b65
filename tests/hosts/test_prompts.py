"""The one tokenization rule (tl_circuits/hosts/prompts.py): strings get the model's BOS whatever
the tokenizer does, chat messages are the chat template's tokens, token ids are used as given."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import VOCAB, tiny_model, tiny_set, tiny_tokenizer
from tl_circuits.errors import ConfigError
from tl_circuits.hosts import as_host
from tl_circuits.hosts.prompts import encode_prompt

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}w1 {% else %}w2 {% endif %}"
    "{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}w3{% endif %}"
)


def plain_tokenizer():
    """The tiny word-level tokenizer without its BOS post-processor (like SmolLM2's, it adds none)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>")


@pytest.fixture(params=["adds_bos", "adds_none"])
def host(request):
    model = tiny_model("llama", n_layers=2)
    model.tokenizer = tiny_tokenizer() if request.param == "adds_bos" else plain_tokenizer()
    model.tokenizer.chat_template = CHAT_TEMPLATE
    return as_host(model)


def test_a_string_starts_with_bos_whatever_the_tokenizer_does(host):
    enc = encode_prompt(host, "w3 w17 Paris")
    assert enc.tokens.tolist() == [0, 5, 19, 48]
    assert enc.bos_added == (host.tokenizer("w3")["input_ids"][0] != 0)
    assert enc.header() == {"source": "text", "prepend_bos": True, "bos_added": enc.bos_added}
    off = encode_prompt(host, "w3 w17 Paris", prepend_bos=False)
    assert off.tokens.tolist() == [5, 19, 48] and not off.bos_added


def test_token_ids_are_used_exactly_as_given(host):
    for ids in ([5, 19, 48], [0, 0, 5], torch.tensor([7, 8])):
        enc = encode_prompt(host, ids)
        assert enc.tokens.tolist() == torch.as_tensor(ids).tolist() and enc.source == "tokens"


def test_chat_messages_are_the_templates_tokens(host):
    messages = [{"role": "user", "content": "w5 w6"}, {"role": "assistant", "content": "w7"},
                {"role": "user", "content": "Paris"}]
    expected = host.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if not isinstance(expected, list):
        expected = expected["input_ids"]
    enc = encode_prompt(host, messages)
    assert enc.tokens.tolist() == list(expected)
    assert enc.tokens.tolist()[-1] == VOCAB.index("w3") and enc.source == "chat"
    assert enc.text == host.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_attribute_and_intervene_take_chat_messages_and_record_them(host):
    model, ts = host.model, tiny_set("relu", layers=(0, 1))
    messages = [{"role": "user", "content": "w5 w6 Paris"}]
    graph = tc.attribute(model, ts, messages, progress=False)
    assert graph.tokens == encode_prompt(host, messages).tokens.tolist()
    assert graph.settings["prompt_encoding"]["messages"] == messages
    same = tc.attribute(model, ts, graph.tokens, progress=False)
    assert torch.equal(graph.adjacency.to_dense(), same.adjacency.to_dense())
    out = tc.intervene(model, ts, messages, [])
    with torch.no_grad():
        plain = model(torch.tensor(graph.tokens)[None])[0]
    assert torch.allclose(out.logits, plain, atol=1e-9)


def test_the_graph_records_the_encoding(host):
    graph = tc.attribute(host.model, tiny_set("relu", layers=(0, 1)), "w3 w17 Paris", progress=False)
    assert graph.tokens[0] == 0 and graph.settings["has_bos"]
    assert graph.settings["prompt_encoding"]["source"] == "text"
    off = tc.attribute(host.model, tiny_set("relu", layers=(0, 1)), "w3 w17 Paris", prepend_bos=False,
                       progress=False)
    assert off.tokens == [5, 19, 48] and not off.settings["has_bos"]


@pytest.mark.parametrize("prompt, message", [
    ([{"role": "user"}], "needs a 'role' and a 'content'"),
    ([1.5, 2.5], "must be integers"),
    ([["a"]], "cannot read the prompt"),
    ("   ", "the prompt is empty"),
])
def test_bad_prompts_say_what_to_give(host, prompt, message):
    with pytest.raises(ConfigError, match=message):
        encode_prompt(host, prompt)


def test_chat_without_a_template_is_refused():
    model = tiny_model("llama", n_layers=2, tokenizer=True)
    with pytest.raises(ConfigError, match="chat template"):
        tc.attribute(model, tiny_set("relu", layers=(0, 1)), [{"role": "user", "content": "w1"}],
                     progress=False)
