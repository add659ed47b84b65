"""The activation cache: a second run trains from it without running the model, reads what the
model would give, resumes after a full disk, and refuses activations of other text."""

from __future__ import annotations

import errno
import random

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import VOCAB
from tests.hosts.hf_tiny import hf_model, on_host
from tl_circuits import ConfigError
from tl_circuits.hosts import as_host
from tl_circuits.training import cache as cache_mod
from tl_circuits.training.cache import ShuffledBatches, build_activation_cache, open_cache
from tl_circuits.training.corpus import tokenize_contexts
from tl_circuits.training.data import layer_activations

SMALL = dict(d_sae=32, k=4, batch=4, ctx_len=16, steps=6, lr=1e-2, progress=False,
             bfloat16_model=False)
HOOKS_IN = [f"blocks.{la}.ln2.hook_normalized" for la in range(3)]
HOOKS_OUT = [f"blocks.{la}.hook_mlp_out" for la in range(3)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return on_host("hooked", hf_model("llama", dtype=torch.float32, seed=3),
                   tmp_path_factory.mktemp("m"))


@pytest.fixture(scope="module")
def texts():
    rng = random.Random(5)
    phrases = [" ".join(rng.choice(VOCAB[2:]) for _ in range(4)) for _ in range(10)]
    return [" ".join(rng.choice(phrases) for _ in range(40)) for _ in range(10)]


def _count_forwards(model):
    calls: list[int] = []
    handle = model.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def test_a_second_run_reads_the_cache_without_running_the_model(model, texts, tmp_path):
    calls, handle = _count_forwards(model)
    try:
        first = tc.train_transcoders(model, texts, cache_dir=tmp_path / "cache", **SMALL)
        assert len(calls) > 0
        calls.clear()
        again = tc.train_transcoders(model, texts, cache_dir=tmp_path / "cache", **SMALL)
        wider = tc.train_transcoders(model, texts, cache_dir=tmp_path / "cache",
                                     **{**SMALL, "d_sae": 48, "kind": "jumprelu"})
        clt = tc.train_transcoders(model, texts, cache_dir=tmp_path / "cache",
                                   **{**SMALL, "cross_layer": True})
        assert calls == []  # three runs, no forward pass
    finally:
        handle.remove()
    for a, b in zip(first, again):  # the cache is read in the same shuffled order
        assert torch.equal(a.W_enc, b.W_enc) and torch.equal(a.W_dec, b.W_dec)
    assert wider.d_sae(0) == 48 and clt.layers == [0, 1, 2]
    # held-out metrics read from the cache equal those computed through the model
    n_eval = first[0].cfg["training"]["n_eval_contexts"]
    held_out = tokenize_contexts(model.tokenizer, texts, 16, bos_token_id=0)[-n_eval:]
    direct = tc.evaluate_transcoders(model, first, held_out)
    assert [t.cfg["metrics"]["fvu"] for t in first] == pytest.approx(direct["fvu"], rel=1e-6)
    assert [t.cfg["metrics"]["l0"] for t in first] == pytest.approx(direct["l0"], rel=1e-6)


def test_shards_hold_what_the_model_gives_and_are_read_in_shuffled_order(model, texts, tmp_path):
    host = as_host(model)
    contexts = tokenize_contexts(model.tokenizer, texts, 16, bos_token_id=0)[:10]

    def read(tokens):
        return layer_activations(host, tokens, HOOKS_IN, HOOKS_OUT, skip_first=True)

    settings = {"hooks_in": HOOKS_IN, "hooks_out": HOOKS_OUT}
    build_activation_cache(tmp_path, contexts, read, settings=settings, shard_mb=0.02, progress=False)
    cache = open_cache(tmp_path, contexts)
    assert len(cache.shards) > 2 and cache.n_tokens == 10 * 15
    x_ref, y_ref = read(contexts)
    x = torch.cat([cache.shard(i)[0] for i in range(len(cache.shards))], 1)
    y = torch.cat([cache.shard(i)[1] for i in range(len(cache.shards))], 1)
    assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    batches = ShuffledBatches(cache, 30, seed=1, mix_tokens=60)
    epoch = torch.cat([batches.batch(s)[0] for s in range(batches.steps_per_epoch)], 1)
    assert batches.steps_per_epoch == 5
    # every token once per epoch, not in the stored order
    rows = {tuple(r.tolist()) for r in epoch[0]}
    assert rows == {tuple(r.tolist()) for r in x_ref[0]} and not torch.equal(epoch, x_ref)
    assert torch.equal(ShuffledBatches(cache, 30, seed=1, mix_tokens=60).batch(3)[1], batches.batch(3)[1])
    # a run over fewer contexts reads the first ones; one over other text is refused
    assert open_cache(tmp_path, contexts[:4]).n_tokens == 4 * 15
    with pytest.raises(ConfigError, match="built from other text"):
        build_activation_cache(tmp_path, contexts.flip(0), read, settings=settings, progress=False)
    with pytest.raises(ConfigError, match="other settings"):
        build_activation_cache(tmp_path, contexts, read, settings={**settings, "hooks_in": []})


def test_a_full_disk_is_a_clear_error_and_the_next_run_resumes(model, texts, tmp_path, monkeypatch):
    host = as_host(model)
    contexts = tokenize_contexts(model.tokenizer, texts, 16, bos_token_id=0)[:10]
    reads: list[int] = []

    def read(tokens):
        reads.append(len(tokens))
        return layer_activations(host, tokens, HOOKS_IN, HOOKS_OUT, skip_first=True)

    settings = {"hooks_in": HOOKS_IN, "hooks_out": HOOKS_OUT}
    build_activation_cache(tmp_path, contexts[:4], read, settings=settings, shard_mb=0.02,
                           progress=False)  # a shorter run's cache
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    write = cache_mod._write_shard
    written: list[int] = []

    def fill_up(path, tensors, header):
        if len(written) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(1)
        write(path, tensors, header)

    monkeypatch.setattr(cache_mod, "_write_shard", fill_up)
    with pytest.raises(ConfigError, match="disk is full .* finished shards are kept"):
        build_activation_cache(tmp_path, contexts, read, settings=settings, progress=False)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # shard 0 (3 contexts) kept, shard 1 (1 context) extended to 3, shard 2 failed: no trace
    assert sorted(after) == ["meta.json", "shard_00000.safetensors", "shard_00001.safetensors"]
    for name in ("meta.json", "shard_00000.safetensors"):
        assert after[name] == before[name]
    assert after["shard_00001.safetensors"] != before["shard_00001.safetensors"]
    monkeypatch.setattr(cache_mod, "_write_shard", write)
    reads.clear()
    build_activation_cache(tmp_path, contexts, read, settings=settings, progress=False)
    per_shard = int(cache_mod.read_meta(tmp_path)["contexts_per_shard"])
    assert per_shard == 3 and sum(reads) == 10 - 2 * per_shard  # only the shards still missing
    x = torch.cat([open_cache(tmp_path, contexts).shard(i)[0] for i in range(4)], 1)
    assert torch.equal(x, read(contexts)[0])
