"""The same tiny circuit-tracer ``config.yaml`` sets, loaded by circuit-tracer 0.5.0 (in its own
environment, through its own hub loader) and by ``load_transcoders``, give the same graph on the
same tiny model (float32, relative 1e-4).

Sources at position 0 are left out: both treat the BOS position as a sink but fold its MLP writes
differently (circuit-tracer drops them, we fold them into the BOS token node), as in
benchmarks/peer.py. circuit-tracer 0.5.0's config loader ignores ``activation`` (JumpReLU when the
files hold thresholds, else ReLU) and its CLT loader ignores ``W_skip_{l}``, so the sets compared
here are those it reads as written: JumpReLU with skip, ReLU on the MLP's own hooks, a JumpReLU CLT.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import tl_circuits as tc
from tests.core.tiny import tiny_model

from . import fake_hub as fh

ROOT = Path(__file__).resolve().parents[3]
TOKENS = [0, 3, 17, 9, 41, 5, 22, 8]


def peer_python() -> str | None:
    path = os.environ.get("PEER_PYTHON") or str(ROOT / "benchmarks" / ".peer-venv" / "bin" / "python")
    return path if Path(path).is_file() else None


def keyed_rows(graph) -> dict[tuple[str, str], float]:
    keys = []
    for k, la, p, i in zip(graph.node_kind.tolist(), graph.node_layer.tolist(), graph.node_position.tolist(),
                           graph.node_index.tolist()):
        keys.append({0: f"f{la}_{p}_{i}", 1: f"e{la}_{p}", 2: f"t{p}"}.get(k) or f"l{graph.targets[i].token_ids[0]}")
    dense = graph.adjacency.to_dense()
    return {(keys[r], keys[c]): float(dense[r, c]) for r in graph.rows_computed.tolist()
            for c in dense[r].nonzero().squeeze(1).tolist()}


def peer_rows(path: Path) -> dict[tuple[str, str], float]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        rows, meta = f.get_tensor("rows"), f.metadata()
    row_keys, col_keys = json.loads(meta["rows"]), json.loads(meta["cols"])
    return {(row_keys[r], col_keys[c]): float(rows[r, c]) for r, c in rows.nonzero().tolist()}


def not_bos(key: str) -> bool:
    return not (key == "t0" or (key[0] in "fe" and key.split("_")[1] == "0"))


@pytest.mark.slow
def test_same_graph_as_circuit_tracer(tmp_path, monkeypatch):
    peer = peer_python()
    if peer is None:
        pytest.skip("circuit-tracer's environment is missing: create benchmarks/.peer-venv with "
                    "`python -c \"import sys; sys.path.insert(0, 'benchmarks'); import peer; peer.peer_python()\"` "
                    "or set PEER_PYTHON")
    cache = fh.use_cache(tmp_path, monkeypatch)
    fh.ct_set(cache, "org/plt-skip", "jumprelu", skip=True)
    fh.ct_set(cache, "org/plt-mlp", "relu", skip=False, listed=False, hook_in="mlp.hook_in", hook_out="mlp.hook_out")
    fh.mntss_clt(cache, repo="org/clt")
    sets = {"plt_skip": "org/plt-skip", "plt_mlp": "org/plt-mlp", "clt": "org/clt"}
    model = tiny_model("llama", dtype=torch.float32, tokenizer=True)
    export = tmp_path / "export"
    export.mkdir()
    save_file({k: v.detach().contiguous() for k, v in model.named_parameters()}, str(export / "model.safetensors"))
    cfg = {k: v for k, v in model.cfg.to_dict().items() if isinstance(v, (int, float, str, bool, type(None)))}
    (export / "model_cfg.json").write_text(json.dumps(cfg))
    model.tokenizer.save_pretrained(str(export / "tokenizer"))
    (export / "job.json").write_text(json.dumps({"tokens": TOKENS, "sets": sets}))
    env = dict(os.environ, PYTHONPATH="", HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               CIRCUIT_TRACER_CACHE_DIR=str(tmp_path / "ct-cache"))
    run = subprocess.run([peer, str(Path(__file__).with_name("circuit_tracer_driver.py")), str(export)],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    for name, ref in sets.items():
        ours = keyed_rows(tc.attribute(model, tc.load_transcoders(ref), TOKENS, max_feature_nodes=None, progress=False))
        theirs = peer_rows(export / f"{name}.safetensors")
        rows_ours = {r for r, _ in ours if not_bos(r)}
        rows_theirs = {r for r, _ in theirs if not_bos(r)}
        assert rows_ours == rows_theirs and len(rows_ours) > 20, name
        keys = {k for k in set(ours) | set(theirs) if not_bos(k[1]) and k[0] in rows_theirs}
        scale = max(abs(v) for k, v in theirs.items() if k in keys)
        worst = max(abs(ours.get(k, 0.0) - theirs.get(k, 0.0)) for k in keys)
        assert worst <= 1e-4 * scale, (name, worst / scale)
