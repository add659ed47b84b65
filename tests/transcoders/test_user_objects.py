"""Library functions never change the transcoders the user passed (issue #15): ``attribute`` and
``intervene`` on a float64 or a bfloat16 model leave float32 transcoders as they were, bit for
bit, while computing in the model's dtype."""

from __future__ import annotations

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_model, tiny_transcoder
from tests.transcoders.test_cross_layer import tiny_clt
from tl_circuits import CrossLayerTranscoder, TranscoderSet

PROMPT = [3, 17, 9, 41, 5]


def _tensors(obj) -> dict[str, torch.Tensor]:
    """Every tensor an object holds, by name, for a per-layer set or a CLT."""
    if isinstance(obj, TranscoderSet):
        return {f"{la}.{n}": p for la in obj.layers for n, p in obj[la].named_parameters()}
    assert isinstance(obj, CrossLayerTranscoder)
    return {f"{name}[{i}]": t for name in ("_W_enc", "_b_enc", "_W_dec", "_b_dec", "_threshold",
                                           "_W_skip")
            for i, t in enumerate(getattr(obj, name) or [])}


def _snapshot(tensors: dict[str, torch.Tensor]) -> dict[str, tuple]:
    return {n: (t, t.dtype, t.device, t.detach().clone()) for n, t in tensors.items()}


def _assert_untouched(tensors: dict[str, torch.Tensor], before: dict[str, tuple]) -> None:
    assert tensors.keys() == before.keys()
    for name, t in tensors.items():
        same_object, dtype, device, values = before[name]
        assert t is same_object, name
        assert (t.dtype, t.device) == (dtype, device) == (torch.float32, torch.device("cpu")), name
        assert torch.equal(t, values), name


def _float32_set():
    users = [tiny_transcoder(la, "jumprelu_skip", dtype=torch.float32, seed=2) for la in range(3)]
    return users, TranscoderSet(users)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kind", ["set", "clt"])
def test_attribute_and_intervene_leave_the_transcoders_as_passed(dtype, kind):
    model = tiny_model("llama", dtype=dtype, seed=6)
    if kind == "set":
        users, ts = _float32_set()
        user_tensors = {f"user{i}.{n}": p for i, u in enumerate(users) for n, p in u.named_parameters()}
    else:
        users, ts = [], tiny_clt("jumprelu_skip", seed=2).to(dtype=torch.float32)
        user_tensors = {}
    before, before_users = _snapshot(_tensors(ts)), _snapshot(user_tensors)
    graph = tc.attribute(model, ts, PROMPT, progress=False)
    assert graph.n_features > 0
    layer, pos, feature = _first_feature(graph)
    out = tc.intervene(model, ts, PROMPT, [(layer, pos, feature, 0.0)])
    assert out.logits.dtype == dtype
    tc.generate(model, ts, PROMPT, 2, interventions=[(layer, pos, feature, 0.0)])
    _assert_untouched(_tensors(ts), before)
    _assert_untouched(user_tensors, before_users)
    if kind == "set":
        assert [ts[la] for la in ts.layers] == users  # the same objects, still in the set
        assert all(u.W_enc.dtype == torch.float32 for u in users)
    assert ts.dtype == torch.float32


def _first_feature(graph) -> tuple[int, int, int]:
    node = next(n for n in graph.nodes if n.kind == "feature")
    return node.layer, node.position, node.index


def test_a_list_of_user_transcoders_is_left_alone_too():
    users, _ = _float32_set()
    before = _snapshot({f"{i}.{n}": p for i, u in enumerate(users) for n, p in u.named_parameters()})
    tc.attribute(tiny_model("llama", dtype=torch.float64, seed=6), users, PROMPT, progress=False)
    _assert_untouched({f"{i}.{n}": p for i, u in enumerate(users) for n, p in u.named_parameters()},
                      before)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_attribute_in_another_dtype_leaves_the_model_and_transcoders_as_passed(dtype):
    """``dtype=`` runs on a cast copy of the model and cast copies of the transcoders."""
    model = tiny_model("llama", dtype=torch.float32, seed=6)
    users, ts = _float32_set()
    model_tensors = dict(model.named_parameters())
    before, before_model = _snapshot(_tensors(ts)), _snapshot(model_tensors)
    graph = tc.attribute(model, ts, PROMPT, dtype=dtype, head_loadings=True, progress=False)
    assert graph.settings["dtype"] == str(dtype).removeprefix("torch.")
    assert graph.settings["head_loadings"]
    _assert_untouched(_tensors(ts), before)
    _assert_untouched(dict(model.named_parameters()), before_model)
    assert model.cfg.dtype == torch.float32 and [ts[la] for la in ts.layers] == users
