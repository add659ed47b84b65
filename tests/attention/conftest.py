"""Tiny models for the attention tests: TL HookedTransformers of three families and Hugging Face
models of every family, on the hosts that can read attention."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_model, tiny_transcoder
from tests.hosts.hf_tiny import FAMILIES, float64_softmax, hf_model, on_host

PROMPT = [0, 3, 17, 9, 41, 5, 22]
#: (family, host kind): TL's own tiny families, every HF family on the HF host, Gemma-3's q/k
#: norms in TL, and nnsight once.
_ALL = [(f, "tl") for f in ("gpt2", "llama", "gemma2")] + [(f, "hf") for f in FAMILIES] + [
    ("gemma3_text", "hooked"), ("qwen2", "nnsight")]
#: The fast set: GPT-2 learned positions and Gemma-2 soft-caps (TL), Qwen2 GQA with q/k/v biases
#: (HF and nnsight), Gemma-3 q/k norms with local and global layers (HF and TL); the rest is slow.
FAST = {("gpt2", "tl"), ("gemma2", "tl"), ("qwen2", "hf"), ("gemma3_text", "hf"),
        ("gemma3_text", "hooked"), ("qwen2", "nnsight")}
CASES = [c if c in FAST else pytest.param(*c, marks=pytest.mark.slow) for c in _ALL]


@pytest.fixture(scope="module", autouse=True)
def _float64_softmax():
    with float64_softmax():
        yield


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """``models(family, kind)``: (model on that host, transcoders, the plain model), built once."""
    cache: dict = {}

    def build(family, kind):
        if (family, kind) not in cache:
            transcoders = tc.TranscoderSet([tiny_transcoder(la, "jumprelu_skip", seed=la,
                                                            hook_in="blocks.{l}.mlp.hook_in")
                                            for la in range(3)])
            if kind == "tl":
                model = tiny_model(family)
                cache[family, kind] = (model, transcoders, model)
            else:
                plain = hf_model(family)
                cache[family, kind] = (on_host(kind, plain, tmp_path_factory.mktemp("attn")),
                                       transcoders, plain)
        return cache[family, kind]

    return build


def model_pattern(plain, tokens, layer):
    """The attention pattern ``[head, q, k]`` of the plain model (no tl_circuits hook)."""
    with torch.no_grad():
        if hasattr(plain, "run_with_cache"):
            _, cache = plain.run_with_cache(tokens[None])
            return cache[f"blocks.{layer}.attn.hook_pattern"][0]
        return plain(tokens[None], output_attentions=True).attentions[layer][0]
