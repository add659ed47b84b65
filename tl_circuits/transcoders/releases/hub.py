"""Hugging Face references (``hf://org/repo[/path][?revision=rev]`` and ``org/repo[/path][@rev]``)
resolved through ``huggingface_hub``: the user's cache first; with ``HF_HUB_OFFLINE=1`` a file
that is not cached is an error that names the command to download it.

``huggingface_hub`` is imported only here, when a reference is resolved.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from tl_circuits.errors import ConfigError, FileFormatError

_SHORT = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?P<path>(?:/[^@?]+)*)/?(?:@(?P<rev>[\w./-]+))?$")


@dataclass(frozen=True)
class HubRef:
    """A repository, a path inside it ("" for the root) and a revision (None: main)."""

    repo_id: str
    path: str = ""
    revision: str | None = None

    def join(self, name: str) -> str:
        """``name`` relative to the repository root, inside this reference's folder."""
        return f"{self.path}/{name}" if self.path else name

    def at(self, path: str) -> HubRef:
        return HubRef(self.repo_id, path.strip("/"), self.revision)

    def __str__(self) -> str:
        tail = f"/{self.path}" if self.path else ""
        rev = f"?revision={self.revision}" if self.revision else ""
        return f"hf://{self.repo_id}{tail}{rev}"


def parse_hub_ref(text: str) -> HubRef | None:
    """A :class:`HubRef` for ``hf://...`` or ``org/repo[/path][@rev]`` text, else None.

    Example:
        >>> parse_hub_ref("hf://mntss/clt-gemma-2-2b-426k?revision=abc")
        HubRef(repo_id='mntss/clt-gemma-2-2b-426k', path='', revision='abc')
        >>> parse_hub_ref("google/gemma-scope-2b-pt-transcoders/layer_3@main").path
        'layer_3'
    """
    if text.startswith("hf://"):
        parsed = urlparse(text)
        parts = parsed.path.strip("/").split("/", 1)
        if not parsed.netloc or not parts[0]:
            raise ConfigError(f"{text!r} is not a Hugging Face reference; expected hf://org/repo[/path][?revision=...].")
        revision = parse_qs(parsed.query).get("revision", [None])[0] or None
        return HubRef(f"{parsed.netloc}/{parts[0]}", parts[1].strip("/") if len(parts) > 1 else "", revision)
    match = _SHORT.match(text)
    if match is None:
        return None
    return HubRef(match.group("repo"), match.group("path").strip("/"), match.group("rev"))


def _require_hub() -> None:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise ConfigError("Hugging Face references need huggingface_hub: pip install "
                          "'tl-circuits[releases]' (it also comes with transformers).") from None


def offline() -> bool:
    """Whether downloads are forbidden (``HF_HUB_OFFLINE``)."""
    _require_hub()
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    return bool(constants.HF_HUB_OFFLINE) or env


def _download_hint(ref: HubRef, what: str) -> str:
    rev = f" --revision {ref.revision}" if ref.revision else ""
    return f"hf download {ref.repo_id} {what}{rev}"


def cached(ref: HubRef, filename: str) -> Path | None:
    """The cached copy of ``filename`` (relative to the repository root), or None."""
    _require_hub()
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref.repo_id, filename, revision=ref.revision)
    return Path(found) if isinstance(found, str) else None


def exists(ref: HubRef, filename: str) -> bool:
    """Whether the repository has ``filename``: in the cache, or (online) on the Hub."""
    if cached(ref, filename) is not None:
        return True
    if offline():
        return False
    from huggingface_hub import HfApi

    try:
        return HfApi().file_exists(ref.repo_id, filename, revision=ref.revision)
    except Exception as exc:  # noqa: BLE001 - any Hub failure reads as "cannot tell"
        raise FileFormatError(f"cannot reach {ref} on the Hugging Face Hub ({exc}).") from exc


def fetch(ref: HubRef, filename: str) -> Path:
    """A local path of ``filename``: the cached copy, else (online) a download into the cache."""
    found = cached(ref, filename)
    if found is not None:
        return found
    if offline():
        raise FileFormatError(
            f"{ref}: {filename} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids "
            f"downloading it. Download it once with `{_download_hint(ref, filename)}` (or unset "
            "HF_HUB_OFFLINE), then load again."
        )
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(ref.repo_id, filename, revision=ref.revision))
    except Exception as exc:  # noqa: BLE001 - reported with the reference and the file
        raise FileFormatError(f"cannot download {filename} of {ref} ({type(exc).__name__}: {exc}).") from exc


def list_files(ref: HubRef, folder: str) -> list[str]:
    """Files directly inside ``folder`` of the repository (paths from the root), from the cached
    snapshot when offline, else from the Hub."""
    prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
    if offline():
        snapshot = _cached_snapshot(ref)
        if snapshot is None:
            raise FileFormatError(
                f"{ref} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading "
                f"it. Download it once with `{_download_hint(ref, f'--include {prefix}*')}` (or "
                "unset HF_HUB_OFFLINE), then load again."
            )
        base = snapshot / prefix if prefix else snapshot
        names = sorted(p.name for p in base.iterdir()) if base.is_dir() else []
        return [prefix + n for n in names]
    from huggingface_hub import HfApi

    try:
        names = HfApi().list_repo_files(ref.repo_id, revision=ref.revision)
    except Exception as exc:  # noqa: BLE001
        raise FileFormatError(f"cannot list the files of {ref} ({exc}).") from exc
    return sorted(n for n in names if n.startswith(prefix) and "/" not in n[len(prefix):])


def _cached_snapshot(ref: HubRef) -> Path | None:
    from huggingface_hub import constants

    root = Path(constants.HF_HUB_CACHE) / f"models--{ref.repo_id.replace('/', '--')}"
    revision = ref.revision or "main"
    commit = revision
    ref_file = root / "refs" / revision
    if ref_file.is_file():
        commit = ref_file.read_text().strip()
    snapshot = root / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None
