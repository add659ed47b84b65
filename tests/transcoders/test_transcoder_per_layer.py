"""Transcoder: math against hand computations, construction checks, exact save/load round trips."""

import json

import pytest
import torch

from tl_circuits.errors import ConfigError
from tl_circuits.transcoders import Transcoder

D_IN, D_SAE, D_OUT, K = 8, 16, 6, 4
ARCHS = [
    ("relu", False),
    ("relu", True),
    ("jumprelu", False),
    ("jumprelu", True),
    ("topk", False),
    ("topk", True),
]


def make(activation="relu", skip=False, layer=0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return Transcoder(
        rnd(D_IN, D_SAE),
        rnd(D_SAE),
        rnd(D_SAE, D_OUT),
        rnd(D_OUT),
        hook_name=f"blocks.{layer}.ln2.hook_normalized",
        hook_name_out=f"blocks.{layer}.hook_mlp_out",
        activation=activation,
        threshold=rnd(D_SAE).abs() * 0.5 if activation == "jumprelu" else None,
        k=K if activation == "topk" else None,
        W_skip=rnd(D_OUT, D_IN) if skip else None,
    )


def hand_encode(tc, x):
    pre = x @ tc.W_enc + tc.b_enc
    if tc.activation == "relu":
        return torch.clamp(pre, min=0)
    if tc.activation == "jumprelu":
        return torch.where(pre > tc.threshold, torch.clamp(pre, min=0), torch.zeros_like(pre))
    acts = torch.zeros_like(pre)
    flat_pre, flat_acts = pre.reshape(-1, D_SAE), acts.view(-1, D_SAE)
    for row in range(flat_pre.shape[0]):
        top = flat_pre[row].argsort(descending=True)[: tc.k]
        flat_acts[row, top] = torch.clamp(flat_pre[row, top], min=0)
    return acts


@pytest.mark.parametrize("activation,skip", ARCHS)
def test_math_matches_hand_computation(activation, skip):
    tc = make(activation, skip)
    x = torch.randn(2, 3, D_IN)
    acts = tc.encode(x)
    assert acts.shape == (2, 3, D_SAE)
    torch.testing.assert_close(tc.pre_activation(x), x @ tc.W_enc + tc.b_enc)
    torch.testing.assert_close(acts, hand_encode(tc, x))
    skip_out = x @ tc.W_skip.T if skip else torch.zeros(2, 3, D_OUT)
    torch.testing.assert_close(tc.skip(x), skip_out)
    torch.testing.assert_close(tc.decode(acts), acts @ tc.W_dec + tc.b_dec)
    torch.testing.assert_close(tc(x), acts @ tc.W_dec + tc.b_dec + skip_out)
    if activation == "topk":
        assert ((acts != 0).sum(-1) <= K).all()


def test_topk_matches_sae_lens_topk_module():
    from sae_lens.saes.topk_sae import TopK

    tc = make("topk")
    pre = torch.randn(5, 7, D_SAE)
    torch.testing.assert_close(tc.activation_fn(pre), TopK(K)(pre), rtol=0, atol=0)


def test_jumprelu_zeroes_below_threshold():
    tc = make("jumprelu")
    pre = tc.threshold.detach().clone().unsqueeze(0).repeat(2, 1)
    pre[1] += 1e-3
    acts = tc.activation_fn(pre)
    assert (acts[0] == 0).all()  # exactly at the threshold: off (strict >)
    torch.testing.assert_close(acts[1], pre[1].clamp(min=0))


def test_attributes_and_no_batch_dims():
    tc = make("topk", skip=True, layer=5)
    assert (tc.layer, tc.d_in, tc.d_sae, tc.d_out, tc.k, tc.has_skip) == (
        5,
        D_IN,
        D_SAE,
        D_OUT,
        K,
        True,
    )
    assert tc.hook_name == "blocks.5.ln2.hook_normalized"
    assert tc.hook_name_out == "blocks.5.hook_mlp_out"
    assert tc.cfg["architecture"] == "topk_skip_transcoder" and tc.cfg["k"] == K
    assert tc(torch.randn(D_IN)).shape == (D_OUT,)
    assert not any(p.requires_grad for p in tc.parameters())
    assert "layer=5" in repr(tc)


def test_module_to_dtype_and_cast_input():
    tc = make("jumprelu", skip=True).to(torch.float64)
    assert tc.W_enc.dtype == tc.threshold.dtype == tc.W_skip.dtype == torch.float64
    assert tc(torch.randn(3, D_IN)).dtype == torch.float64


@pytest.mark.parametrize("activation,skip", ARCHS)
def test_save_load_round_trip_is_exact(tmp_path, activation, skip):
    tc = make(activation, skip, layer=3)
    tc.cfg["metadata"]["model_name"] = "tiny"  # unknown keys survive
    tc.cfg["custom_field"] = [1, 2]
    tc.save(tmp_path / "tc")
    back = Transcoder.load(tmp_path / "tc")
    assert back.cfg == tc.cfg
    assert json.loads((tmp_path / "tc" / "cfg.json").read_text()) == tc.cfg
    assert dict(back.named_parameters()).keys() == dict(tc.named_parameters()).keys()
    for (name, p), q in zip(tc.named_parameters(), back.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert (back.layer, back.activation, back.k, back.has_skip) == (3, activation, tc.k, skip)
    back.save(tmp_path / "tc")  # overwrite in place
    assert torch.equal(Transcoder.load(tmp_path / "tc").W_dec, tc.W_dec)


def test_load_dtype_and_save_records_dtype(tmp_path):
    tc = make("relu", dtype=torch.float64)
    assert tc.cfg["dtype"] == "float64"
    tc.save(tmp_path / "a")
    assert Transcoder.load(tmp_path / "a").W_enc.dtype == torch.float64
    assert Transcoder.load(tmp_path / "a", dtype=torch.float32).W_enc.dtype == torch.float32
    tc.to(torch.float32).save(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "cfg.json").read_text())["dtype"] == "float32"


def test_failed_save_leaves_nothing(tmp_path):
    tc = make()
    tc.cfg["metadata"]["bad"] = object()
    with pytest.raises(TypeError):
        tc.save(tmp_path / "tc")
    assert list(tmp_path.iterdir()) == []


def _tensors(**over):
    t = {
        "W_enc": torch.zeros(D_IN, D_SAE),
        "b_enc": torch.zeros(D_SAE),
        "W_dec": torch.zeros(D_SAE, D_OUT),
        "b_dec": torch.zeros(D_OUT),
    }
    t.update(over)
    return t


HOOKS = {"hook_name": "blocks.1.ln2.hook_normalized", "hook_name_out": "blocks.1.hook_mlp_out"}


@pytest.mark.parametrize(
    "tensors,kwargs,match",
    [
        (
            _tensors(W_dec=torch.zeros(D_SAE + 1, D_OUT)),
            {},
            "W_dec has shape (17, 6), expected (16, 6)",
        ),
        (_tensors(b_enc=torch.zeros(3)), {}, "b_enc has shape (3,)"),
        (_tensors(b_dec=torch.zeros(D_IN)), {}, "b_dec has shape (8,), expected (6,)"),
        (_tensors(W_enc=torch.zeros(D_IN)), {}, "must be matrices"),
        (
            _tensors(),
            {"W_skip": torch.zeros(D_IN, D_OUT)},
            "W_skip has shape (8, 6), expected (6, 8)",
        ),
        (_tensors(), {"activation": "jumprelu"}, "needs a threshold"),
        (
            _tensors(),
            {"activation": "jumprelu", "threshold": torch.zeros(3)},
            "threshold has shape",
        ),
        (_tensors(), {"threshold": torch.zeros(D_SAE)}, "only used by activation='jumprelu'"),
        (_tensors(), {"activation": "topk"}, "needs an integer k"),
        (_tensors(), {"activation": "topk", "k": D_SAE + 1}, "0 < k <= d_sae=16"),
        (_tensors(), {"k": 3}, "only used by activation='topk'"),
        (_tensors(), {"activation": "gelu"}, "activation='gelu' is not supported"),
        (_tensors(), {"hook_name": "ln_final.hook_normalized"}, "has no layer"),
    ],
)
def test_construction_errors(tensors, kwargs, match):
    kwargs = {**HOOKS, **kwargs}
    with pytest.raises(ConfigError) as info:
        Transcoder(tensors["W_enc"], tensors["b_enc"], tensors["W_dec"], tensors["b_dec"], **kwargs)
    assert match in str(info.value)


def test_cfg_must_describe_the_tensors():
    cfg = make("relu").cfg
    t = _tensors()
    with pytest.raises(ConfigError, match="cfg says hook_name="):
        Transcoder(*t.values(), **HOOKS, cfg=cfg)
    with pytest.raises(ConfigError, match="cfg says activation='relu'"):
        Transcoder(*t.values(), **HOOKS, activation="topk", k=2, cfg={**cfg, "metadata": HOOKS})


def test_wrong_input_width():
    with pytest.raises(ConfigError, match="last dimension d_in=8"):
        make().encode(torch.randn(2, D_IN + 1))
