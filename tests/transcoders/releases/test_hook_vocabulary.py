"""Read and write points named in any vocabulary map to the TransformerLens names every host
exposes; one release works on every host; points that are not MLP inputs or outputs are refused."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.hosts.hf_tiny import float64_softmax, hf_model, on_host
from tl_circuits.errors import ConfigError
from tl_circuits.hosts import as_host
from tl_circuits.replacement import check_compatible as check_sites
from tl_circuits.transcoders.hook_vocabulary import canonical_hook

from . import fake_hub as fh

NAMES = [
    # TransformerLens / TransformerBridge
    ("blocks.5.ln2.hook_normalized", None, None, "blocks.5.ln2.hook_normalized"),
    ("blocks.5.mlp.hook_in", None, None, "blocks.5.mlp.hook_in"),
    ("blocks.5.hook_resid_mid", None, None, "blocks.5.hook_resid_mid"),
    ("blocks.5.hook_mlp_in", None, None, "blocks.5.hook_resid_mid"),
    ("blocks.5.ln2.hook_in", None, None, "blocks.5.hook_resid_mid"),
    ("blocks.5.ln2.hook_out", None, None, "blocks.5.mlp.hook_in"),
    ("blocks.5.hook_mlp_out", None, None, "blocks.5.hook_mlp_out"),
    ("blocks.5.mlp.hook_out", None, "llama", "blocks.5.hook_mlp_out"),
    ("blocks.5.ln2_post.hook_out", None, "gemma2", "blocks.5.hook_mlp_out"),
    # circuit-tracer config suffixes and templates
    ("hook_resid_mid", 5, None, "blocks.5.hook_resid_mid"),
    ("ln2.hook_normalized", 5, None, "blocks.5.ln2.hook_normalized"),
    ("mlp.hook_out", 5, "qwen3", "blocks.5.hook_mlp_out"),
    ("blocks.{layer}.mlp.hook_in", 5, None, "blocks.5.mlp.hook_in"),
    # Hugging Face / nnsight module paths
    ("model.layers.5.pre_feedforward_layernorm.output", None, None, "blocks.5.mlp.hook_in"),
    ("model.layers.5.pre_feedforward_layernorm.input", None, "gemma3", "blocks.5.hook_resid_mid"),
    ("model.layers.5.post_feedforward_layernorm.output", None, None, "blocks.5.hook_mlp_out"),
    ("model.language_model.layers.5.post_feedforward_layernorm.output", None, "gemma3", "blocks.5.hook_mlp_out"),
    ("model.layers.5.post_attention_layernorm.input", None, "llama", "blocks.5.hook_resid_mid"),
    ("model.layers.5.post_attention_layernorm.output", None, "qwen3", "blocks.5.mlp.hook_in"),
    ("model.layers[5].mlp", None, "qwen3", "blocks.5.mlp.hook_in"),
    ("model.layers.5.mlp.output", None, None, "blocks.5.hook_mlp_out"),
    ("model.layers[{layer}].pre_feedforward_layernorm.source.self__norm_0.output", 5, "gemma2",
     "blocks.5.ln2.hook_normalized"),
    ("transformer.h.5.ln_2.output", None, None, "blocks.5.mlp.hook_in"),
    ("transformer.h.5.mlp.output", None, "gpt2", "blocks.5.hook_mlp_out"),
]


@pytest.mark.parametrize(("name", "layer", "model_type", "want"), NAMES)
def test_names_map_to_canonical_sites(name, layer, model_type, want):
    assert canonical_hook(name, layer, model_type=model_type) == want


@pytest.mark.parametrize(("name", "model_type", "says"), [
    ("model.layers.5.post_attention_layernorm.output", "gemma2", "not an MLP input or output"),
    ("model.layers.5.mlp.output", "gemma2", "not an MLP input or output"),
    ("blocks.5.mlp.hook_out", "gemma2", "before its post-feedforward norm"),
    ("hook_resid_mid", None, "give the layer"),
    ("the mlp please", None, "cannot read the hook name"),
])
def test_unreadable_or_wrong_points_are_refused(name, model_type, says):
    with pytest.raises(ConfigError, match=says):
        canonical_hook(name, model_type=model_type)


def test_layer_in_the_name_must_match():
    with pytest.raises(ConfigError, match="names layer 4, but it was given for layer 5"):
        canonical_hook("blocks.4.hook_mlp_out", 5)


@pytest.fixture(scope="module")
def qwen3_hosts(tmp_path_factory):
    model = hf_model("qwen3")
    return {kind: on_host(kind, model, tmp_path_factory.mktemp(kind)) for kind in ("hooked", "bridge", "nnsight", "hf")}


@pytest.mark.parametrize("hook_in", ["mlp.hook_in", "hook_resid_mid", "ln2.hook_normalized"])
def test_one_release_gives_the_same_graph_on_every_host(hook_in, qwen3_hosts, tmp_path, monkeypatch):
    """A circuit-tracer Qwen3-style set (``mlp.hook_in`` -> ``mlp.hook_out``) on HookedTransformer,
    TransformerBridge, nnsight and a plain Hugging Face model."""
    cache = fh.use_cache(tmp_path, monkeypatch)
    fh.ct_set(cache, "org/qwen", "relu", skip=True, hook_in=hook_in)
    transcoders = tc.load_transcoders("hf://org/qwen", dtype=torch.float64)
    graphs = {}
    with float64_softmax():
        for kind, model in qwen3_hosts.items():
            check_sites(as_host(model), transcoders)
            graphs[kind] = tc.attribute(model, transcoders, [0, 3, 17, 9, 41], progress=False).adjacency.to_dense()
    ref = graphs["hf"]
    for kind, dense in graphs.items():
        assert float((dense - ref).abs().max()) <= 1e-9 * float(ref.abs().max()), kind


def test_check_sites_refuses_what_is_not_an_mlp_site(qwen3_hosts, tmp_path, monkeypatch):
    host = as_host(qwen3_hosts["hf"])
    cache = fh.use_cache(tmp_path, monkeypatch)
    fh.ct_set(cache, "org/attn", "relu", skip=False, hook_in="hook_resid_pre")
    wrong_read = tc.load_transcoders("hf://org/attn")
    with pytest.raises(ConfigError, match=r"reads 'blocks.0.hook_resid_pre', which is not an MLP input"):
        check_sites(host, wrong_read)
    fh.put(cache, "org/out", {"config.yaml": fh.ct_config("transcoder_set", [
        f"hf://org/attn/layer_{la}.safetensors" for la in range(3)], hook_out="hook_resid_post")})
    with pytest.raises(ConfigError, match=r"'blocks.\d.hook_resid_post', which this model does not have"):
        check_sites(host, tc.load_transcoders("hf://org/out"))


def test_check_sites_names_a_release_for_another_model(qwen3_hosts, tmp_path, monkeypatch):
    cache = fh.use_cache(tmp_path, monkeypatch)
    fh.mntss_clt(cache, repo="mntss/wide")
    wide = tc.load_transcoders("mntss/wide")
    small = hf_model("qwen3", d_model=8, n_heads=2)
    with pytest.raises(ConfigError, match="d_in=16, d_out=16 but the model has d_model=8; these transcoders were trained for a different model"):
        check_sites(as_host(small), wide)
    deep = tc.load_transcoders("mntss/wide")
    shallow = as_host(hf_model("qwen3", n_layers=2))
    with pytest.raises(ConfigError, match="a transcoder is for layer 2, but the model has layers 0..1"):
        check_sites(shallow, deep)
