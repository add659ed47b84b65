"""Training text: the user's files or the default offline corpus, cut into fixed-length contexts.

The default corpus (:func:`default_texts`) is English that needs no download: short encyclopedic
paragraphs about countries, landmarks, athletes, people and everyday reasoning written from the
fact tables of :mod:`tl_circuits.training.facts` (about 40k SmolLM2 tokens), shuffled with prose
SmolLM2 wrote itself from varied openings, shipped in the package
(:mod:`tl_circuits.training.generated`, about 117k tokens). Until 0.2 the prose part was Python's
pydoc topics; the generated prose trains transcoders that score better on both corpora's held-out
text and on the demo's graphs (docs/default-model.md). :func:`generated_corpus` samples new text
from any model at run time (slow on a CPU: docs/training.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int

from tl_circuits._atomic import atomic_path
from tl_circuits.errors import ConfigError
from tl_circuits.training.generated import SEEDS, sample_rounds, shipped_texts
from tl_circuits.training.sources import pack_contexts, read_all

CACHE_ENV = "TL_CIRCUITS_CACHE"

#: Openings :func:`generated_corpus` continues (those of the shipped generated prose).
SEED_PROMPTS: tuple[str, ...] = SEEDS


def cache_home() -> Path:
    """``$TL_CIRCUITS_CACHE``, else ``$XDG_CACHE_HOME/tl_circuits``, else ``~/.cache/tl_circuits``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "tl_circuits"


def writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed and check a file can be written there (ConfigError if not)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"the {what} {path} is not writable ({exc.strerror or exc}); choose another folder, "
            f"e.g. set {CACHE_ENV}=/some/writable/dir."
        ) from exc
    return path


def read_text_files(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Texts from files: ``.jsonl`` (one JSON object with a ``"text"`` field per line),
    ``.parquet`` (a ``text`` column), plain text (one text per file), or any other corpus of
    :mod:`tl_circuits.training.sources`."""
    return list(read_all(list(paths)))


def tokenize_contexts(
    tokenizer: Any, texts: Sequence[str], ctx_len: int, *, bos_token_id: int | None = None
) -> Int[torch.Tensor, "n_ctx ctx_len"]:
    """Concatenate the texts (EOS after each) and cut the tokens into ``ctx_len`` windows: the
    packing rule of :mod:`tl_circuits.training.sources` (:func:`~.sources.pack_contexts`).

    With ``bos_token_id`` each window is ``[BOS] + ctx_len - 1`` tokens. Raises ConfigError when
    there is no text or not enough for one window.
    """
    return pack_contexts(tokenizer, [texts] if isinstance(texts, str) else texts, ctx_len,
                         bos_token_id=bos_token_id, source_name="the training text")


def default_texts(model: Any = None, *, progress: bool = True) -> list[str]:
    """The default offline corpus: the fact paragraphs of :func:`tl_circuits.training.facts.fact_texts`
    and the prose SmolLM2 wrote (:func:`tl_circuits.training.generated.shipped_texts`), shuffled
    together in a fixed order (so the held-out tail has both). ``model`` and ``progress`` are
    accepted for symmetry with :func:`generated_corpus` and unused.

    Example:
        >>> texts = default_texts()
        >>> any(t.startswith("Q: What is the capital of") for t in texts)
        True
    """
    import random

    from tl_circuits.training.facts import fact_texts

    texts = fact_texts() + shipped_texts()
    random.Random(0).shuffle(texts)
    return texts


def generated_corpus(
    model: Any,
    *,
    n_tokens: int = 60_000,
    max_new_tokens: int = 96,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> list[str]:
    """Text the model samples from :data:`SEED_PROMPTS` (temperature 1), cached as JSON.

    The cache file is keyed by the model's name, its settings and the seed list, so another model
    or setting generates afresh.
    """

    name = str(getattr(model.cfg, "model_name", "model"))
    key = hashlib.sha256(
        json.dumps([name, n_tokens, max_new_tokens, seed, SEED_PROMPTS]).encode()
    ).hexdigest()[:12]
    directory = writable_dir(cache_dir or cache_home() / "corpus", "corpus cache directory")
    path = directory / f"generated-{name}-{key}.json"
    if path.is_file():
        return list(json.loads(path.read_text(encoding="utf-8"))["texts"])
    per_round = len(SEED_PROMPTS) * max_new_tokens
    torch.manual_seed(seed)

    def sample(prompts: list[str]) -> list[str]:
        with torch.no_grad():
            return model.generate(prompts, max_new_tokens=max_new_tokens, do_sample=True,
                                  temperature=1.0, verbose=False, use_past_kv_cache=True)

    texts = sample_rounds(SEED_PROMPTS, max(1, -(-n_tokens // per_round)), sample, seed=seed,
                          desc="generating default corpus", progress=progress)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"model": name, "texts": texts}), encoding="utf-8")
    return texts


def split_contexts(
    contexts: Int[torch.Tensor, "n ctx_len"], eval_fraction: float
) -> tuple[Int[torch.Tensor, "n_train ctx_len"], Int[torch.Tensor, "n_eval ctx_len"]]:
    """(training, held-out) contexts: the last ``eval_fraction`` of them are held out (at least
    one when there are two or more), as ``train_transcoders`` does."""
    n = len(contexts)
    n_eval = min(n - 1, max(1, round(eval_fraction * n))) if n > 1 else 0
    return contexts[: n - n_eval], contexts[n - n_eval :]
