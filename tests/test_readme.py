"""The README quick start runs (on a tiny random model standing in for GPT-2)."""

import re
from pathlib import Path

import tl_circuits as tc
from tests.core.tiny import tiny_model, tiny_set

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs(tmp_path, monkeypatch):
    code = re.search(r"## Quick start.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    transcoder_dir = tmp_path / "transcoders"
    tiny_set("jumprelu_skip").save(transcoder_dir)
    import transformer_lens

    model = tiny_model("gpt2", tokenizer=True)
    monkeypatch.setattr(transformer_lens.HookedTransformer, "from_pretrained_no_processing",
                        staticmethod(lambda name: model))
    code = code.replace('"path/to/transcoders"', repr(str(transcoder_dir)))
    code = code.replace('"The capital of France is"', '"w1 Paris w3 London"')
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(code, scope)
    graph = tc.Graph.load(tmp_path / "france.safetensors")
    assert graph.n_features > 10 and graph.targets[0].probability > 0
