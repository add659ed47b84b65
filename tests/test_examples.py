"""The demo, every script in examples/ and the CLI on SmolLM2 with the small demo set (slow).

All share one temporary cache, so the small transcoder set is trained once (about 10 s) and the
model is loaded once (``tl_circuits.demo.load_model`` caches it per process).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest

import tl_circuits as tc

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    old = os.environ.get("TL_CIRCUITS_CACHE")
    path = tmp_path_factory.mktemp("cache")
    os.environ["TL_CIRCUITS_CACHE"] = str(path)
    yield path
    if old is None:
        del os.environ["TL_CIRCUITS_CACHE"]
    else:
        os.environ["TL_CIRCUITS_CACHE"] = old


def run_example(name: str, capsys) -> tuple[str, str]:
    """Run ``examples/{name}.py --budget small`` in this process; (its finding, all it printed)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    finding = module.main(["--budget", "small"])
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == finding and finding.startswith("FINDING: ")
    with capsys.disabled():  # shown in the test log, for the record
        sys.stdout.write(f"\n{name}: {finding}\n")
    return finding, out


def probability(text: str, after: str) -> float:
    return float(re.search(re.escape(after) + r".*?p = ([0-9.]+)", text).group(1))


def test_demo_trains_caches_and_summarises(cache, tmp_path, capsys):
    from tl_circuits import demo

    assert demo.main(["--budget", "small", "--no-serve", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "First run: training small-budget transcoders" in out
    assert (demo.demo_dir("small") / "layer_29" / "cfg.json").is_file()
    assert tc.Dashboards.open(demo.dashboards_dir("small")).d_sae(0) == 256
    tops = re.findall(r"top target: '(.*?)' \(p = ([0-9.]+)\)", out)
    assert [t for t, _ in tops] == [" Paris", " Paris", " tennis"]
    # With BOS in front (the one tokenization rule), p(' tennis') is 0.24 (0.59 without BOS).
    assert float(tops[0][1]) > 0.5 and float(tops[2][1]) > 0.2
    assert out.count("replacement score") == 3 and out.count("strongest path: the token") == 3
    graph = tc.Graph.load(tmp_path / "demo-0.safetensors")
    assert graph.is_pruned and graph.targets[0].label == " Paris"


def test_capital_of_france(cache, capsys):
    from tl_circuits import demo

    # Under xdist this worker may not have run the demo test: train the small set here if so, so
    # that the example below must find it cached.
    demo.demo_transcoders(demo.load_model(), "small")
    capsys.readouterr()
    finding, out = run_example("capital_of_france", capsys)
    assert "completes 'The capital of France is' with ' Paris'" in finding
    assert probability(finding, "' Paris'") > 0.5 and "Using cached transcoders" in out


def test_attention_heads_splits_the_top_edge_and_explains_its_head(cache, capsys):
    finding, out = run_example("attention_heads", capsys)
    assert "the top cross-position edge" in finding and "has top head L" in finding
    assert "Top cross-position edge (small demo transcoders)" in out and "other pairs" in out


def test_two_hop_says_honestly_it_misses_austin(cache, capsys):
    finding, _ = run_example("two_hop", capsys)
    assert "it does NOT get ' Austin'" in finding
    assert "Eiffel two-hop: ' Paris'" in finding and probability(finding, "Eiffel") > 0.3


def test_sport_of_athlete(cache, capsys):
    finding, out = run_example("sport_of_athlete", capsys)
    assert finding.startswith("FINDING: ' tennis'") and "Most influential input tokens" in out


def test_intervention_lowers_the_top_token(cache, capsys):
    finding, out = run_example("intervention", capsys)
    clean, new = (float(x) for x in re.search(r"p\(' Paris'\) ([0-9.]+) -> ([0-9.]+)", finding).groups())
    assert clean > 0.5 and new < clean
    assert "zeroing the top  1" in out


def test_custom_target_logit_difference(cache, capsys):
    finding, _ = run_example("custom_target", capsys)
    diff = float(re.search(r"logit\(' London'\) = (-?[0-9.]+)", finding).group(1))
    assert diff > 2.0  # p(Paris) 0.77 vs p(London) 0.012: about log(64) = 4.2


def test_cli_attribute_on_the_cached_set(cache, tmp_path, capsys):
    from tl_circuits.cli import main

    out = tmp_path / "paris.safetensors"
    assert main(["attribute", "The capital of France is", "--out", str(out),
                 "--max-feature-nodes", "16"]) == 0
    assert "top target: ' Paris'" in capsys.readouterr().out
    assert tc.Graph.load(out).settings["transcoder_layers"] == list(range(30))
