"""Automatic sites (``tl_circuits.hosts.discover``): rows read off the model itself.

Discovery finds exactly the hand-written table row of every family in the table (so the table
documents what discovery would find, and pins it); a family outside the table (StarCoder2:
LayerNorms with biases, biased projections) is traced through automatic sites on every host that
can hold it, edge by edge against brute force; layouts a row cannot describe are refused clearly.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_transcoder
from tests.hosts.hf_tiny import FAMILIES, float64_softmax, gemma3_multimodal, hf_model, on_host
from tests.hosts.reference import brute_force_rows
from tl_circuits.errors import ConfigError
from tl_circuits.hosts import as_host
from tl_circuits.hosts.discover import discover_sites, norm_kind, sites_for
from tl_circuits.hosts.sites import ARCH_SITES, ArchSites

PROMPT = [0, 3, 17, 9, 41, 5, 22]
#: What discovery must find in families without a row.
UNLISTED_ROWS = {
    "starcoder2": dataclasses.replace(ARCH_SITES["llama"], norm="ln"),
    "granite": ARCH_SITES["llama"],
    # Phi-3 fuses q, k and v in qkv_proj (unequal parts under grouped KV heads): no qk pair, so a
    # traced (remote) run refuses to freeze its pattern; local hosts are unaffected.
    "phi3": dataclasses.replace(ARCH_SITES["llama"], qk=()),
}


@pytest.fixture(scope="module", autouse=True)
def _float64_softmax():
    with float64_softmax():
        yield


@pytest.mark.parametrize("family", [*FAMILIES, "gemma3"])
def test_discovery_finds_the_table_row(family):
    model = gemma3_multimodal(hf_model("gemma3_text")) if family == "gemma3" else hf_model(family)
    row = ARCH_SITES[model.config.model_type]
    found = discover_sites(model)
    if family == "gpt2":  # c_attn fuses q, k, v: its layout (equal thirds) is pinned by the row,
        # and so are the learned position embeddings (only explain_attention reads them)
        assert found.qk == () and row.qk == ("c_attn",) and found.pos_embed is None
        found = dataclasses.replace(found, qk=row.qk, pos_embed=row.pos_embed)
    assert found == row


@pytest.mark.parametrize("family", sorted(UNLISTED_ROWS))
def test_discovery_of_families_without_a_row(family):
    model = hf_model(family)
    assert model.config.model_type not in ARCH_SITES
    assert sites_for(model) == UNLISTED_ROWS[family]


def test_a_table_row_wins_over_discovery(monkeypatch):
    model = hf_model("llama")
    pinned = dataclasses.replace(ARCH_SITES["llama"], qk=("q_proj", "k_proj"))
    monkeypatch.setitem(ARCH_SITES, "llama", pinned)
    import tl_circuits.hosts.discover as discover

    monkeypatch.setattr(discover, "discover_sites", lambda m: pytest.fail("discovery ran"))
    assert as_host(model).sites.sites is pinned


#: TL 3.9's Granite Bridge adapter (ScaledResidualBlockBridge) drops a hook's returned tensor when it
#: equals the original by value, so the splice's leaf at hook_mlp_out is off the autograd path.
BRIDGE_REFUSED = {"granite"}
#: TL 3.9's HookedTransformer holds Phi-3 (through its own config conversion), not the other two.
HOOKED_HOLDS = {"phi3"}


@pytest.mark.parametrize("family", ["starcoder2", pytest.param("granite", marks=pytest.mark.slow),
                                    pytest.param("phi3", marks=pytest.mark.slow)])
def test_unlisted_family_traced_through_automatic_sites(family, tmp_path):
    """Every edge against brute force (float64, <= 1e-9) on each host that holds the model, and the
    same graph on all of them (<= 1e-9)."""
    model = hf_model(family)
    transcoders = tc.TranscoderSet([
        tiny_transcoder(la, "jumprelu_skip", hook_in="blocks.{l}.ln2.hook_normalized", seed=la)
        for la in range(3)])
    graphs = {}
    bridges = () if family in BRIDGE_REFUSED else ("bridge", "bridge_compat")
    hooked = ("hooked",) if family in HOOKED_HOLDS else ()
    for kind in ("hf", "nnsight", *bridges, *hooked):
        host_model = on_host(kind, model, tmp_path)
        graph = graphs[kind] = tc.attribute(host_model, transcoders, PROMPT, batch_size=64, progress=False)
        expected = brute_force_rows(host_model, transcoders, graph)
        got = graph.adjacency.to_dense()[graph.rows_computed]
        assert len(graph.rows_computed) > 20 and expected.abs().max() > 0
        assert float((got - expected).abs().max() / expected.abs().max()) <= 1e-9, kind
    ref = graphs["hf"].adjacency.to_dense()
    for kind, graph in graphs.items():
        assert torch.equal(graph.rows_computed, graphs["hf"].rows_computed)
        assert float((graph.adjacency.to_dense() - ref).abs().max() / ref.abs().max()) <= 1e-9, kind


def test_bridge_sites_that_break_the_splice_are_refused(tmp_path):
    """The Bridge host checks the sites of an architecture without a row: on Granite, TL's adapter
    drops the splice's value at hook_mlp_out (it equals the original), so check (b) fails there."""
    bridge = on_host("bridge", hf_model("granite"), tmp_path)
    with pytest.raises(ConfigError) as err:
        tc.attribute(bridge, tc.TranscoderSet([tiny_transcoder(0, "relu")]), PROMPT, progress=False)
    message = str(err.value)
    assert message.startswith("the TransformerBridge sites of 'granite' (GraniteForCausalLM), an "
                              "architecture without a row failed the checks")
    assert ("check (b) linear under the freezes, as the gradient reads it: a change written at "
            "blocks.0.hook_mlp_out (on module blocks.0 (ScaledResidualBlockBridge))") in message
    assert "attribute the Hugging Face model itself" in message


def test_norm_kind_is_found_numerically():
    starcoder2, gemma, llama = hf_model("starcoder2"), hf_model("gemma2"), hf_model("llama")
    assert norm_kind(starcoder2.model.norm) == "ln"
    assert norm_kind(gemma.model.norm) == "rms_one_plus"
    assert norm_kind(llama.model.norm) == "rms"
    assert norm_kind(llama.model.layers[0].mlp) is None


def test_parallel_blocks_are_refused():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    model = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
        use_parallel_residual=True)).eval()
    with pytest.raises(ConfigError, match=r"'gpt_neox'.*in parallel.*hook_resid_mid.*sites\.py ARCH_SITES"):
        as_host(model)


def test_a_layer_without_an_mlp_module_is_refused():
    from transformers import OPTConfig, OPTForCausalLM

    model = OPTForCausalLM(OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, ffn_dim=32, word_embed_proj_dim=16))
    with pytest.raises(ConfigError, match=r"model\.decoder\.layers\.0 should run one attention module "
                                          r"and one MLP module; found .*fc1 \(Linear\)"):
        discover_sites(model)


def test_discovery_needs_weights_here():
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_model("starcoder2").config)
    with pytest.raises(ConfigError, match="one forward pass on the model's weights.*meta device"):
        as_host(model)


def test_rows_are_data():
    """A row is a frozen dataclass of paths; TL's names of a block's norms follow from positions."""
    row = ARCH_SITES["olmo2"]
    assert isinstance(row, ArchSites) and row.ln1 is None and row.ln2 is None
    assert row.block_norms() == [("attn.q_norm", "self_attn.q_norm"), ("attn.k_norm", "self_attn.k_norm"),
                                 ("ln1", "post_attention_layernorm"), ("ln2", "post_feedforward_layernorm")]
    assert [tl for tl, _ in ARCH_SITES["gemma3_text"].block_norms()] == [
        "ln1", "attn.q_norm", "attn.k_norm", "ln1_post", "ln2", "ln2_post"]
