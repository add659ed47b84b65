"""The README quick start runs, on tiny random stand-ins for GPT-2 on all three model kinds
(TransformerLens 4 has no HookedTransformer: there the first block runs with the Bridge's lines)."""

import re
from pathlib import Path

import pytest
import torch

import tl_circuits as tc
from tests.core.tiny import tiny_set
from tests.hosts.hf_tiny import HAS_HOOKED

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start_blocks() -> list[str]:
    section = re.search(r"## Quick start(.*?)\n## ", README.read_text(), re.S).group(1)
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One random GPT-2-shaped HF model as a HookedTransformer, a TransformerBridge and nnsight."""
    from tests.hosts.hf_tiny import hf_model, on_host

    hf = hf_model("gpt2", dtype=torch.float64)
    tmp = tmp_path_factory.mktemp("models")
    kinds = ("hooked", "bridge", "nnsight") if HAS_HOOKED else ("bridge", "nnsight")
    return {kind: on_host(kind, hf, tmp) for kind in kinds}


def test_quick_start_runs_on_every_model_kind(models, tmp_path, monkeypatch):
    import nnsight
    import transformer_lens
    from transformer_lens.model_bridge import TransformerBridge

    first, other_models = quick_start_blocks()
    tiny_set("jumprelu_skip").save(tmp_path / "transcoders")
    if HAS_HOOKED:
        monkeypatch.setattr(transformer_lens.HookedTransformer, "from_pretrained_no_processing",
                            staticmethod(lambda name: models["hooked"]))
    else:  # TransformerLens 4: the quick start as a Bridge user writes it
        bridge_pair = [line for line in other_models.splitlines() if line.strip()][:2]
        lines = [line for line in first.splitlines() if "import HookedTransformer" not in line]
        at = next(i for i, line in enumerate(lines) if "HookedTransformer" in line)
        first = "\n".join([*lines[:at], *bridge_pair, *lines[at + 1:]])
    monkeypatch.setattr(TransformerBridge, "boot_transformers",
                        staticmethod(lambda name, **kw: models["bridge"]))
    monkeypatch.setattr(nnsight, "LanguageModel", lambda name, **kw: models["nnsight"])
    first = first.replace('"path/to/transcoders"', repr(str(tmp_path / "transcoders")))
    first = first.replace('"The capital of France is"', '"w1 Paris w3 London"')
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(first, scope)
    saved = tc.Graph.load(tmp_path / "france.safetensors")
    reference = scope["graph"]
    assert reference.n_features > 10 and reference.targets[0].probability > 0
    assert saved.is_pruned and saved.n_nodes < reference.n_nodes

    attribute_line = next(line for line in first.splitlines() if "tc.attribute(" in line)
    lines = [line for line in other_models.splitlines() if line.strip()]
    assert len(lines) == 4  # two (import, model = ...) pairs
    for kind, pair in zip(("bridge", "nnsight"), (lines[:2], lines[2:])):
        exec("\n".join([*pair, attribute_line]), scope)
        assert scope["model"] is models[kind]
        graph = scope["graph"]
        assert graph.n_nodes == reference.n_nodes
        assert torch.allclose(graph.adjacency.to_dense(), reference.adjacency.to_dense(), atol=1e-9)
