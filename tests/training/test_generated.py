"""The shipped generated prose of the default corpus: its file, its reader and its writer."""

from __future__ import annotations

import gzip
import json

import pytest

from tl_circuits.errors import FileFormatError
from tl_circuits.training.corpus import default_texts
from tl_circuits.training.facts import fact_texts
from tl_circuits.training.generated import (
    SEEDS,
    SETTINGS,
    generate_texts,
    read_texts,
    shipped_texts,
    write_texts,
)


def test_the_shipped_texts_continue_every_seed_once_per_round():
    texts = shipped_texts()
    assert len(texts) == len(SEEDS) * SETTINGS["rounds"] == 896
    for seed in SEEDS:
        assert sum(t.startswith(seed) for t in texts) >= SETTINGS["rounds"], seed
    assert sum(len(t) for t in texts) > 500_000  # about 117k SmolLM2 tokens of prose


def test_the_default_corpus_is_the_facts_and_the_generated_prose():
    texts = default_texts()
    assert sorted(texts) == sorted(fact_texts() + shipped_texts())
    from pydoc_data.topics import topics

    assert not set(topics.values()) & set(texts)  # the pydoc topics of 0.2 are gone


def test_written_texts_read_back(tmp_path):
    path = tmp_path / "c.json.gz"
    write_texts(path, ["a b", "é c"], model="m")
    assert read_texts(path) == ["a b", "é c"]
    assert json.loads(gzip.decompress(path.read_bytes()))["model"] == "m"
    assert list(tmp_path.iterdir()) == [path]  # no temporary left beside it


@pytest.mark.parametrize("content, problem", [
    (b"not gzip", "not a gzipped JSON corpus"),
    (gzip.compress(b"{\"other\": 1}"), "'texts'"),
    (gzip.compress(b"{\"texts\": [1, 2]}"), "list of strings"),
])
def test_a_corrupt_file_is_refused_with_the_fix(tmp_path, content, problem):
    path = tmp_path / "c.json.gz"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=problem):
        read_texts(path)


class _Tokenizer:
    """Whitespace words as ids, padded on the left like a Hugging Face tokenizer."""

    pad_token = None
    eos_token = "<eos>"
    pad_token_id = 0
    padding_side = "right"

    def __init__(self):
        self.vocab = ["<pad>"]

    def _id(self, word):
        if word not in self.vocab:
            self.vocab.append(word)
        return self.vocab.index(word)

    def __call__(self, prompts, return_tensors, padding):
        import torch

        ids = [[self._id(w) for w in p.split()] for p in prompts]
        width = max(map(len, ids))
        assert self.padding_side == "left"
        return {"input_ids": torch.tensor([[0] * (width - len(r)) + r for r in ids])}

    def decode(self, row, skip_special_tokens):
        return " ".join(self.vocab[i] for i in row.tolist() if i)


class _Model:
    """Appends the word "next" ``max_new_tokens`` times."""

    def __init__(self, tok):
        self.tok = tok

    def generate(self, input_ids, max_new_tokens, **kw):
        import torch

        new = torch.full((input_ids.shape[0], max_new_tokens), self.tok._id("next"))
        return torch.cat([input_ids, new], 1)


def test_generation_continues_each_seed_in_every_round():
    tok = _Tokenizer()
    texts = generate_texts(_Model(tok), tok, ("the cat", "a dog sat"), rounds=3, max_new_tokens=2,
                           progress=False)
    assert sorted(texts) == sorted(["the cat next next", "a dog sat next next"] * 3)
    assert tok.padding_side == "left" and tok.pad_token == "<eos>"


@pytest.mark.slow
def test_smollm2_continues_the_seeds():
    from tl_circuits.models import load_hf

    model, tok = load_hf()
    texts = generate_texts(model, tok, SEEDS[:2], rounds=1, max_new_tokens=6, progress=False)
    assert sorted(t[: len(s)] for t, s in zip(sorted(texts), sorted(SEEDS[:2]), strict=True)) == sorted(SEEDS[:2])
    assert all(len(t) > len(s) + 5 for t, s in zip(sorted(texts), sorted(SEEDS[:2]), strict=True))
