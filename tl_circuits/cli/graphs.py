"""``tl-circuits`` sub-commands on graphs: attribute, prune, export, serve, intervene."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tl_circuits.cli.common import existing, model_options, prompt_of, prompt_options, say
from tl_circuits.errors import ConfigError
from tl_circuits.loading import load_transcoders, model_loader, transcoder_path


def add_attribute(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attribute", help="compute the attribution graph of a prompt and save it",
        description="Attribute PROMPT and save the graph (safetensors + JSON header); prints the "
        "top target, scores and the strongest token-to-target path. Example: tl-circuits "
        "attribute \"The capital of France is\" --target \" Paris\" \" London\" --out paris.safetensors",
    )
    p.add_argument("prompt")
    model_options(p)
    prompt_options(p)
    p.add_argument("--out", default="graph.safetensors", help="graph file (default graph.safetensors)")
    p.add_argument("--max-feature-nodes", type=int, default=256,
                   help="feature rows to compute, chosen by influence (default 256; -1: all)")
    p.add_argument("--feature-pool", type=int, default=None,
                   help="features kept as nodes when rows are limited; the others fold into "
                   "error nodes (default: 8 x max-feature-nodes, at least 8192)")
    p.add_argument("--batch-size", type=int, default=32, help="targets per backward pass")
    p.add_argument("--target", action="append", nargs="+", metavar="TOKEN", default=None,
                   help="a single-token string (' Paris'), or two for a logit difference "
                   "(' Paris' ' London'); repeat for several; default: the most likely tokens")
    p.add_argument("--max-n-logits", type=int, default=10, help="default targets: at most this many")
    p.add_argument("--dtype", default="model", choices=["model", "float32", "float64", "bfloat16", "float16"],
                   help="dtype of the whole pass (default: the model's own; others cast a copy)")
    p.add_argument("--pattern-dtype", default=None, choices=["bfloat16", "float16"],
                   help="hold frozen attention patterns in this dtype: half their memory, edges "
                   "move by rounding (default: as computed, exact)")
    p.set_defaults(func=run_attribute)


def run_attribute(args: argparse.Namespace) -> int:
    import tl_circuits as tc
    from tl_circuits.graph.describe import summarize

    prompt = prompt_of(args)
    targets = None
    if args.target:
        if any(len(t) > 2 for t in args.target):
            raise ConfigError("--target takes one token, or two for a logit difference; got "
                              f"{[t for t in args.target if len(t) > 2][0]}")
        targets = [t[0] if len(t) == 1 else (t[0], t[1]) for t in args.target]
    load = model_loader(args.model)
    tc_path = transcoder_path(args.transcoders, args.model)
    transcoders = load_transcoders(tc_path)
    model = load()
    graph = tc.attribute(model, transcoders, prompt, prepend_bos=not args.no_bos, targets=targets,
                         max_n_logits=args.max_n_logits,
                         max_feature_nodes=None if args.max_feature_nodes < 0 else args.max_feature_nodes,
                         feature_pool=args.feature_pool, batch_size=args.batch_size,
                         dtype=args.dtype, pattern_dtype=args.pattern_dtype)
    graph.save(args.out)
    for line in summarize(graph):
        say(line)
    say(f"saved {args.out}; next: tl-circuits prune {args.out}, or tl-circuits serve {args.out}")
    return 0


def add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a graph by influence (circuit-tracer's rule)",
                       description="Keep the nodes carrying NODE_THRESHOLD of the influence on the "
                       "targets and the edges carrying EDGE_THRESHOLD; save and summarise.")
    p.add_argument("graph", help="graph file written by `attribute` (Graph.save)")
    p.add_argument("--out", default=None, help="output file (default GRAPH.pruned.safetensors)")
    p.add_argument("--node-threshold", type=float, default=0.8)
    p.add_argument("--edge-threshold", type=float, default=0.98)
    p.set_defaults(func=run_prune)


def run_prune(args: argparse.Namespace) -> int:
    import tl_circuits as tc
    from tl_circuits.graph.describe import summarize

    graph = tc.Graph.load(args.graph)
    pruned = graph.prune(node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    out = args.out or str(Path(args.graph).with_suffix("")) + ".pruned.safetensors"
    pruned.save(out)
    for line in summarize(graph, pruned):
        say(line)
    say(f"saved {out}")
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write Neuronpedia-style JSON or one standalone HTML page",
                       description="Export GRAPH to OUT: .json (Neuronpedia-style graph JSON, plus "
                       "feature JSON with --dashboards) or .html (one self-contained page).")
    p.add_argument("graph", help="graph file (Graph.save) or exported JSON")
    p.add_argument("out", help="output .json or .html")
    p.add_argument("--dashboards", help="folder written by `tl-circuits dashboards`")
    p.add_argument("--node-threshold", type=float, default=0.8)
    p.add_argument("--edge-threshold", type=float, default=0.98)
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from tl_circuits.viewer.publish import export_file

    existing(args.graph, "graph file")
    if args.dashboards:
        existing(args.dashboards, "dashboards folder")
    export_file(args.graph, args.out, dashboards=args.dashboards,
                node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    say(f"wrote {args.out}")
    return 0


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="view graphs in the local web viewer",
                       description="Serve GRAPH (a graph file, several, or a folder of graphs: a "
                       "gallery that picks up graphs written while it runs) at http://HOST:PORT/ "
                       "(Ctrl-C stops). With --model the page can steer features.")
    p.add_argument("graph", nargs="+", help="graph files (Graph.save) or exported JSON, or one folder")
    p.add_argument("--dashboards", help="folder written by `tl-circuits dashboards`")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--annotations", help="annotations file of a single GRAPH (default: GRAPH stem + .annotations.json)")
    p.add_argument("--model", default=None, help="'default' or a local HF model folder, to steer from the page")
    p.add_argument("--transcoders", metavar="SOURCE", default=None,
                   help="with --model: transcoders, any source --transcoders of `attribute` takes "
                   "(default: the cached demo set)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from tl_circuits.viewer import serve

    for g in args.graph:
        existing(g, "graph file")
    if len(args.graph) > 1 and any(Path(g).is_dir() for g in args.graph):
        raise ConfigError("serve one folder on its own, or several graph files; not a mix")
    if args.annotations and (len(args.graph) > 1 or Path(args.graph[0]).is_dir()):
        raise ConfigError("--annotations names the file of a single graph; with several graphs each "
                          "keeps its annotations beside it")
    if args.dashboards:
        existing(args.dashboards, "dashboards folder")
    model = transcoders = None
    if args.model is not None:
        load = model_loader(args.model)
        transcoders = load_transcoders(transcoder_path(args.transcoders, args.model))
        model = load()
    elif args.transcoders is not None:
        raise ConfigError("--transcoders in `serve` needs --model too (they enable steering).")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write(f"warning: binding {args.host}: other machines may reach this viewer\n")
    source = args.graph[0] if len(args.graph) == 1 else args.graph
    serve(source, dashboards=args.dashboards, host=args.host, port=args.port,
          annotations_path=args.annotations, model=model, transcoders=transcoders,
          announce=lambda url: say(f"tl_circuits viewer on {url}  (Ctrl-C stops)"))
    return 0


def add_intervene(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "intervene", help="set or scale features and compare next-token predictions",
        description="Run PROMPT with features changed (tl_circuits.intervene) and print the top "
        "next tokens before and after. Example: tl-circuits intervene \"The capital of France is\" "
        "--set 5:-1:123=0 --scale 7:-1:45=2",
    )
    p.add_argument("prompt")
    model_options(p)
    prompt_options(p)
    p.add_argument("--set", action="append", default=[], metavar="L:P:F=V",
                   help="set feature F of layer L at position P (negative: from the end) to V")
    p.add_argument("--scale", action="append", default=[], metavar="L:P:F=V", help="multiply it by V")
    p.add_argument("--graph", help="graph file whose supernodes --supernode names")
    p.add_argument("--supernode", action="append", default=[], metavar="NAME=V",
                   help="scale every feature of a supernode of --graph by V")
    p.add_argument("--top", type=int, default=5, help="next tokens to show")
    p.add_argument("--generate", type=int, default=0, metavar="N", help="also greedily generate N tokens")
    p.set_defaults(func=run_intervene)


def _parse_edit(text: str, mode: str) -> tuple[int, int, int, float, str]:
    try:
        where, value = text.split("=")
        layer, pos, feature = (int(x) for x in where.split(":"))
        return layer, pos, feature, float(value), mode
    except ValueError:
        raise ConfigError(f"--{mode} {text!r}: expected LAYER:POSITION:FEATURE=VALUE, e.g. 5:-1:123=0") from None


def run_intervene(args: argparse.Namespace) -> int:
    import torch

    import tl_circuits as tc
    from tl_circuits.hosts import as_host

    prompt = prompt_of(args)
    edits: list[Any] = [_parse_edit(s, "set") for s in args.set] + [_parse_edit(s, "scale") for s in args.scale]
    graph = tc.Graph.load(args.graph) if args.graph else None
    for item in args.supernode:
        name, _, value = item.rpartition("=")
        if graph is None or not name:
            raise ConfigError(f"--supernode {item!r}: expected NAME=VALUE together with --graph GRAPH")
        edits.append((name, float(value), "scale"))
    if not edits:
        raise ConfigError("nothing to change: give --set, --scale or --supernode")
    load = model_loader(args.model)
    transcoders = load_transcoders(transcoder_path(args.transcoders, args.model))
    model = load()
    bos = not args.no_bos
    clean = tc.intervene(model, transcoders, prompt, [], prepend_bos=bos, graph=graph).logits[-1].softmax(-1)
    new = tc.intervene(model, transcoders, prompt, edits, prepend_bos=bos, graph=graph).logits[-1].softmax(-1)
    host = as_host(model)
    for name, probs in (("clean", clean), ("intervened", new)):
        top = torch.topk(probs, args.top)
        words = ", ".join(f"{s!r} {float(p):.3f}" for s, p in
                          zip(host.token_strings(top.indices.tolist()), top.values))
        say(f"{name:>10}: {words}")
    if args.generate:
        ids = tc.generate(model, transcoders, prompt, args.generate, prepend_bos=bos,
                          interventions=edits, graph=graph)
        say("generated: " + repr("".join(host.token_strings(ids))))
    return 0
