"""tl_circuits against circuit-tracer 0.5.0 on the same work, measured in the same run.

Both get SmolLM2-135M-Instruct (the same HookedTransformer weights), the same per-layer TopK
transcoders (ours converted to circuit-tracer's format), the same token ids (starting with the
tokenizer's BOS id, which both treat as the sink), ``max_feature_nodes`` and ``batch_size``.
circuit-tracer's pins conflict with ours, so it runs in its own virtual environment
(``benchmarks/.peer-venv``, made on first use, or ``$PEER_PYTHON``). Each implementation lives
in a long-lived worker process; runs alternate between them so both see the same machine load.

Printed: wall time of each (min / median / max), the ratio ours / theirs, peak resident memory of
each worker, and the largest edge difference between the two graphs on every edge both compute
(matched by node identity: features (layer, position, index), errors, tokens, logits; sources at
the BOS position are left out, since the two fold the sink differently).

    python benchmarks/peer.py [--tokens 16] [--max-feature-nodes 1024] [--batch-size 64] [--repeats 3]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from _setup import attribution_parser, benchmark_transcoders, bos_prompt, summary
from safetensors import safe_open
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".peer-venv"
PEER_PINS = ["torch==2.13.0", "circuit-tracer==0.5.0", "transformer-lens<3", "numpy<2", "pyarrow<18",
             "datasets<3", "pandas<2.3"]


def peer_python() -> str:
    """The circuit-tracer interpreter: $PEER_PYTHON, or benchmarks/.peer-venv (made on demand)."""
    if os.environ.get("PEER_PYTHON"):
        return os.environ["PEER_PYTHON"]
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PEER_VENV} with {' '.join(PEER_PINS)} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PINS], check=True)
    return str(python)


def export(model, transcoders, tokens: list[int], out: Path, args) -> None:
    """Write what both workers load: model weights and config, transcoders in both formats."""
    save_file({k: v.detach().contiguous() for k, v in model.named_parameters()},
              str(out / "model.safetensors"))
    cfg = {k: v for k, v in model.cfg.to_dict().items() if isinstance(v, (int, float, str, bool, type(None)))}
    (out / "model_cfg.json").write_text(json.dumps(cfg))
    tok = model.tokenizer
    tok.save_pretrained(str(out / "tokenizer"))
    special = {k: getattr(tok, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    (out / "tokenizer_special.json").write_text(json.dumps({k: v for k, v in special.items() if v}))
    transcoders.save(out / "transcoders")
    ks = set()
    for t in transcoders:
        w = {"W_enc": t.W_enc.T.contiguous(), "W_dec": t.W_dec.contiguous(), "b_enc": t.b_enc,
             "b_dec": t.b_dec}
        if t.W_skip is not None:
            w["W_skip"] = t.W_skip
        save_file({k: v.detach().float().contiguous() for k, v in w.items()},
                  str(out / f"peer_transcoder_{t.layer}.safetensors"))
        ks.add(t.k)
    assert len(ks) == 1 and None not in ks, "the peer benchmark uses TopK transcoders"
    hook = transcoders[transcoders.layers[0]].hook_name.split(".", 2)[2]
    (out / "peer_transcoders.json").write_text(json.dumps({"k": ks.pop(), "feature_input_hook": hook}))
    (out / "settings.json").write_text(json.dumps({
        "tokens": tokens, "max_feature_nodes": args.max_feature_nodes,
        "batch_size": args.batch_size, "threads": torch.get_num_threads(),
    }))


class Worker:
    def __init__(self, python: str, impl: str, export_dir: Path):
        # ours imports tl_circuits from this checkout (not whichever one is installed)
        path = str(HERE.parent) if impl == "ours" else ""
        env = dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        self.proc = subprocess.Popen(
            [python, str(HERE / "_worker.py"), impl, str(export_dir)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=env, cwd=str(HERE),
        )
        self.ready = self._read()

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"worker exited with {self.proc.wait()}")

    def ask(self, **cmd) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.ask(cmd="quit")
        except (RuntimeError, BrokenPipeError):
            pass
        self.proc.wait(timeout=60)


def load_edges(path: str) -> dict[tuple[str, str], float]:
    with safe_open(path, framework="pt") as f:
        rows, meta = f.get_tensor("rows"), f.metadata()
    row_keys, col_keys = json.loads(meta["rows"]), json.loads(meta["cols"])
    nz = rows.nonzero().tolist()
    edges = {(row_keys[r], col_keys[c]): float(rows[r, c]) for r, c in nz}
    edges["__rows__"] = row_keys  # type: ignore[assignment]
    edges["__cols__"] = col_keys  # type: ignore[assignment]
    return edges


def compare(ours_path: str, peer_path: str) -> str:
    a, b = load_edges(ours_path), load_edges(peer_path)
    rows = set(a.pop("__rows__")) & set(b.pop("__rows__"))  # type: ignore[arg-type]
    cols = set(a.pop("__cols__")) & set(b.pop("__cols__"))  # type: ignore[arg-type]
    # Position 0 is the BOS sink in both, but each folds it differently: circuit-tracer drops the
    # MLP writes there, we fold them into the BOS token node. Compare every other source.
    cols = {c for c in cols if not (c == "t0" or (c[0] in "fe" and c.split("_")[1] == "0"))}
    keys = {k for k in set(a) | set(b) if k[0] in rows and k[1] in cols}
    if not keys:
        return "no shared edges"
    scale = max(abs(v) for k, v in a.items() if k in keys)
    worst = max(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys)
    rel = [abs(a.get(k, 0.0) - b.get(k, 0.0)) / abs(b[k]) for k in keys if k in b and abs(b[k]) > 1e-3 * scale]
    # Error nodes differ by design once ours keeps a feature pool (more active features than
    # ``feature_pool``): the features outside it fold into our error nodes, circuit-tracer's
    # error nodes hold none of them. Feature and token sources are the like-for-like figure.
    same = [abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys if k[1][0] != "e"]
    return (f"{len(rows)} shared rows, {len(keys)} shared nonzero edges; largest |difference| "
            f"{worst:.3g} ({worst / scale:.2g} of the largest edge); largest relative difference "
            f"on edges above 1e-3 of the largest: {max(rel):.2g}; from feature and token sources "
            f"only (error nodes also carry ours' folded features when it keeps a feature pool): "
            f"{max(same, default=0.0) / scale:.2g} of the largest edge")


def report(args, what, workers, times, last) -> None:
    print(f"SmolLM2-135M-Instruct + {what}; {args.tokens} tokens; max_feature_nodes "
          f"{args.max_feature_nodes}; batch {args.batch_size}; torch threads {torch.get_num_threads()}")
    for name in workers:
        print(f"{name:5s}: {summary(times[name])}; peak RSS {last[name]['rss_peak_mib']:.0f} MiB "
              f"(after loading {last[name]['rss_loaded_mib']:.0f} MiB)")
    ratio = statistics.median(times["ours"]) / statistics.median(times["peer"])
    print(f"ratio ours/circuit-tracer (median): {ratio:.2f}", flush=True)


def main() -> None:
    parser = attribution_parser(__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="keep the exported files and dumps here")
    parser.add_argument("--demo-transcoders", action="store_true",
                        help="use the cached demo set instead of random TopK (k=32) transcoders")
    args = parser.parse_args()
    from tl_circuits import models

    model = models.load_default()
    transcoders, what = benchmark_transcoders(model, args.demo_transcoders)
    tokens = bos_prompt(model, args.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        export(model, transcoders, tokens, out, args)
        del model
        workers = {"ours": Worker(sys.executable, "ours", out), "peer": Worker(peer_python(), "peer", out)}
        try:
            times: dict[str, list[float]] = {k: [] for k in workers}
            last: dict[str, dict] = {}
            for w in workers.values():  # warm-up, not timed
                w.ask(cmd="run")
            for _ in range(args.repeats):
                for name, w in workers.items():
                    last[name] = w.ask(cmd="run")
                    times[name].append(last[name]["time"])
                    print(f"  {name}: {last[name]['time']:.2f}s", flush=True)
            report(args, what, workers, times, last)
            for name, w in workers.items():
                w.ask(cmd="dump", path=str(out / f"{name}_edges.safetensors"))
            print(f"agreement: {compare(str(out / 'ours_edges.safetensors'), str(out / 'peer_edges.safetensors'))}")
        finally:
            for w in workers.values():
                w.close()


if __name__ == "__main__":
    main()
