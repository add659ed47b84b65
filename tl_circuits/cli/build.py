"""``tl-circuits`` sub-commands that make things: demo, train, dashboards, transcoders convert."""

from __future__ import annotations

import argparse
import os

from tl_circuits.cli.common import model_options, say
from tl_circuits.errors import FileFormatError
from tl_circuits.loading import load_transcoders, model_loader, transcoder_path


def add_demo(sub: argparse._SubParsersAction) -> None:
    from tl_circuits import demo

    p = sub.add_parser("demo", help="SmolLM2 + demo transcoders: three graphs, then the viewer",
                       description=demo.DESCRIPTION)
    demo.add_arguments(p)
    p.set_defaults(func=demo.run)


def add_dashboards(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboards", help="build feature dashboards (top contexts, logits)",
                       description="Run the model over texts once and save every feature's "
                       "dashboard (for `serve --dashboards` and `export --dashboards`).")
    model_options(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--texts", nargs="*", default=None, metavar="FILE",
                   help=".txt or .jsonl files; default: the offline corpus (docs/training.md)")
    p.add_argument("--n-texts", type=int, default=256, help="read at most this many texts")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens per text")
    p.add_argument("--n-top", type=int, default=16, help="top contexts per feature")
    p.add_argument("--context", type=int, default=8, help="tokens shown on each side")
    p.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(func=run_dashboards)


def run_dashboards(args: argparse.Namespace) -> int:
    import tl_circuits as tc
    from tl_circuits.training.corpus import default_texts, read_text_files

    load = model_loader(args.model)
    transcoders = load_transcoders(transcoder_path(args.transcoders, args.model))
    texts = read_text_files(args.texts) if args.texts else default_texts()
    model = load()
    tc.build_dashboards(model, transcoders, texts[: args.n_texts], out_path=args.out, n_top=args.n_top,
                        context=args.context, batch_size=args.batch_size, max_tokens_per_text=args.max_tokens)
    say(f"saved dashboards to {args.out}")
    return 0


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train per-layer or cross-layer transcoders for a model",
        description="Train transcoders for every MLP of a model and save them (SAELens "
        "directories, or a circuit-tracer CLT directory with --cross-layer). An interrupted "
        "run resumes from its checkpoint when started again with the same settings. Under "
        "`torchrun --nproc_per_node N -m tl_circuits.cli train ...` the N processes train one "
        "set together (docs/training.md).",
    )
    p.add_argument("--model", default="default",
                   help="'default' (the embedded SmolLM2-135M-Instruct) or a local Hugging Face "
                   "model directory saved with save_pretrained (Llama, Qwen2, Qwen3, GPT-2, Gemma-2)")
    p.add_argument("--texts", nargs="*", default=None, metavar="FILE",
                   help=".txt files (one text each) or .jsonl files ({'text': ...} per line); "
                   "default: the offline corpus described in docs/training.md")
    p.add_argument("--corpus", default=None, metavar="SOURCE",
                   help="instead of --texts, a corpus read as far as the run needs: a .txt/.jsonl/"
                   ".parquet file or folder, a `datasets` save_to_disk folder, or hf://org/name "
                   "(streamed; needs a connection)")
    p.add_argument("--field", default="text", help="the text's field (JSON lines, Parquet, datasets)")
    p.add_argument("--split", default="train", help="the split of a `datasets` dataset")
    p.add_argument("--cache-dir", default=None,
                   help="keep the activations in an activation cache here, reused by later runs")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--kind", choices=("topk", "jumprelu"), default="topk")
    p.add_argument("--skip", action="store_true", help="add a linear skip connection")
    p.add_argument("--cross-layer", action="store_true", help="train a cross-layer transcoder")
    p.add_argument("--d-sae", type=int, default=None, help="features per layer (default 4*d_model)")
    p.add_argument("--k", type=int, default=32, help="active features per token (TopK)")
    p.add_argument("--steps", type=int, default=None, help="training steps (overrides --tokens)")
    p.add_argument("--tokens", type=int, default=1_000_000, help="training tokens")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop after this many minutes of training (--steps/--tokens then cap it)")
    p.add_argument("--reuse", type=int, default=1,
                   help="steps each buffered model activation serves (1: a model forward per step)")
    p.add_argument("--batch", type=int, default=32, help="contexts per step")
    p.add_argument("--ctx-len", type=int, default=128, help="tokens per context")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--sparsity-coef", type=float, default=1e-3, help="L0 penalty (JumpReLU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hook-in", default="blocks.{l}.ln2.hook_normalized")
    p.add_argument("--hook-out", default="blocks.{l}.hook_mlp_out")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
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
        corpus=args.corpus, field=args.field, split=args.split, cache_dir=args.cache_dir,
        time_budget=None if args.minutes is None else 60 * args.minutes, reuse=args.reuse,
    )
    say(f"saved transcoders to {args.out}")
    return 0


def add_transcoders(sub: argparse._SubParsersAction) -> None:
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
    c.set_defaults(func=run_transcoders_convert)


def run_transcoders_convert(args: argparse.Namespace) -> int:
    import torch

    from tl_circuits.transcoders import convert_transcoders

    if os.path.exists(args.dir) and not os.path.isdir(args.dir):
        raise FileFormatError(f"{args.dir} is a file; give a folder to write the converted set to.")
    dtype = None if args.dtype is None else getattr(torch, args.dtype)
    convert_transcoders(args.source, args.dir, layers=args.layers, ids=args.ids, dtype=dtype)
    say(f"wrote {args.dir}; load it with tl_circuits.load_transcoders({args.dir!r}, lazy=True)")
    return 0
