"""The ``tl-circuits`` command line: demo, attribute, prune, export, serve, train, dashboards, intervene.

Each sub-command is one ``_add_*`` function that adds a parser and sets ``func``; adding one is a
new function and one line in :func:`build_parser`. User errors (a ``TLCircuitsError``, a missing
file, a bad argument) print one line to stderr and exit with code 2; nothing is loaded before the
arguments are checked, so a mistake is reported in a second, not after loading a model.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from tl_circuits.errors import ConfigError, FileFormatError, TLCircuitsError
from tl_circuits.loading import load_transcoders, model_loader, transcoder_path


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``prog: error: ... (see --help)``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --- shared options ---------------------------------------------------------------------------

def _model_options(p: argparse.ArgumentParser, transcoders_required: bool = False) -> None:
    p.add_argument("--model", default="default",
                   help="'default' (the embedded SmolLM2-135M-Instruct) or a local Hugging Face "
                   "model directory (Llama, Qwen2, Qwen3, GPT-2, Gemma-2)")
    p.add_argument("--transcoders", metavar="SOURCE", default=None, required=transcoders_required,
                   help="a SAELens transcoder folder (one sub-folder per layer), a circuit-tracer "
                   "CLT folder or config.yaml, or a release (hf://org/repo, org/repo@revision, a "
                   "sae_lens release name; from the Hugging Face cache); default: the demo set "
                   "cached by `tl-circuits demo`")


def _prompt_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chat", action="store_true",
                   help="PROMPT is a user message: apply the tokenizer's chat template (with the "
                   "generation prompt) instead of encoding PROMPT as plain text")
    p.add_argument("--no-bos", action="store_true",
                   help="do not put the model's BOS token in front of a plain-text PROMPT")


def _prompt(args: argparse.Namespace) -> Any:
    """The prompt as the library takes it: the text, or one user message with --chat."""
    text = args.prompt
    if not text.strip():
        raise ConfigError("the prompt is empty; give some text, e.g. \"The capital of France is\".")
    if getattr(args, "chat", False):
        if getattr(args, "no_bos", False):
            raise ConfigError("--no-bos applies to plain-text prompts; with --chat the chat "
                              "template decides the special tokens")
        return [{"role": "user", "content": text}]
    return text


def _existing(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise FileFormatError(f"no {what} at {path}: check the path.")
    return path


# --- sub-commands -----------------------------------------------------------------------------

def _add_demo(sub: argparse._SubParsersAction) -> None:
    from tl_circuits import demo

    p = sub.add_parser("demo", help="SmolLM2 + demo transcoders: three graphs, then the viewer",
                       description=demo.DESCRIPTION)
    demo.add_arguments(p)
    p.set_defaults(func=demo.run)


def _add_attribute(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attribute", help="compute the attribution graph of a prompt and save it",
        description="Attribute PROMPT and save the graph (safetensors + JSON header); prints the "
        "top target, scores and the strongest token-to-target path. Example: tl-circuits "
        "attribute \"The capital of France is\" --target \" Paris\" \" London\" --out paris.safetensors",
    )
    p.add_argument("prompt")
    _model_options(p)
    _prompt_options(p)
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
    p.set_defaults(func=_run_attribute)


def _run_attribute(args: argparse.Namespace) -> int:
    import tl_circuits as tc
    from tl_circuits.graph.describe import summarize

    prompt = _prompt(args)
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
                         feature_pool=args.feature_pool, batch_size=args.batch_size)
    graph.save(args.out)
    for line in summarize(graph):
        _say(line)
    _say(f"saved {args.out}; next: tl-circuits prune {args.out}, or tl-circuits serve {args.out}")
    return 0


def _add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a graph by influence (circuit-tracer's rule)",
                       description="Keep the nodes carrying NODE_THRESHOLD of the influence on the "
                       "targets and the edges carrying EDGE_THRESHOLD; save and summarise.")
    p.add_argument("graph", help="graph file written by `attribute` (Graph.save)")
    p.add_argument("--out", default=None, help="output file (default GRAPH.pruned.safetensors)")
    p.add_argument("--node-threshold", type=float, default=0.8)
    p.add_argument("--edge-threshold", type=float, default=0.98)
    p.set_defaults(func=_run_prune)


def _run_prune(args: argparse.Namespace) -> int:
    import tl_circuits as tc
    from tl_circuits.graph.describe import summarize

    graph = tc.Graph.load(args.graph)
    pruned = graph.prune(node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    out = args.out or str(Path(args.graph).with_suffix("")) + ".pruned.safetensors"
    pruned.save(out)
    for line in summarize(graph, pruned):
        _say(line)
    _say(f"saved {out}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write Neuronpedia-style JSON or one standalone HTML page",
                       description="Export GRAPH to OUT: .json (Neuronpedia-style graph JSON, plus "
                       "feature JSON with --dashboards) or .html (one self-contained page).")
    p.add_argument("graph", help="graph file (Graph.save) or exported JSON")
    p.add_argument("out", help="output .json or .html")
    p.add_argument("--dashboards", help="folder written by `tl-circuits dashboards`")
    p.add_argument("--node-threshold", type=float, default=0.8)
    p.add_argument("--edge-threshold", type=float, default=0.98)
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from tl_circuits.viewer.publish import export_file

    _existing(args.graph, "graph file")
    if args.dashboards:
        _existing(args.dashboards, "dashboards folder")
    export_file(args.graph, args.out, dashboards=args.dashboards,
                node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    _say(f"wrote {args.out}")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="view a graph in the local web viewer",
                       description="Serve GRAPH at http://HOST:PORT/ (Ctrl-C stops). With --model "
                       "and --transcoders the page can run interventions on pinned features.")
    p.add_argument("graph", help="graph file (Graph.save) or exported JSON")
    p.add_argument("--dashboards", help="folder written by `tl-circuits dashboards`")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--annotations", help="annotations file (default: GRAPH stem + .annotations.json)")
    p.add_argument("--model", default=None, help="'default' or a local HF model folder, to enable interventions")
    p.add_argument("--transcoders", metavar="SOURCE", default=None,
                   help="with --model: transcoders, any source --transcoders of `attribute` takes "
                   "(default: the cached demo set)")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from tl_circuits.viewer import serve

    _existing(args.graph, "graph file")
    if args.dashboards:
        _existing(args.dashboards, "dashboards folder")
    model = transcoders = None
    if args.model is not None:
        load = model_loader(args.model)
        transcoders = load_transcoders(transcoder_path(args.transcoders, args.model))
        model = load()
    elif args.transcoders is not None:
        raise ConfigError("--transcoders in `serve` needs --model too (they enable interventions).")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write(f"warning: binding {args.host}: other machines may reach this viewer\n")
    _say(f"tl_circuits viewer on http://{args.host}:{args.port}/  (Ctrl-C stops)")
    serve(args.graph, dashboards=args.dashboards, host=args.host, port=args.port,
          annotations_path=args.annotations, model=model, transcoders=transcoders)
    return 0


def _add_dashboards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboards", help="build feature dashboards (top contexts, logits)",
                       description="Run the model over texts once and save every feature's "
                       "dashboard (for `serve --dashboards` and `export --dashboards`).")
    _model_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--texts", nargs="*", default=None, metavar="FILE",
                   help=".txt or .jsonl files; default: the offline corpus (docs/training.md)")
    p.add_argument("--n-texts", type=int, default=256, help="read at most this many texts")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens per text")
    p.add_argument("--n-top", type=int, default=16, help="top contexts per feature")
    p.add_argument("--context", type=int, default=8, help="tokens shown on each side")
    p.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(func=_run_dashboards)


def _run_dashboards(args: argparse.Namespace) -> int:
    import tl_circuits as tc
    from tl_circuits.training.corpus import default_texts, read_text_files

    load = model_loader(args.model)
    transcoders = load_transcoders(transcoder_path(args.transcoders, args.model))
    texts = read_text_files(args.texts) if args.texts else default_texts()
    model = load()
    tc.build_dashboards(model, transcoders, texts[: args.n_texts], out_path=args.out, n_top=args.n_top,
                        context=args.context, batch_size=args.batch_size, max_tokens_per_text=args.max_tokens)
    _say(f"saved dashboards to {args.out}")
    return 0


def _add_intervene(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "intervene", help="set or scale features and compare next-token predictions",
        description="Run PROMPT with features changed (tl_circuits.intervene) and print the top "
        "next tokens before and after. Example: tl-circuits intervene \"The capital of France is\" "
        "--set 5:-1:123=0 --scale 7:-1:45=2",
    )
    p.add_argument("prompt")
    _model_options(p)
    _prompt_options(p)
    p.add_argument("--set", action="append", default=[], metavar="L:P:F=V",
                   help="set feature F of layer L at position P (negative: from the end) to V")
    p.add_argument("--scale", action="append", default=[], metavar="L:P:F=V", help="multiply it by V")
    p.add_argument("--graph", help="graph file whose supernodes --supernode names")
    p.add_argument("--supernode", action="append", default=[], metavar="NAME=V",
                   help="scale every feature of a supernode of --graph by V")
    p.add_argument("--top", type=int, default=5, help="next tokens to show")
    p.add_argument("--generate", type=int, default=0, metavar="N", help="also greedily generate N tokens")
    p.set_defaults(func=_run_intervene)


def _parse_edit(text: str, mode: str) -> tuple[int, int, int, float, str]:
    try:
        where, value = text.split("=")
        layer, pos, feature = (int(x) for x in where.split(":"))
        return layer, pos, feature, float(value), mode
    except ValueError:
        raise ConfigError(f"--{mode} {text!r}: expected LAYER:POSITION:FEATURE=VALUE, e.g. 5:-1:123=0") from None


def _run_intervene(args: argparse.Namespace) -> int:
    import torch

    import tl_circuits as tc
    from tl_circuits.hosts import as_host

    prompt = _prompt(args)
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
        _say(f"{name:>10}: {words}")
    if args.generate:
        ids = tc.generate(model, transcoders, prompt, args.generate, prepend_bos=bos,
                          interventions=edits, graph=graph)
        _say("generated: " + repr("".join(host.token_strings(ids))))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train per-layer or cross-layer transcoders for a model",
        description="Train transcoders for every MLP of a model and save them (SAELens "
        "directories, or a circuit-tracer CLT directory with --cross-layer). An interrupted "
        "run resumes from its checkpoint when started again with the same settings.",
    )
    p.add_argument("--model", default="default",
                   help="'default' (the embedded SmolLM2-135M-Instruct) or a local Hugging Face "
                   "model directory saved with save_pretrained (Llama, Qwen2, Qwen3, GPT-2, Gemma-2)")
    p.add_argument("--texts", nargs="*", default=None, metavar="FILE",
                   help=".txt files (one text each) or .jsonl files ({'text': ...} per line); "
                   "default: the offline corpus described in docs/training.md")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--kind", choices=("topk", "jumprelu"), default="topk")
    p.add_argument("--skip", action="store_true", help="add a linear skip connection")
    p.add_argument("--cross-layer", action="store_true", help="train a cross-layer transcoder")
    p.add_argument("--d-sae", type=int, default=None, help="features per layer (default 4*d_model)")
    p.add_argument("--k", type=int, default=32, help="active features per token (TopK)")
    p.add_argument("--steps", type=int, default=None, help="training steps (overrides --tokens)")
    p.add_argument("--tokens", type=int, default=1_000_000, help="training tokens")
    p.add_argument("--batch", type=int, default=32, help="contexts per step")
    p.add_argument("--ctx-len", type=int, default=128, help="tokens per context")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--sparsity-coef", type=float, default=1e-3, help="L0 penalty (JumpReLU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hook-in", default="blocks.{l}.ln2.hook_normalized")
    p.add_argument("--hook-out", default="blocks.{l}.hook_mlp_out")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from tl_circuits.training import train_transcoders
    from tl_circuits.training.corpus import read_text_files

    load = model_loader(args.model)  # checks --model before anything is loaded
    texts = read_text_files(args.texts) if args.texts else None
    model = load()
    train_transcoders(
        model, texts, kind=args.kind, skip=args.skip, cross_layer=args.cross_layer,
        d_sae=args.d_sae, k=args.k, steps=args.steps, tokens=args.tokens, batch=args.batch,
        ctx_len=args.ctx_len, lr=args.lr, sparsity_coef=args.sparsity_coef, out_dir=args.out,
        resume=not args.no_resume, seed=args.seed, hook_in=args.hook_in, hook_out=args.hook_out,
    )
    _say(f"saved transcoders to {args.out}")
    return 0


def _add_transcoders(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcoders", help="work with published transcoder releases (convert)",
                       description="Published transcoder releases: `convert` writes any source "
                       "as memory-mappable safetensors, once.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = actions.add_parser(
        "convert", help="write a release as memory-mappable safetensors",
        description="Write SOURCE (a folder, a config.yaml, an hf://org/repo[/path] reference, "
        "org/repo@revision, or a sae_lens release name with --ids) to DIR as memory-mappable "
        "safetensors, streaming with a progress bar; DIR appears complete or not at all. Then "
        "load DIR with tl_circuits.load_transcoders(DIR, lazy=True). Example: tl-circuits "
        "transcoders convert gemma-scope-2b-pt-transcoders gemmascope --ids "
        "layer_0/width_16k/average_l0_76 layer_1/width_16k/average_l0_65",
    )
    c.add_argument("source")
    c.add_argument("dir")
    c.add_argument("--layers", type=int, nargs="+", default=None, help="only these layers")
    c.add_argument("--ids", nargs="+", default=None, help="sae_lens release ids (one per layer)")
    c.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="cast on the way (default: keep the files' dtype)")
    c.set_defaults(func=_run_transcoders_convert)


def _run_transcoders_convert(args: argparse.Namespace) -> int:
    import torch

    from tl_circuits.transcoders import convert_transcoders

    if os.path.exists(args.dir) and not os.path.isdir(args.dir):
        raise FileFormatError(f"{args.dir} is a file; give a folder to write the converted set to.")
    dtype = None if args.dtype is None else getattr(torch, args.dtype)
    convert_transcoders(args.source, args.dir, layers=args.layers, ids=args.ids, dtype=dtype)
    _say(f"wrote {args.dir}; load it with tl_circuits.load_transcoders({args.dir!r}, lazy=True)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = _Parser(prog="tl-circuits", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo, _add_attribute, _add_prune, _add_export, _add_serve, _add_train,
                _add_dashboards, _add_intervene):
        add(sub)
    _add_transcoders(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tl-circuits``; returns the exit code (2 for a usage or input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (TLCircuitsError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        sys.stderr.write(f"tl-circuits {args.command}: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; run the same command again to resume.\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
