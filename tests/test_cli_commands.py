"""``tl-circuits`` sub-commands end to end on a tiny random Hugging Face model (fast)."""

from __future__ import annotations

import json

import pytest
import torch

import tl_circuits as tc
from tl_circuits.cli import build_parser, main

PROMPT = "w1 w2 Paris w3 w4"
COMMANDS = ("demo", "attribute", "prune", "export", "serve", "train", "dashboards", "intervene",
            "transcoders")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny Llama (float32) with its tokenizer, and a saved transcoder set for it."""
    from tests.core.tiny import tiny_set, tiny_tokenizer
    from tests.hosts.hf_tiny import hf_model

    root = tmp_path_factory.mktemp("tiny")
    model = hf_model("llama", dtype=torch.float32)
    model.save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    tiny_set("jumprelu_skip", dtype=torch.float32).save(root / "tc")
    return root


def load_tiny(root):
    """The saved model as the CLI loads it (an HFHost), and the transcoders."""
    from tl_circuits.loading import model_loader

    return model_loader(str(root / "model"))(), tc.TranscoderSet.load(root / "tc")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"usage: tl-circuits {command}" in capsys.readouterr().out


def test_attribute_saves_the_graph_the_library_computes(tiny, tmp_path, capsys):
    out = tmp_path / "g.safetensors"
    args = ["attribute", PROMPT, "--model", str(tiny / "model"), "--transcoders", str(tiny / "tc"),
            "--out", str(out), "--max-feature-nodes", "-1", "--batch-size", "8"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    graph = tc.Graph.load(out)
    model, transcoders = load_tiny(tiny)
    expected = tc.attribute(model, transcoders, PROMPT, batch_size=8, progress=False)
    assert torch.allclose(graph.adjacency.to_dense(), expected.adjacency.to_dense(), atol=1e-6)
    assert graph.n_features == expected.n_features > 10
    top = expected.targets[0]
    assert f"top target: {top.label!r} (p = {top.probability:.2f})" in printed
    assert "strongest path: the token" in printed and f"saved {out}" in printed


def test_attribute_logit_difference_target(tiny, tmp_path):
    out = tmp_path / "d.safetensors"
    assert main(["attribute", PROMPT, "--model", str(tiny / "model"), "--transcoders", str(tiny / "tc"),
                 "--out", str(out), "--target", "Paris", "London", "--target", "w3"]) == 0
    graph = tc.Graph.load(out)
    assert [t.kind for t in graph.targets] == ["logit_diff", "logit"]
    assert graph.targets[0].label == "'Paris' - 'London'"
    assert graph.settings["max_feature_nodes"] == 256


def test_attribute_feature_pool(tiny, tmp_path):
    out = tmp_path / "p.safetensors"
    assert main(["attribute", PROMPT, "--model", str(tiny / "model"), "--transcoders", str(tiny / "tc"),
                 "--out", str(out), "--max-feature-nodes", "3", "--feature-pool", "7"]) == 0
    graph = tc.Graph.load(out)
    assert graph.settings["feature_pool"] == 7 == graph.n_features
    assert graph.settings["n_active_features"] > 7


def test_attribute_dtype_options(tiny, tmp_path):
    out = tmp_path / "b.safetensors"
    assert main(["attribute", PROMPT, "--model", str(tiny / "model"), "--transcoders", str(tiny / "tc"),
                 "--out", str(out), "--dtype", "float64", "--pattern-dtype", "float16"]) == 0
    graph = tc.Graph.load(out)
    assert (graph.settings["dtype"], graph.settings["pattern_dtype"]) == ("float64", "float16")
    assert graph.adjacency.dtype == torch.float64


def test_prune_export_and_serve(tiny, tmp_path, capsys, monkeypatch):
    g = tmp_path / "g.safetensors"
    assert main(["attribute", PROMPT, "--model", str(tiny / "model"), "--transcoders",
                 str(tiny / "tc"), "--out", str(g)]) == 0
    assert main(["prune", str(g), "--node-threshold", "0.5"]) == 0
    printed = capsys.readouterr().out
    full, pruned = tc.Graph.load(g), tc.Graph.load(tmp_path / "g.pruned.safetensors")
    assert pruned.n_nodes < full.n_nodes
    assert pruned.settings["pruning"]["node_threshold"] == 0.5
    assert f"replacement score {pruned.scores()['replacement']:.2f}" in printed

    assert main(["export", str(g), str(tmp_path / "g.json")]) == 0
    data = json.loads((tmp_path / "g.json").read_text())
    assert {"metadata", "nodes", "links"} <= set(data) and len(data["nodes"]) > 5
    assert main(["export", str(g), str(tmp_path / "g.html")]) == 0
    assert (tmp_path / "g.html").read_text().lower().startswith("<!doctype html>")

    import tl_circuits.viewer

    calls = []
    monkeypatch.setattr(tl_circuits.viewer, "serve", lambda *a, **kw: calls.append((a, kw)))
    assert main(["serve", str(g), "--port", "9999", "--model", str(tiny / "model"),
                 "--transcoders", str(tiny / "tc")]) == 0
    (path,), kw = calls[0]
    assert path == str(g) and kw["port"] == 9999 and kw["host"] == "127.0.0.1"
    assert kw["transcoders"].layers == [0, 1, 2] and kw["model"] is not None
    assert "http://" not in capsys.readouterr().out  # the URL only once the server listens
    kw["announce"]("http://127.0.0.1:9999/")
    assert "http://127.0.0.1:9999/" in capsys.readouterr().out
    # a folder (a gallery), or several files
    assert main(["serve", str(tmp_path)]) == 0 and calls[1][0] == (str(tmp_path),)
    assert main(["serve", str(g), str(g)]) == 0 and calls[2][0] == ([str(g), str(g)],)
    assert main(["serve", str(g), str(tmp_path)]) == 2
    assert "not a mix" in capsys.readouterr().err


def test_intervene_matches_the_library(tiny, capsys):
    assert main(["intervene", PROMPT, "--model", str(tiny / "model"), "--transcoders", str(tiny / "tc"),
                 "--set", "1:-1:3=5.0", "--scale", "2:-1:0=0", "--top", "3"]) == 0
    clean_line, new_line = capsys.readouterr().out.splitlines()
    model, transcoders = load_tiny(tiny)
    edits = [(1, -1, 3, 5.0, "set"), (2, -1, 0, 0.0, "scale")]
    probs = tc.intervene(model, transcoders, PROMPT, edits).logits[-1].softmax(-1)
    top = probs.topk(3)
    first = model.token_strings([int(top.indices[0])])[0]
    assert new_line.strip().startswith(f"intervened: {first!r} {float(top.values[0]):.3f}")
    assert clean_line.strip().startswith("clean:") and clean_line != new_line


def test_dashboards(tiny, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("w1 w2 w3 Paris w4 w5 London w6 w7 w8")
    assert main(["dashboards", "--model", str(tiny / "model"), "--transcoders", str(tiny / "tc"),
                 "--out", str(tmp_path / "dash"), "--texts", str(texts), "--n-top", "2"]) == 0
    dash = tc.Dashboards.open(tmp_path / "dash")
    assert dash.d_sae(0) == 24


def test_parser_lists_every_command():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
