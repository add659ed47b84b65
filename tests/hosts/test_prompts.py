"""The one tokenization rule (tl_circuits/hosts/prompts.py): strings get the model's BOS whatever
the tokenizer does, chat messages are the chat template's tokens, token ids are used as given."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import VOCAB, tiny_model, tiny_set, tiny_tokenizer, tiny_transcoder
from tests.hosts.hf_tiny import HAS_HOOKED, float64_softmax, hf_model, on_host
from tl_circuits.errors import ConfigError
from tl_circuits.hosts import as_host
from tl_circuits.hosts.prompts import encode_prompt

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}w1 {% else %}w2 {% endif %}"
    "{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}w3{% endif %}"
)


@pytest.fixture(params=["adds_bos", "adds_none"])
def host(request):
    model = tiny_model("llama", n_layers=2)
    model.tokenizer = tiny_tokenizer(adds_bos=request.param == "adds_bos")
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


@pytest.mark.parametrize("adds_bos", [True, False], ids=["tokenizer_adds_bos", "tokenizer_adds_none"])
def test_one_string_gives_one_token_sequence_and_one_graph_on_every_host(adds_bos, tmp_path):
    """HookedTransformer, TransformerBridge, nnsight and Hugging Face hosts of one model."""
    model = hf_model("llama", dtype=torch.float64)
    ts = tc.TranscoderSet([tiny_transcoder(la, "relu_skip", seed=la) for la in range(3)])
    graphs = {}
    with float64_softmax():
        for kind in ("hf", "nnsight", "bridge", "hooked")[: 4 if HAS_HOOKED else 3]:
            host_model = on_host(kind, model, tmp_path, adds_bos=adds_bos)
            graphs[kind] = tc.attribute(host_model, ts, "w3 w17 Paris w9 London", progress=False)
        # A HF model without a tokenizer takes BOS from its config: the ids fold the same way.
        bare = tc.attribute(on_host("hf_bare", model, tmp_path), ts, graphs["hf"].tokens, progress=False)
    ref = graphs["hf"]
    assert ref.tokens == [0, 5, 19, 48, 11, 49] and ref.settings["has_bos"]
    assert ref.settings["prompt_encoding"]["bos_added"] == (not adds_bos)
    for kind, graph in [*graphs.items(), ("hf_bare", bare)]:
        assert graph.tokens == ref.tokens, kind
        assert torch.equal(graph.node_kind, ref.node_kind) and torch.equal(graph.node_position, ref.node_position)
        a, b = graph.adjacency.to_dense(), ref.adjacency.to_dense()
        assert float((a - b).abs().max() / b.abs().max()) <= 1e-9, kind
