"""What a command or script needs before it can trace: a model from a name or folder, and the
transcoders that go with it (a folder the user names, or the cached demo set).

Used by ``tl-circuits`` (``--model`` / ``--transcoders``), the demo and the examples; nothing here
prints or trains. ``--model default`` is SmolLM2-135M-Instruct (:mod:`tl_circuits.models`); any
other value is the folder of a Hugging Face model saved with ``save_pretrained``, loaded offline.
The demo's transcoder sets are cached under :func:`tl_circuits.training.corpus.cache_home`, one
folder per training budget (:data:`BUDGETS`); :mod:`tl_circuits.demo` trains them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tl_circuits.errors import ConfigError, FileFormatError

#: Training settings per budget; changing them trains a new set (the folder name holds them).
#: The default set trains for ``minutes`` (so the first ``make demo`` lands in about 15 minutes
#: on 2 cores whatever their speed; ``steps`` only caps it), on buffered activations each reused
#: for ``reuse`` steps (docs/default-model.md has the measurements behind these choices).
BUDGETS: dict[str, dict[str, Any]] = {
    "default": dict(kind="topk", d_sae=1024, k=32, skip=True, steps=4000, batch=8, ctx_len=128,
                    lr=3e-3, seed=0, minutes=8.0, reuse=4),
    "small": dict(kind="topk", d_sae=256, k=16, steps=8, batch=4, ctx_len=64, lr=3e-3, seed=0),
}
DEMO_SETTINGS = BUDGETS["default"]
#: Names the default corpus in the cache folders (a new corpus trains a new set).
CORPUS_VERSION = "facts-gen1"


def train_settings(budget: str) -> dict[str, Any]:
    """``train_transcoders`` keyword arguments of a budget (``minutes`` -> ``time_budget``)."""
    s = dict(BUDGETS[budget])
    minutes = s.pop("minutes", None)
    if minutes:
        s["time_budget"] = 60.0 * minutes
    return s


#: Texts (from the default corpus) and tokens per text read for the dashboards of each budget.
DASHBOARD_TEXTS = {"default": (96, 128), "small": (8, 48)}


def demo_dir(budget: str = "default") -> Path:
    """Folder of the cached demo transcoders of ``budget`` ("default" or "small")."""
    from tl_circuits.training.corpus import cache_home

    s = BUDGETS[budget]
    name = f"smollm2-135m-{s['kind']}{'-skip' if s.get('skip') else ''}-{s['d_sae']}-k{s['k']}-s{s['steps']}x{s['batch']}"
    if s["ctx_len"] != 128:
        name += f"-c{s['ctx_len']}"
    if s.get("minutes"):
        name += f"-m{s['minutes']:g}"
    if s.get("reuse", 1) > 1:
        name += f"-r{s['reuse']}"
    name += f"-{CORPUS_VERSION}"
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
def default_model() -> Any:
    """SmolLM2-135M-Instruct as a HookedTransformer, loaded once per process."""
    from tl_circuits.models import load_default

    return load_default()


def model_loader(spec: str) -> Callable[[], Any]:
    """Check ``--model`` now (a ConfigError if it cannot work); return a function that loads it.

    ``"default"``: SmolLM2 (:func:`default_model`); else a local Hugging Face folder, loaded as an
    ``HFHost``. Used by ``tl-circuits`` so that a typo fails in a second, before any loading.
    """
    if spec == "default":
        return default_model
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

        from tl_circuits.hosts.hf import HFHost

        try:
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise ConfigError(f"--model {spec!r}: cannot load a Hugging Face model from {path}: "
                              f"{str(err).splitlines()[0]}") from err
        model.eval().requires_grad_(False)
        return HFHost(model, tokenizer)
    return load_local


def transcoder_path(arg: str | None, model: str) -> Path | str:
    """The ``--transcoders`` source: a local folder or file (checked to exist), any other source
    :func:`tl_circuits.load_transcoders` reads (``hf://org/repo``, ``org/repo@rev``, a sae_lens
    release name), or, when none is given, the cached demo set."""
    if arg is not None:
        path = Path(arg).expanduser()
        looks_local = path.exists() or arg.startswith((".", "/", "~")) or arg.endswith(".yaml")
        if looks_local and not path.exists():
            raise FileFormatError(
                f"--transcoders {arg}: no such folder or file; pass a folder of SAELens "
                "transcoders, a circuit-tracer CLT folder or config.yaml, or a release reference "
                "(hf://org/repo, org/repo@revision, a sae_lens release name)."
            )
        return path if looks_local else arg
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


def load_transcoders(source: Path | str) -> Any:
    """The transcoders at ``source`` (:func:`tl_circuits.load_transcoders`: any local format,
    Hugging Face reference or sae_lens release)."""
    from tl_circuits.transcoders.releases.load import load_transcoders as load

    return load(source)
