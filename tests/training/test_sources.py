"""Corpora in every format train the same transcoders, on every host; bad corpora fail clearly
and leave an interrupted run's checkpoint as it was."""

from __future__ import annotations

import json
import random

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import VOCAB, tiny_tokenizer
from tests.hosts.hf_tiny import hf_model, on_host
from tl_circuits import ConfigError
from tl_circuits.training.checkpoint import checkpoint_dir
from tl_circuits.training.corpus import tokenize_contexts
from tl_circuits.training.sources import iter_texts, read_contexts

KINDS = ("hooked", "bridge", "nnsight", "hf")
SMALL = dict(d_sae=32, k=4, batch=4, ctx_len=16, steps=3, lr=1e-2, progress=False,
             bfloat16_model=False)


@pytest.fixture(scope="module")
def texts():
    rng = random.Random(2)
    phrases = [" ".join(rng.choice(VOCAB[2:]) for _ in range(4)) for _ in range(10)]
    return [" ".join(rng.choice(phrases) for _ in range(30)) for _ in range(10)]


@pytest.fixture(scope="module")
def corpora(texts, tmp_path_factory):
    """The same texts as a folder of .txt files, JSON lines, Parquet and a `datasets` folder."""
    import datasets

    tmp = tmp_path_factory.mktemp("corpora")
    (tmp / "txt").mkdir()
    for i, t in enumerate(texts):
        (tmp / "txt" / f"{i:02d}.txt").write_text(t, encoding="utf-8")
    with (tmp / "c.jsonl").open("w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "body": t}) + "\n")
    ds = datasets.Dataset.from_dict({"body": texts, "id": list(range(len(texts)))})
    ds.to_parquet(str(tmp / "c.parquet"))
    ds.save_to_disk(str(tmp / "ds"))
    return {"txt": tmp / "txt", "jsonl": tmp / "c.jsonl", "parquet": tmp / "c.parquet",
            "datasets": tmp / "ds", "dataset_object": ds}


def test_every_format_reads_the_same_texts_and_packs_them_by_the_documented_rule(texts, corpora):
    for name, source in corpora.items():
        assert list(iter_texts(source, field="body")) == texts, name
    tok = tiny_tokenizer()
    packed = read_contexts(tok, corpora["jsonl"], 16, bos_token_id=0, field="body")
    assert torch.equal(packed, tokenize_contexts(tok, texts, 16, bos_token_id=0))
    # the rule: texts joined (EOS after each when the tokenizer has one), cut into 15-token
    # windows, BOS in front of each, the remainder dropped
    ids = [i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"]]
    assert tok.eos_token_id is None and len(packed) == len(ids) // 15
    assert packed[:, 0].eq(0).all() and packed[:, 1:].reshape(-1).tolist() == ids[: len(packed) * 15]
    # only as much as asked for is read
    assert len(read_contexts(tok, corpora["parquet"], 16, bos_token_id=0, n_contexts=3, field="body")) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_train_from_text_jsonl_and_datasets_on_every_host(kind, corpora, tmp_path):
    model = on_host(kind, hf_model("llama", dtype=torch.float32, seed=3), tmp_path)
    results = {}
    for fmt in ("txt", "jsonl", "datasets"):
        results[fmt] = tc.train_transcoders(model, corpus=corpora[fmt], field="body",
                                            out_dir=tmp_path / fmt, **SMALL)
        assert results[fmt][0].cfg["training"]["corpus"] == str(corpora[fmt])
    for fmt in ("jsonl", "datasets"):  # the same texts: the same contexts, the same weights
        for a, b in zip(results[fmt], results["txt"]):
            assert torch.allclose(a.W_enc, b.W_enc, atol=1e-6) and torch.allclose(a.W_dec, b.W_dec, atol=1e-6)
    training = results["txt"][0].cfg["training"]
    # 3 steps of 4 contexts, then the held-out 5% after them: 1 context
    assert training["n_train_contexts"] == 12 and training["n_eval_contexts"] == 1
    assert all(t.cfg["metrics"]["fvu"] > 0 for t in results["txt"])


@pytest.fixture(scope="module")
def hooked(tmp_path_factory):
    return on_host("hooked", hf_model("llama", dtype=torch.float32, seed=3),
                   tmp_path_factory.mktemp("hooked"))


def test_bad_corpora_are_clear_errors_and_keep_the_checkpoint(hooked, texts, corpora, tmp_path, monkeypatch):
    out = tmp_path / "tc"

    def stop(step, metrics):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tc.train_transcoders(hooked, corpus=corpora["jsonl"], field="body", out_dir=out,
                             callback=stop, **SMALL)
    ckpt = checkpoint_dir(out)
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    run = dict(SMALL, out_dir=out)
    with pytest.raises(ConfigError, match="holds no text"):
        tc.train_transcoders(hooked, corpus=empty, **run)
    with pytest.raises(ConfigError, match=r"has no field 'text' \(it has \['body', 'id'\]\)"):
        tc.train_transcoders(hooked, corpus=corpora["jsonl"], **run)
    with pytest.raises(ConfigError, match=r"no column 'text' \(it has \['body', 'id'\]\)"):
        tc.train_transcoders(hooked, corpus=corpora["parquet"], **run)
    with pytest.raises(ConfigError, match=r"no field 'text' \(it has \['body', 'id'\]\)"):
        tc.train_transcoders(hooked, corpus=corpora["datasets"], **run)
    with pytest.raises(ConfigError, match="longer than the model's context of 32"):
        tc.train_transcoders(hooked, corpus=corpora["jsonl"], field="body", **{**run, "ctx_len": 64})
    assert hooked.tokenizer.eos_token_id is not None  # one EOS after each text
    n_tokens = sum(len(t.split()) + 1 for t in texts)
    with pytest.raises(ConfigError, match=f"holds {n_tokens} tokens \\({n_tokens // 15} contexts of "
                       "16\\), fewer than the 1053 contexts"):
        tc.train_transcoders(hooked, corpus=corpora["jsonl"], field="body", **{**run, "steps": 250})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="offline"):
        tc.train_transcoders(hooked, corpus="hf://someone/some-corpus", **run)
    with pytest.raises(ConfigError, match="does not exist"):
        tc.train_transcoders(hooked, corpus=tmp_path / "missing.jsonl", **run)
    with pytest.raises(ConfigError, match="texts or corpus"):
        tc.train_transcoders(hooked, texts, corpus=corpora["jsonl"], **run)
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before
    # and the interrupted run still resumes from it
    resumed = tc.train_transcoders(hooked, corpus=corpora["jsonl"], field="body", out_dir=out, **SMALL)
    assert resumed.layers == [0, 1, 2] and not ckpt.exists()


def test_a_missing_reader_package_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    monkeypatch.setattr("importlib.import_module", lambda name: no_pyarrow(name))
    (tmp_path / "c.parquet").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"needs the 'pyarrow.parquet' package.*pip install pyarrow"):
        list(iter_texts(tmp_path / "c.parquet"))
