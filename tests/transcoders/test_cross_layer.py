"""CrossLayerTranscoder: circuit-tracer files, the set protocol, and every attribution edge checked
against a brute-force perturbation of the frozen replacement model (float64)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

import tl_circuits as tc
from tests.core.tiny import tiny_model
from tl_circuits import ConfigError, CrossLayerTranscoder, FileFormatError

PROMPT = [3, 17, 9, 41, 5]


def tiny_clt(arch: str = "jumprelu", *, n_layers: int = 3, d: int = 16, d_sae: int = 24,
             seed: int = 0, hook_in: str = "blocks.{l}.ln2.hook_normalized") -> CrossLayerTranscoder:
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).double()

    activation = arch.removesuffix("_skip")
    L = n_layers
    return CrossLayerTranscoder(
        W_enc=[rnd(d, d_sae, scale=d**-0.5) for _ in range(L)],
        b_enc=[rnd(d_sae, scale=0.3) - 0.3 for _ in range(L)],
        W_dec=[rnd(d_sae, L - la, d, scale=0.4) for la in range(L)],
        b_dec=[rnd(d, scale=0.2) for _ in range(L)],
        threshold=[rnd(d_sae, scale=0.1).abs() for _ in range(L)] if activation == "jumprelu" else None,
        k=5 if activation == "topk" else None,
        W_skip=[rnd(d, d, scale=0.1) for _ in range(L)] if arch.endswith("_skip") else None,
        activation=activation,
        hook_in=[hook_in.format(l=la) for la in range(L)],
        hook_out=[f"blocks.{la}.hook_mlp_out" for la in range(L)],
    )


# ---- brute force ---------------------------------------------------------------------------------
def _clean(model, tokens, clt):
    names = {n for n in model.hook_dict if n.endswith(("hook_pattern", "hook_scale", "hook_mlp_out"))}
    names |= {clt.hook_in(la) for la in clt.layers} | {"blocks.0.hook_resid_pre", "unembed.hook_in"}
    _, cache = model.run_with_cache(tokens[None], names_filter=lambda n: n in names)
    return {k: v[0] for k, v in cache.items()}


def _frozen_run(model, tokens, clt, clean, adds):
    """Frozen replacement model (patterns, scales and MLP outputs clamped to clean values, MLP
    outputs moved only by the skip of live inputs) with ``adds[(hook, pos)]`` added."""
    live = {}

    def put(name):
        return lambda x, hook: clean[name][None].clone()

    def record(layer):
        def hook(x, hook):
            live[layer] = x[0]
        return hook

    def mlp_out(layer):
        def hook(x, hook):
            out = clean[f"blocks.{layer}.hook_mlp_out"].clone()
            if clt.has_skip(layer):
                out = out + clt.skip(layer, live[layer]) - clt.skip(layer, clean[clt.hook_in(layer)])
            for (n, pos), vec in adds.items():
                if n == hook.name:
                    out[pos] += vec
            return out[None]
        return hook

    def add_embed(x, hook):
        x = x.clone()
        for (n, pos), vec in adds.items():
            if n == hook.name:
                x[0, pos] += vec
        return x

    def final(x, hook):
        live["final"] = x[0]

    fwd = [(n, put(n)) for n in clean if n.endswith(("hook_pattern", "hook_scale"))]
    fwd += [(clt.hook_in(la), record(la)) for la in clt.layers]
    fwd += [(f"blocks.{la}.hook_mlp_out", mlp_out(la)) for la in range(model.cfg.n_layers)]
    fwd += [("blocks.0.hook_resid_pre", add_embed), ("unembed.hook_in", final)]
    with torch.no_grad():
        model.run_with_hooks(tokens[None], fwd_hooks=fwd)
    return live


def brute_force_rows_clt(model, clt, graph):
    """Every computed row, column by column: a CLT feature at layer l writes act * W_dec[l][i, m-l]
    at every MLP output m >= l; an error node writes mlp_out - reconstruction; a token its
    embedding."""
    tokens = torch.tensor(graph.tokens)
    clean = _clean(model, tokens, clt)
    xs = {la: clean[clt.hook_in(la)] for la in clt.layers}
    acts = {la: clt.encode(la, xs[la]) for la in clt.layers}
    sources = {}
    nodes = set(graph.nodes)
    for col, node in enumerate(graph.nodes):
        if node.kind == "feature":
            a = acts[node.layer][node.position, node.index]
            W = clt.W_dec(node.layer)[node.index]
            sources[col] = {(f"blocks.{m}.hook_mlp_out", node.position): a * W[m - node.layer]
                            for m in range(node.layer, clt.n_layers)}
        elif node.kind == "error":
            name = f"blocks.{node.layer}.hook_mlp_out"
            recon = clt.reconstruct(node.layer, acts, xs)[node.position]
            vec = clean[name][node.position] - recon
            # Features outside a feature pool fold into the error node of every layer they write.
            for la in range(node.layer + 1):
                if la not in acts:
                    continue
                for i in acts[la][node.position].nonzero().flatten().tolist():
                    if ("feature", la, node.position, i) not in nodes:
                        vec = vec + acts[la][node.position, i] * clt.W_dec(la)[i, node.layer - la]
            sources[col] = {(name, node.position): vec}
        elif node.kind == "token":
            sources[col] = {("blocks.0.hook_resid_pre", node.position):
                            clean["blocks.0.hook_resid_pre"][node.position]}

    def reads(live):
        out = []
        for row in graph.rows_computed.tolist():
            node = graph.nodes[row]
            if node.kind == "target":
                out.append(graph.target_vectors[node.index].to(live["final"]) @ live["final"][node.position])
            else:
                out.append(clt.W_enc(node.layer)[:, node.index] @ live[node.layer][node.position])
        return torch.stack(out)

    base = reads(_frozen_run(model, tokens, clt, clean, {}))
    expected = torch.zeros(len(graph.rows_computed), graph.n_nodes, dtype=base.dtype)
    for col, adds in sources.items():
        expected[:, col] = reads(_frozen_run(model, tokens, clt, clean, adds)) - base
    return expected


@pytest.mark.parametrize(("family", "arch"), [("llama", "jumprelu_skip"), ("llama", "topk"),
                                              ("gpt2", "relu")])
def test_every_clt_edge_matches_brute_force(family, arch, backward):
    model = tiny_model(family, seed=11)
    clt = tiny_clt(arch, seed=3, d_sae=12)
    graph = tc.attribute(model, clt, PROMPT, batch_size=16, progress=False)
    assert graph.n_features > 12
    got = graph.adjacency.to_dense()[graph.rows_computed]
    expected = brute_force_rows_clt(model, clt, graph)
    scale = expected.abs().max()
    assert scale > 0
    assert float((got - expected).abs().max() / scale) <= 1e-6
    # Cross-layer writes matter: layer-0 features reach layer-2 features directly through W_dec[0][:, 2].
    assert expected.abs().sum() > 0


def test_clt_feature_pool_folds_cross_layer_writes_into_each_error_node():
    model = tiny_model("llama", seed=13)
    clt = tiny_clt("relu", seed=5, d_sae=12)
    n_active = tc.attribute(model, clt, PROMPT, max_feature_nodes=0, progress=False).n_features
    graph = tc.attribute(model, clt, PROMPT, max_feature_nodes=4, feature_pool=9, batch_size=3,
                         progress=False)
    assert graph.n_features == 9 < n_active == graph.settings["n_active_features"]
    got = graph.adjacency.to_dense()[graph.rows_computed]
    expected = brute_force_rows_clt(model, clt, graph)
    scale = expected.abs().max()
    assert float((got - expected).abs().max() / scale) <= 1e-6


def test_clt_differs_from_its_layer_diagonal():
    """Dropping the off-diagonal decoders changes the edges: the cross-layer writes are used."""
    model = tiny_model("llama", seed=12)
    clt = tiny_clt("relu", seed=4)
    full = tc.attribute(model, clt, PROMPT, progress=False)
    diag = tiny_clt("relu", seed=4)
    diag._W_dec = [torch.cat([w[:, :1], torch.zeros_like(w[:, 1:])], 1) for w in diag._W_dec]
    only_diag = tc.attribute(model, diag, PROMPT, progress=False)
    a = full.adjacency.to_dense()[full.indices("target")]
    b = only_diag.adjacency.to_dense()[only_diag.indices("target")]
    assert (a - b).abs().max() > 1e-3


# ---- protocol and files --------------------------------------------------------------------------
def test_protocol_decoder_vectors_and_reconstruct():
    clt = tiny_clt("jumprelu_skip")
    idx = torch.tensor([2, 7])
    vecs = clt.decoder_vectors(1, idx)
    assert sorted(vecs) == [1, 2]
    assert torch.equal(vecs[2], clt.W_dec(1)[idx, 1])
    x = {la: torch.randn(4, 16, dtype=torch.float64) for la in range(3)}
    acts = {la: clt.encode(la, x[la]) for la in range(3)}
    manual = (acts[0] @ clt.W_dec(0)[:, 2] + acts[1] @ clt.W_dec(1)[:, 1] + acts[2] @ clt.W_dec(2)[:, 0]
              + clt.b_dec(2) + x[2] @ clt.W_skip(2).T)
    assert torch.allclose(clt.reconstruct(2, acts, x), manual)
    assert clt.is_cross_layer and clt.layers == clt.out_layers == [0, 1, 2]
    assert clt.hook_out(1) == "blocks.1.hook_mlp_out" and clt.d_sae(0) == 24
    with pytest.raises(ConfigError, match=r"layers \[1\]"):
        clt.reconstruct(2, {0: acts[0], 2: acts[2]}, x)


@pytest.mark.parametrize("arch", ["jumprelu_skip", "topk"])
def test_save_load_round_trip_in_circuit_tracer_layout(tmp_path, arch):
    clt = tiny_clt(arch)
    clt.save(tmp_path / "clt")
    enc = load_file(tmp_path / "clt" / "W_enc_1.safetensors")
    assert enc["W_enc_1"].shape == (24, 16)  # circuit-tracer: [d_transcoder, d_model]
    assert load_file(tmp_path / "clt" / "W_dec_1.safetensors")["W_dec_1"].shape == (24, 2, 16)
    back = CrossLayerTranscoder.load(tmp_path / "clt")
    x = torch.randn(5, 16, dtype=torch.float64)
    for la in range(3):
        assert torch.equal(back.encode(la, x), clt.encode(la, x))
        assert torch.equal(back.W_dec(la), clt.W_dec(la))
    assert back.hook_in(2) == "blocks.2.ln2.hook_normalized" and back.activation == clt.activation


def test_loads_a_plain_circuit_tracer_directory_with_defaults(tmp_path):
    """No config.json: hooks default to hook_resid_mid -> hook_mlp_out, thresholds mean JumpReLU."""
    L, d, f = 2, 8, 4
    for la in range(L):
        save_file({f"W_enc_{la}": torch.randn(f, d), f"b_enc_{la}": torch.zeros(f),
                   f"b_dec_{la}": torch.zeros(d), f"threshold_{la}": torch.full((f,), 0.5)},
                  str(tmp_path / f"W_enc_{la}.safetensors"))
        save_file({f"W_dec_{la}": torch.randn(f, L - la, d)}, str(tmp_path / f"W_dec_{la}.safetensors"))
    clt = CrossLayerTranscoder.load(tmp_path, dtype=torch.float64)
    assert clt.activation == "jumprelu" and clt.hook_in(1) == "blocks.1.hook_resid_mid"
    assert clt.W_enc(0).dtype == torch.float64 and clt.W_enc(0).shape == (d, f)
    pre = torch.tensor([[0.4, 0.6, -1.0, 2.0]], dtype=torch.float64)
    acts = clt.encode(0, torch.linalg.lstsq(clt.W_enc(0).T, pre.T).solution.T)
    assert torch.allclose(acts, torch.tensor([[0.0, 0.6, 0.0, 2.0]], dtype=torch.float64), atol=1e-9)


def test_bad_files_and_shapes_raise_clear_errors(tmp_path):
    with pytest.raises(FileFormatError, match="W_enc_0"):
        CrossLayerTranscoder.load(tmp_path)
    clt = tiny_clt("relu")
    clt.save(tmp_path / "c")
    (tmp_path / "c" / "W_dec_2.safetensors").write_bytes(b"junk")
    with pytest.raises(FileFormatError, match="corrupt"):
        CrossLayerTranscoder.load(tmp_path / "c")
    with pytest.raises(ConfigError, match=r"W_dec\[1\] has shape"):
        CrossLayerTranscoder(W_enc=[torch.zeros(4, 3)] * 2, b_enc=[torch.zeros(3)] * 2,
                             W_dec=[torch.zeros(3, 2, 4), torch.zeros(3, 2, 4)],
                             b_dec=[torch.zeros(4)] * 2, hook_in=["a", "b"], hook_out=["c", "d"])
