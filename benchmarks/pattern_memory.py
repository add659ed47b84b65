"""Memory of the frozen attention patterns at long prompts: held as computed or in 16 bits.

One subprocess per setting (so each peak is its own): SmolLM2 (``load_default``, float32) with the
cached demo transcoders (random TopK ones without them), a BOS + English prompt of ``--tokens``
tokens. Each run measures
- what the replacement forward pass leaves resident (``run_replacement``, the state every
  backward pass of ``attribute`` reuses: patterns, activations, the autograd graph), and
- ``attribute`` with only the target rows (``max_feature_nodes=0``; its time and peak), so the
  cost of casting each 16-bit pattern block back to float32 in the backward passes shows.

Settings: patterns as computed (float32, the baseline), ``pattern_dtype=torch.bfloat16`` and
``torch.float16``; ``--dtype-pass`` adds the whole pass in bfloat16 (``dtype=torch.bfloat16``).
The patterns alone are ``layers x heads x tokens^2`` values (SmolLM2: 30 x 9).

    python benchmarks/pattern_memory.py --tokens 2048
"""

# ruff: noqa: T201  (a command-line script: printing is its output)
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SETTINGS = {
    "float32 patterns (baseline)": {},
    "bfloat16 patterns": {"pattern_dtype": "bfloat16"},
    "float16 patterns": {"pattern_dtype": "float16"},
    "bfloat16 pass": {"dtype": "bfloat16"},
}


def one(tokens: int, options: dict, transcoders_kind: str) -> dict:
    """The measurements of one setting, in this process."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from _setup import benchmark_transcoders, bos_prompt
    from _worker import reset_peak

    import tl_circuits as tc
    from tl_circuits.models import load_default
    from tl_circuits.replacement import prepare, run_replacement
    from tl_circuits.replacement.inputs import run_dtype

    def rss() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def peak() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    model = load_default(dtype=torch.float32)
    transcoders, what = benchmark_transcoders(model, transcoders_kind == "demo")
    prompt = bos_prompt(model, tokens)
    host, cast = prepare(model, transcoders, dtype=options.get("dtype"))
    before = rss()
    reset_peak()
    state = run_replacement(host, cast, torch.tensor(prompt), pattern_dtype=run_dtype(options.get("pattern_dtype")))
    forward = {"resident": rss() - before, "peak": peak() - before}
    del state, host, cast
    before = rss()
    reset_peak()
    t0 = time.perf_counter()
    graph = tc.attribute(model, transcoders, prompt, max_feature_nodes=0, batch_size=16,
                         progress=False, **options)
    elapsed = time.perf_counter() - t0
    return {"what": what, "forward": forward, "attribute_s": elapsed, "attribute_peak": peak() - before,
            "n_targets": len(graph.targets)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--transcoders", choices=("demo", "random"), default="demo")
    parser.add_argument("--dtype-pass", action="store_true", help="also the whole pass in bfloat16")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.tokens, SETTINGS[args.one], args.transcoders)))
        return
    names = [n for n in SETTINGS if args.dtype_pass or n != "bfloat16 pass"]
    results = {}
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--tokens", str(args.tokens), "--transcoders",
                              args.transcoders, "--one", name], capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    base = results[names[0]]
    n_patterns = 30 * 9 * args.tokens**2
    print(f"SmolLM2-135M-Instruct + {base['what']}; {args.tokens} tokens; the patterns: "
          f"{n_patterns * 4 / 2**30:.2f} GiB in float32, {n_patterns * 2 / 2**30:.2f} GiB in 16 bits\n")
    print("| setting | forward pass resident (MiB) | forward peak (MiB) | attribute, targets only: "
          "time (s) | its peak (MiB) | resident vs baseline |")
    print("|---" * 6 + "|")
    for name, r in results.items():
        f = r["forward"]
        print(f"| {name} | {f['resident']:,.0f} | {f['peak']:,.0f} | {r['attribute_s']:.1f} "
              f"| {r['attribute_peak']:,.0f} | {f['resident'] / base['forward']['resident']:.2f} |")


if __name__ == "__main__":
    main()
