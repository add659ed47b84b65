"""How good a SmolLM2 transcoder set is for the demo: held-out metrics, and per prompt the full
and pruned graph scores, check_graph's open-loop correlations (path prediction and direct edge,
top 10 features x targets) and the strongest token path with each feature's top dashboard tokens.

    python benchmarks/demo_quality.py [--transcoders DIR] [--dashboards DIR] [--top 10]

Defaults: the cached default demo set and its dashboards (``$TL_CIRCUITS_CACHE``). The prompts
are the demo's three and three more the model answers correctly (:data:`OTHER_PROMPTS`).
"""

from __future__ import annotations

import argparse
import time

import torch

import tl_circuits as tc
from tl_circuits.demo import MAX_FEATURE_NODES, PROMPTS, held_out_contexts
from tl_circuits.graph.describe import path_in_words, strongest_token_path
from tl_circuits.loading import BUDGETS, dashboards_dir, default_model, demo_dir

#: Prompts the demo does not use, answered correctly by SmolLM2-135M-Instruct (greedy).
OTHER_PROMPTS = (
    "The Colosseum is located in the city of",
    "Fact: the currency of Japan is the",
    "The opposite of hot is",
)


def top_tokens(dash: tc.Dashboards | None, layer: int, index: int, n: int = 4) -> str:
    """The tokens where a feature fires most in its dashboard (its top examples' peaks)."""
    if dash is None or not dash.has(layer, index):
        return ""
    examples = dash.feature(layer, index)["examples_quantiles"][0]["examples"]
    peaks = []
    for ex in examples[: 2 * n]:
        i = max(range(len(ex["tokens_acts_list"])), key=ex["tokens_acts_list"].__getitem__)
        peaks.append(ex["tokens"][i])
    return ", ".join(repr(p) for p in dict.fromkeys(peaks)) if peaks else ""


def influence_split(graph: tc.Graph) -> tuple[float, float, float]:
    """Shares of the end-to-end influence (as in ``Graph.scores``) that stop at token nodes, at
    error nodes and at features without a computed row (their own inputs are not in the graph)."""
    from tl_circuits.graph.influence import node_influence
    from tl_circuits.graph.nodes import kind_mask

    inf = node_influence(graph)
    rowless = kind_mask(graph.node_kind, tc.NodeKind.FEATURE)
    rowless[graph.rows_computed] = False
    parts = [float(inf[kind_mask(graph.node_kind, tc.NodeKind.TOKEN)].sum()),
             float(inf[kind_mask(graph.node_kind, tc.NodeKind.ERROR)].sum()), float(inf[rowless].sum())]
    return tuple(x / sum(parts) for x in parts)  # type: ignore[return-value]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transcoders", default=None)
    p.add_argument("--dashboards", default=None)
    p.add_argument("--top", type=int, default=10, help="features zeroed per prompt by check_graph")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out metrics")
    p.add_argument("--rows", type=int, default=MAX_FEATURE_NODES["default"],
                   help="feature rows per graph (the demo's by default; 0: every active feature)")
    args = p.parse_args()
    torch.set_grad_enabled(True)
    model = default_model()
    path = args.transcoders or demo_dir("default")
    transcoders = tc.TranscoderSet.load(path)
    dash_path = args.dashboards or dashboards_dir("default")
    try:
        dash = tc.Dashboards.open(dash_path)
    except tc.FileFormatError:
        dash = None
    print(f"transcoders: {path}\ndashboards: {dash_path if dash else 'none'}")
    print(f"training: {transcoders[0].cfg.get('training')}")
    if not args.no_eval:
        t0 = time.perf_counter()
        ev = tc.evaluate_transcoders(model, transcoders, held_out_contexts(model, BUDGETS["default"]["ctx_len"]))
        dead = [t.cfg.get("metrics", {}).get("dead_last_20_steps", float("nan")) for t in transcoders]
        print(f"held-out: FVU {ev['mean_fvu']:.3f}, L0 {ev['mean_l0']:.1f}, dead (last 20 steps) "
              f"{sum(dead) / len(dead):.1%}, never firing {ev['mean_dead']:.1%}, top-1 agreement "
              f"{ev['top1_agreement']:.1%}, KL {ev['kl']:.3f} ({ev['n_tokens']} tokens, "
              f"{time.perf_counter() - t0:.0f} s)")
    print(f"{args.rows or 'every active feature'} feature rows per graph")
    print("| prompt | top output (p) | full replacement / completeness | pruned | open-loop r: "
          "paths / direct | switched | rows, attribution time | influence at tokens / errors / "
          "row-less features |")
    paths = []
    for prompt in (*PROMPTS, *OTHER_PROMPTS):
        t0 = time.perf_counter()
        graph = tc.attribute(model, transcoders, prompt, max_feature_nodes=args.rows or None,
                             progress=False)
        took = time.perf_counter() - t0
        full = graph.scores()
        pruned = graph.prune(node_threshold=0.8, edge_threshold=0.98).scores()
        check = tc.check_graph(model, transcoders, graph, top=args.top, batch_size=args.top)
        top = graph.targets[0]
        sw = sum(check.switched) / max(1, len(check.switched))
        print(f"| {prompt!r} | {top.label!r} ({top.probability:.2f}) | {full['replacement']:.2f} / "
              f"{full['completeness']:.2f} | {pruned['replacement']:.2f} / "
              f"{pruned['completeness']:.2f} | {check.pearson_path:.2f} / "
              f"{check.pearson_open_loop:.2f} | {sw:.1f} | {len(graph.rows_computed)}, {took:.1f} s | "
              f"{' / '.join(f'{x:.2f}' for x in influence_split(graph))} |",
              flush=True)
        words = []
        for via in (False, True):
            path_ = strongest_token_path(graph, via_features=via)
            words.append(("  through features: " if via else "") + path_in_words(graph, path_))
            for n in [] if path_ is None else path_.nodes:
                node = graph.nodes[n]
                if node.kind == "feature":
                    words.append(f"    L{node.layer}/{node.index}: fires on {top_tokens(dash, node.layer, node.index)}")
        paths.append((prompt, words, check))
    for prompt, words, check in paths:
        print(f"\n{prompt!r}: " + "\n".join(words))
        print(f"    per-target open-loop r (paths): {[round(r, 2) for r in check.pearson_path_per_target]}")
        print(f"    per-target open-loop r (direct): {[round(r, 2) for r in check.pearson_direct_per_target]}")


if __name__ == "__main__":
    main()
