"""The numeric checks of automatic sites (``tl_circuits.hosts.checks``): each one catches its fault.

A model whose attention computes its softmax inline, out of reach of any hook, is refused before
a graph is built, with an error naming check (c) and the attention module; wrong rows are caught
by the check that sees their fault ((a) a wrong norm kind, (b) an unfrozen norm, (c) an attention
site on the wrong module). That the checks raise no false alarm on any family and host is in
``test_new_families.py``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_set
from tests.hosts.hf_tiny import compute_in_float64, float64_softmax, hf_config, hf_model
from tl_circuits.errors import ConfigError
from tl_circuits.hosts import as_host, checks
from tl_circuits.hosts.checks import check_host
from tl_circuits.hosts.hf import HFHost
from tl_circuits.hosts.sites import ARCH_SITES

PROMPT = [0, 3, 17, 9, 41, 5, 22]


@pytest.fixture(scope="module", autouse=True)
def _float64_softmax():
    with float64_softmax():
        yield


def inline_attention_model(seed: int = 0):
    """A tiny decoder of a type no table knows, whose attention takes its softmax inline (no
    ``AttentionInterface``, nothing hookable between the scores and the weighted sum)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import (
        LlamaAttention,
        apply_rotary_pos_emb,
        repeat_kv,
    )

    class InlineSoftmaxAttention(LlamaAttention):
        def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
            b, t, _ = hidden_states.shape
            shape = (b, t, -1, self.head_dim)
            q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
            k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
            v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
            k, v = repeat_kv(k, self.num_key_value_groups), repeat_kv(v, self.num_key_value_groups)
            scores = q @ k.transpose(2, 3) * self.scaling
            causal = torch.ones(t, t, dtype=torch.bool, device=scores.device).tril()
            pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
            return self.o_proj((pattern @ v).transpose(1, 2).reshape(b, t, -1)), pattern

    class InlineConfig(LlamaConfig):
        model_type = "tiny_inline_attention"

    class InlineForCausalLM(LlamaForCausalLM):
        config_class = InlineConfig

        def __init__(self, config):
            super().__init__(config)
            for i, layer in enumerate(self.model.layers):
                layer.self_attn = InlineSoftmaxAttention(config, i)

    config = {k: v for k, v in hf_config("llama").to_dict().items() if k != "model_type"}
    model = InlineForCausalLM(InlineConfig(**config)).to(torch.float64).eval()
    model.load_state_dict(hf_model("llama", seed=seed).state_dict())
    return compute_in_float64(model)


def test_unhookable_attention_is_refused_with_the_checks_error():
    model = inline_attention_model()
    assert "tiny_inline_attention" not in ARCH_SITES
    with pytest.raises(ConfigError) as err:
        tc.attribute(model, tiny_set("relu"), PROMPT, progress=False)
    message = str(err.value)
    assert "automatic sites for 'tiny_inline_attention' (InlineForCausalLM) failed the checks" in message
    assert ("check (c) patterns and scales frozen: the freeze hooks blocks.0.attn.hook_pattern, "
            "blocks.1.attn.hook_pattern, blocks.2.attn.hook_pattern never ran, on module "
            "model.layers.0.self_attn (InlineSoftmaxAttention)") in message
    assert "check (b) linear under the freezes" in message and "AttentionInterface" in message
    assert "tl_circuits/hosts/sites.py ARCH_SITES" in message


def test_unhookable_attention_is_refused_on_nnsight_too():
    from nnsight import LanguageModel

    from tests.core.tiny import tiny_tokenizer

    with pytest.raises(ConfigError, match=r"check \(c\).*model\.layers\.0\.self_attn"):
        as_host(LanguageModel(inline_attention_model(), tokenizer=tiny_tokenizer()))


def test_what_each_check_measures_on_the_refused_model():
    """Check (a) passes (the spliced model still computes the model's logits); (b) and (c) see
    the unfrozen softmax, first after block 0, at O(1)."""
    host = HFHost(inline_attention_model(), sites=ARCH_SITES["llama"], check=False)
    report = check_host(host)
    assert report.logits_error <= 1e-12
    assert report.nonlinearity > 1e-2 and report.gradient_change > 1e-2
    assert any("check (b)" in f and "blocks.1.hook_resid_pre" in f and "after block 0: on module "
               "model.layers.0 (LlamaDecoderLayer)" in f for f in report.failures)
    assert any("check (c)" in f and "after block 0: on module model.layers.0.self_attn" in f
               for f in report.failures)


@pytest.mark.parametrize(("family", "change", "expected"), [
    # (a): Gemma's norms compute x / s * (1 + w); recomputing them as x / s * w changes the logits.
    ("gemma2", {"norm": "rms"}, r"check \(a\) splice reproduces the logits: .* differ from the model's"),
    # (b): the norm before attention not frozen: the value path is no longer linear.
    ("llama", {"ln1": None}, r"check \(b\) linear under the freezes: .*first seen after block 0: "
                             r"on module model\.layers\.0 \(LlamaDecoderLayer\)"),
    # (c): the pattern site on a module that computes no attention: its hook never runs.
    ("llama", {"attn": "mlp"}, r"check \(c\) patterns and scales frozen: the freeze hooks "
                               r"blocks\.0\.attn\.hook_pattern, .* never ran, on module "
                               r"model\.layers\.0\.mlp \(LlamaMLP\)"),
])
def test_each_check_catches_its_fault(family, change, expected):
    row = dataclasses.replace(ARCH_SITES[family], **change)
    with pytest.raises(ConfigError, match=expected):
        HFHost(hf_model(family), sites=row)


def test_checks_run_once_per_model(monkeypatch):
    model = hf_model("starcoder2")
    calls = []
    original = checks.check_host
    monkeypatch.setattr(checks, "check_host", lambda host: calls.append(1) or original(host))
    for _ in range(3):
        as_host(model)
    assert len(calls) == 1
    as_host(hf_model("starcoder2"))  # another model object: checked again
    assert len(calls) == 2


def test_checks_on_float32():
    """In float32 the checks pass with room to spare on a model whose sites are right."""
    report = check_host(as_host(hf_model("starcoder2", dtype=torch.float32)))
    assert report.passed and report.logits_error <= 1e-5
    assert report.nonlinearity <= 1e-4 and report.gradient_change <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_unhookable_attention_is_refused_in_lower_precision(dtype):
    """Check (c) is exact in any dtype (the held model's gradient uses only weights and held
    values), so the inline softmax is caught in float32 and bfloat16 too."""
    with pytest.raises(ConfigError, match=r"check \(c\).*model\.layers\.0\.self_attn"):
        as_host(inline_attention_model().to(dtype))


@pytest.mark.slow
def test_no_false_alarm_on_real_weights():
    """SmolLM2-135M (the embedded default model, float32) through automatic sites: the proposed
    row is the table's Llama row, and the checks pass despite its massive activations (values of
    ~3e4 in the residual stream, where float32 rounding is ~4e-3)."""
    from tl_circuits.hosts.discover import discover_sites
    from tl_circuits.models import load_hf

    model, _ = load_hf(torch.float32)
    row = discover_sites(model.eval())
    assert row == ARCH_SITES["llama"]
    report = check_host(HFHost(model, sites=row, check=False))
    assert report.passed, report.failures
    assert report.logits_error <= 1e-5 and report.gradient_change == 0
