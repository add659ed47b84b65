"""Training corpora in any format, read lazily, and packed into fixed-length token contexts.

A corpus is one of:

- a list of strings (the texts themselves);
- a text file (``.txt``, ``.md`` or any other suffix: the whole file is one text);
- a JSON-lines file (``.jsonl``: one object per line, the text in ``field``);
- a Parquet file (``.parquet``: the text in column ``field``; needs ``pyarrow``);
- a folder written by ``datasets``' ``save_to_disk`` (read with ``load_from_disk``; a
  ``DatasetDict`` gives its ``split``), or a plain folder of the files above (sorted by name);
- a ``datasets.Dataset`` / ``IterableDataset`` object;
- a Hugging Face dataset name, written ``"hf://org/name"``, streamed with ``datasets.load_dataset(name, split=split, streaming=True)``; offline
  (``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1``) this is a clear :class:`ConfigError`.

Packing rule (:func:`pack_contexts`, also behind ``training.corpus.tokenize_contexts``): every text is
encoded without special tokens and followed by EOS (when the tokenizer has one); the texts are
concatenated in order and cut into windows of ``ctx_len - 1`` tokens when the model's tokenizer
puts BOS in front of a text (BOS is then prepended to every window), else ``ctx_len`` tokens.
The last, incomplete window is dropped. Texts are read only as far as the requested number of
contexts, so a corpus of billions of tokens is never read whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int

from tl_circuits.errors import ConfigError

TEXT_SUFFIXES = (".txt", ".md", ".text", ".jsonl", ".parquet")
_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def _lazy_import(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"reading {what} needs the '{module}' package, which is not installed; "
            f"install it with `pip install {module.split('.')[0]}` (or `pip install "
            "'tl-circuits[corpora]'`)."
        ) from exc


def describe(source: Any) -> str:
    """A short name of a corpus for messages and cache keys."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (list, tuple)):
        return f"{len(source)} texts"
    return type(source).__name__


def iter_texts(source: Any, *, field: str = "text", split: str = "train") -> Iterator[str]:
    """The texts of ``source`` (see the module docstring), one by one, read lazily.

    Raises ConfigError for a missing path, a missing field (naming the fields there are), an
    unreadable file, or a dataset name while offline.

    Example:
        >>> list(iter_texts(["a cat", "a dog"]))
        ['a cat', 'a dog']
    """
    if isinstance(source, str) and source.startswith("hf://"):
        yield from _hub_texts(source.removeprefix("hf://"), field, split)
        return
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_file():
            yield from _file_texts(path, field)
        elif path.is_dir():
            if any((path / m).is_file() for m in _DATASET_MARKERS):
                datasets = _lazy_import("datasets", f"the dataset folder {path}")
                yield from _dataset_texts(datasets.load_from_disk(str(path)), field, split, str(path))
                return
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
            if not files:
                raise ConfigError(f"the corpus folder {path} holds no {'/'.join(TEXT_SUFFIXES)} "
                                  "files and is not a `datasets` save_to_disk folder.")
            for f in files:
                yield from _file_texts(f, field)
        else:
            raise ConfigError(f"the corpus {source} does not exist; give a text/JSON-lines/Parquet "
                              "file, a folder, a `datasets` folder, or write a Hugging Face "
                              "dataset name as 'hf://org/name'.")
        return
    if isinstance(source, (list, tuple)):
        for text in source:
            if not isinstance(text, str):
                raise ConfigError(f"a corpus given as a list holds texts (str), found "
                                  f"{type(text).__name__}; pass file paths as a single path.")
            yield text
        return
    if hasattr(source, "column_names") or hasattr(source, "features"):
        yield from _dataset_texts(source, field, split, type(source).__name__)
        return
    raise ConfigError(f"cannot read a corpus from a {type(source).__name__}; give a list of "
                      "texts, a path, a `datasets` dataset or 'hf://org/name'.")


def _file_texts(path: Path, field: str) -> Iterator[str]:
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{n} is not JSON ({exc}); write one object per "
                                      "line.") from exc
                if not isinstance(row, dict) or field not in row:
                    keys = sorted(row) if isinstance(row, dict) else type(row).__name__
                    raise ConfigError(f"{path}:{n} has no field {field!r} (it has {keys}); pass "
                                      "field= (--field) naming the text's field.")
                yield str(row[field])
    elif path.suffix == ".parquet":
        pq = _lazy_import("pyarrow.parquet", f"the Parquet file {path}")
        parquet = pq.ParquetFile(str(path))
        names = parquet.schema_arrow.names
        if field not in names:
            raise ConfigError(f"the Parquet file {path} has no column {field!r} (it has "
                              f"{names}); pass field= (--field) naming the text's column.")
        for batch in parquet.iter_batches(columns=[field], batch_size=1024):
            yield from (str(t) for t in batch.column(0).to_pylist() if t is not None)
    else:
        yield path.read_text(encoding="utf-8", errors="replace")


def _dataset_texts(ds: Any, field: str, split: str, name: str) -> Iterator[str]:
    if hasattr(ds, "keys") and not hasattr(ds, "column_names"):  # a DatasetDict
        if split not in ds:
            raise ConfigError(f"the dataset {name} has no split {split!r} (it has "
                              f"{sorted(ds.keys())}); pass split= (--split).")
        ds = ds[split]
    elif hasattr(ds, "keys") and split in getattr(ds, "keys", lambda: ())():
        ds = ds[split]
    columns = getattr(ds, "column_names", None)
    if columns is not None and field not in columns:
        raise ConfigError(f"the dataset {name} has no field {field!r} (it has {list(columns)}); "
                          "pass field= (--field) naming the text's column.")
    for row in ds:
        if field not in row:
            raise ConfigError(f"the dataset {name} has no field {field!r} (it has "
                              f"{sorted(row)}); pass field= (--field).")
        yield str(row[field])


def _hub_texts(name: str, field: str, split: str) -> Iterator[str]:
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise ConfigError(
            f"the corpus {name!r} is a Hugging Face dataset name, but this process is offline "
            "(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE=1); download it first (datasets.load_dataset(...)"
            ".save_to_disk(DIR)) and pass DIR, or give a local file."
        )
    datasets = _lazy_import("datasets", f"the Hugging Face dataset {name!r}")
    try:
        ds = datasets.load_dataset(name, split=split, streaming=True)
    except (OSError, ConnectionError, ValueError) as exc:
        raise ConfigError(f"could not open the Hugging Face dataset {name!r} ({exc}); check the "
                          "name and your connection, or pass a local copy.") from exc
    yield from _dataset_texts(ds, field, split, name)


def pack_contexts(
    tokenizer: Any, texts: Iterable[str], ctx_len: int, *, bos_token_id: int | None = None,
    n_contexts: int | None = None, source_name: str = "the corpus",
) -> Int[torch.Tensor, "n_ctx ctx_len"]:
    """Encode ``texts`` and pack them into contexts (the module's packing rule), stopping after
    ``n_contexts`` (all when None).

    Raises ConfigError when there is no text, when it is shorter than one context, or when it
    holds fewer than ``n_contexts`` contexts (saying how many tokens and contexts it holds).

    Example:
        >>> from transformers import AutoTokenizer  # doctest: +SKIP
        >>> pack_contexts(tokenizer, ["some text ..."], 128, bos_token_id=1).shape  # doctest: +SKIP
        torch.Size([n, 128])
    """
    if ctx_len < 1 + (bos_token_id is not None):
        raise ConfigError(f"ctx_len={ctx_len} leaves no room for text; use ctx_len >= 2.")
    body = ctx_len - (bos_token_id is not None)
    sep = getattr(tokenizer, "eos_token_id", None)
    rows: list[list[int]] = []
    pending: list[int] = []
    n_tokens, n_texts = 0, 0
    for text in texts:
        if not text or not text.strip():
            continue
        n_texts += 1
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if sep is not None:
            ids.append(int(sep))
        n_tokens += len(ids)
        pending += ids
        while len(pending) >= body and (n_contexts is None or len(rows) < n_contexts):
            rows.append(pending[:body])
            pending = pending[body:]
        if n_contexts is not None and len(rows) >= n_contexts:
            break
    if n_texts == 0:
        raise ConfigError(f"no training text: {source_name} holds no text (every text is "
                          "empty); give at least one non-empty text (or file).")
    if not rows:
        raise ConfigError(f"{source_name} is {n_tokens} tokens, shorter than one context of "
                          f"{body} tokens; give more text or a smaller ctx_len.")
    if n_contexts is not None and len(rows) < n_contexts:
        raise ConfigError(
            f"{source_name} holds {n_tokens} tokens ({len(rows)} contexts of {ctx_len}), fewer "
            f"than the {n_contexts} contexts ({n_contexts * body} tokens) the run needs; give "
            "more text, or fewer tokens/steps."
        )
    out = torch.tensor(rows, dtype=torch.long)
    if bos_token_id is not None:
        out = torch.cat([torch.full((len(rows), 1), bos_token_id, dtype=torch.long), out], dim=1)
    return out


def read_contexts(
    tokenizer: Any, source: Any, ctx_len: int, *, bos_token_id: int | None = None,
    n_contexts: int | None = None, field: str = "text", split: str = "train",
) -> Int[torch.Tensor, "n_ctx ctx_len"]:
    """:func:`pack_contexts` of :func:`iter_texts`: ``n_contexts`` contexts of any corpus."""
    return pack_contexts(tokenizer, iter_texts(source, field=field, split=split), ctx_len,
                         bos_token_id=bos_token_id, n_contexts=n_contexts,
                         source_name=f"the corpus {describe(source)}")


def read_all(sources: Sequence[Any], *, field: str = "text", split: str = "train") -> Iterator[str]:
    """The texts of several corpora one after the other (the CLI's ``--texts A B``)."""
    for source in sources:
        yield from iter_texts(source, field=field, split=split)
