"""sae_lens release names (``gemma-scope-2-270m-pt-transcoders`` and ids): where their files are,
from sae_lens' own registry when it is installed, else from the naming patterns of the
transcoder releases below; and the readers of those files.

=============================================  ========================================  ==================
release name pattern                           repository                                reader (sae_lens conversion)
=============================================  ========================================  ==================
gemma-scope-2b-pt-transcoders                  google/gemma-scope-2b-pt-transcoders      GemmaScope npz (gemma_2_transcoder)
gemma-scope-2-{size}-{pt,it}-transcoders[-all] google/gemma-scope-2-{size}-{pt,it}       GemmaScope 2 (gemma_3)
mwhanna-qwen3-{size}-transcoders[-lowl0]       mwhanna/qwen3-{size}-transcoders[-lowl0]  circuit-tracer file (mwhanna_transcoder)
mntss-gemma-2-2b-2.5m-clt-as-per-layer         mntss/clt-gemma-2-2b-2.5M                 the whole CLT (mntss_clt_layer_transcoder)
=============================================  ========================================  ==================

The mntss release is read as the cross-layer transcoder it is (sae_lens sums its decoders into one
per layer, which is right for activations only, not for reconstructions and graphs).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tl_circuits.errors import ConfigError, FileFormatError
from tl_circuits.transcoders.releases import file_readers as fr
from tl_circuits.transcoders.releases import hub
from tl_circuits.transcoders.releases.layout import LayerRefs, ReleaseSpec
from tl_circuits.transcoders.releases.sources import Locator, clt_folder, load_yaml

#: Conversions whose per-layer transcoders sae_lens converts faithfully (the sae_lens route).
SAE_LENS_ROUTE = ("gemma_2_transcoder", "gemma_3", "mwhanna_transcoder", None)

#: (release name pattern, repository template, sae_lens conversion, prefix of paths before ids,
#: suffix after them): for when sae_lens is not installed.
PATTERNS: list[tuple[str, str, str, str, str]] = [
    (r"gemma-scope-2b-pt-transcoders", "google/gemma-scope-2b-pt-transcoders", "gemma_2_transcoder", "", ""),
    (r"gemma-scope-2-(?P<size>[\w.]+)-(?P<tune>pt|it)-transcoders-all",
     "google/gemma-scope-2-{size}-{tune}", "gemma_3", "transcoder_all/", ""),
    (r"gemma-scope-2-(?P<size>[\w.]+)-(?P<tune>pt|it)-transcoders", "google/gemma-scope-2-{size}-{tune}",
     "gemma_3", "", ""),
    (r"mwhanna-qwen3-(?P<size>[\d.]+b)-transcoders(?P<tail>-lowl0)?", "mwhanna/qwen3-{size}-transcoders{tail}",
     "mwhanna_transcoder", "", ".safetensors"),
    (r"mntss-gemma-2-2b-2\.5m-clt-as-per-layer", "mntss/clt-gemma-2-2b-2.5M", "mntss_clt_layer_transcoder",
     "", ""),
]


@dataclass(frozen=True)
class Release:
    """One release: its repository, sae_lens conversion and id -> path table (empty when only
    the naming pattern is known; then ids map through ``prefix`` / ``suffix``)."""

    name: str
    repo_id: str
    conversion: str | None
    paths: dict[str, str] = field(default_factory=dict)
    prefix: str = ""
    suffix: str = ""

    def path(self, sae_id: str) -> str:
        if self.paths:
            if sae_id not in self.paths:
                some = ", ".join(list(self.paths)[:4])
                raise ConfigError(f"release {self.name!r} has no id {sae_id!r}; ids look like {some}, ...")
            return self.paths[sae_id]
        if self.conversion == "mntss_clt_layer_transcoder":
            return sae_id.removeprefix("layer_")
        return f"{self.prefix}{sae_id}{self.suffix}"


def sae_lens_available() -> bool:
    try:
        import sae_lens.loading.pretrained_saes_directory  # noqa: F401
    except ImportError:
        return False
    return True


def lookup(name: str) -> Release | None:
    """The release called ``name`` (sae_lens' registry first), or None if it is not one."""
    if sae_lens_available():
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        entry = get_pretrained_saes_directory().get(name)
        if entry is not None:
            return Release(name, entry.repo_id, entry.conversion_func, dict(entry.saes_map))
    for pattern, repo, conversion, prefix, suffix in PATTERNS:
        match = re.fullmatch(pattern, name)
        if match is not None:
            groups = {k: v or "" for k, v in match.groupdict().items()}
            return Release(name, repo.format(**groups), conversion, prefix=prefix, suffix=suffix)
    return None


def default_ids(release: Release) -> list[str]:
    """Every id of a release that has one transcoder per layer (else a ConfigError asking for ids)."""
    if release.conversion == "mntss_clt_layer_transcoder":
        return []
    if release.paths:
        layers = [fr.layer_in_path(p) for p in release.paths.values()]
        if None not in layers and len(set(layers)) == len(layers):
            return list(release.paths)
    elif release.conversion == "mwhanna_transcoder":
        files = hub.list_files(hub.HubRef(release.repo_id), "")
        return sorted((n.removesuffix(".safetensors") for n in files if re.fullmatch(r"layer_\d+\.safetensors", n)),
                      key=lambda n: int(n.split("_")[1]))
    some = ", ".join(list(release.paths)[:3]) or "see the release's Hugging Face page"
    raise ConfigError(
        f"release {release.name!r} has several transcoders per layer (widths, L0s); pass ids=[...] "
        f"with one per layer ({some})."
    )


def read_release(release: Release, ids: Sequence[str] | None, layers: list[int] | None) -> ReleaseSpec:
    """The release's files as a spec, read by tl_circuits' own readers (no sae_lens)."""
    ref = hub.HubRef(release.repo_id)
    if release.conversion == "mntss_clt_layer_transcoder":
        if ids is not None:
            raise ConfigError(f"{release.name} is one cross-layer transcoder; it loads whole: leave ids=None.")
        root = Locator(ref=ref)
        cfg = load_yaml(root.file("config.yaml")) if root.has("config.yaml") else {}
        return clt_folder(root, cfg.get("feature_input_hook", "hook_resid_mid"),
                           cfg.get("feature_output_hook", "hook_mlp_out"), cfg, f"{ref} ({release.name})")
    refs: dict[int, LayerRefs] = {}
    kinds = set()
    for sae_id in ids if ids is not None else default_ids(release):
        path = release.path(sae_id)
        layer = fr.layer_in_path(path if release.conversion != "mwhanna_transcoder" else sae_id)
        if layer is None:
            raise ConfigError(f"cannot tell the layer of id {sae_id!r} of {release.name} (no layer_N in {path!r}).")
        if layers is not None and layer not in layers:
            continue
        if layer in refs:
            raise ConfigError(f"ids {list(ids or [])} give two transcoders for layer {layer}; pass one id per layer.")
        refs[layer], activation, k = _layer(release, ref, path, layer)
        kinds.add((activation, k))
    if not refs:
        raise ConfigError(f"no transcoders of {release.name} selected (ids={ids}, layers={layers}).")
    if len(kinds) != 1:
        raise ConfigError(f"the ids of {release.name} mix activations {sorted(kinds, key=str)}; a set shares one.")
    activation, k = kinds.pop()
    return ReleaseSpec("per_layer", dict(sorted(refs.items())), activation, f"{release.name} ({ref})", k=k)


def _layer(release: Release, ref: hub.HubRef, path: str, layer: int) -> tuple[LayerRefs, str, int | None]:
    """(tensors, activation, k) of one id; activations as sae_lens converts them."""
    conversion = release.conversion
    if conversion == "gemma_2_transcoder":
        refs = fr.gemmascope_npz_layer(hub.fetch(ref, f"{path}/params.npz"), layer,
                                       f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out")
        return refs, "jumprelu", None
    if conversion == "gemma_3":
        if "clt" in path:
            raise ConfigError(f"{release.name}: {path} is part of a cross-layer transcoder; load its "
                              "circuit-tracer config.yaml (hf://...) instead.")
        folder = Locator(ref=ref.at(path))
        config = folder.file("config.json") if folder.has("config.json") else None
        hook_in, hook_out = fr.gemmascope2_sites(config, layer)
        return fr.gemmascope2_layer(folder.file("params.safetensors"), layer, hook_in, hook_out), "jumprelu", None
    if conversion == "mwhanna_transcoder":
        refs = fr.circuit_tracer_layer(hub.fetch(ref, path), layer, f"blocks.{layer}.mlp.hook_in",
                                       f"blocks.{layer}.hook_mlp_out")
        return refs, "relu" if refs.threshold is None else "jumprelu", None
    if conversion is None:
        folder = Locator(ref=ref.at(path))
        cfg_path: Path = folder.file("cfg.json")
        folder.file("sae_weights.safetensors")
        return fr.saelens_layer(cfg_path.parent)
    raise FileFormatError(
        f"release {release.name!r} uses sae_lens conversion {conversion!r}, which is not a transcoder "
        "format tl_circuits reads (GemmaScope, GemmaScope 2, Qwen3, mntss CLT, SAELens folders)."
    )
