"""From what the user names (a local path, a list of folders, an ``hf://`` or ``org/repo@rev``
reference, a circuit-tracer ``config.yaml``) to a :class:`~.layout.ReleaseSpec`.

A folder is recognised by what it holds, in this order: ``config.yaml`` (a circuit-tracer set),
``cfg.json`` (one SAELens transcoder), ``W_enc_0.safetensors`` (a circuit-tracer cross-layer
transcoder), ``params.safetensors`` (GemmaScope 2), ``params.npz`` (GemmaScope), sub-folders
with ``cfg.json`` (a SAELens set, local only). A file by its suffix and, for safetensors, its keys.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tl_circuits.errors import ConfigError, FileFormatError
from tl_circuits.transcoders import saelens_io
from tl_circuits.transcoders.hook_vocabulary import canonical_hook
from tl_circuits.transcoders.releases import file_readers as fr
from tl_circuits.transcoders.releases import hub
from tl_circuits.transcoders.releases.layout import LayerRefs, ReleaseSpec

CONFIG_NAMES = ("config.yaml", "config.yml")
_LAYER_FILE = re.compile(r"^layer_(\d+)\.safetensors$")


class Locator:
    """One folder of a release: local, or a path inside a Hugging Face repository."""

    def __init__(self, local: Path | None = None, ref: hub.HubRef | None = None):
        self.local, self.ref = local, ref

    def __str__(self) -> str:
        return str(self.local) if self.local is not None else str(self.ref)

    def has(self, name: str) -> bool:
        if self.local is not None:
            return (self.local / name).exists()
        assert self.ref is not None
        return hub.exists(self.ref, self.ref.join(name))

    def file(self, name: str) -> Path:
        if self.local is not None:
            path = self.local / name
            if not path.is_file():
                raise FileFormatError(f"{path} does not exist; the release in {self.local} is incomplete.")
            return path
        assert self.ref is not None
        return hub.fetch(self.ref, self.ref.join(name))

    def names(self) -> list[str]:
        if self.local is not None:
            return sorted(p.name for p in self.local.iterdir())
        assert self.ref is not None
        return [n.rsplit("/", 1)[-1] for n in hub.list_files(self.ref, self.ref.path)]

    def entry(self, text: str) -> Path:
        """A ``transcoders:`` entry of a config: ``hf://...``, or a path (relative to this folder
        first, as given second)."""
        if text.startswith("hf://"):
            ref = hub.parse_hub_ref(text)
            assert ref is not None
            return hub.fetch(ref.at(""), ref.path)
        if self.local is not None and (self.local / text).exists():
            return self.local / text
        if Path(text).exists():
            return Path(text)
        if self.ref is not None:
            return self.file(text)
        raise FileFormatError(f"the config in {self} lists {text!r}, which does not exist; fix the path.")


def read_source(source: Any, layers: list[int] | None) -> ReleaseSpec:
    """The release at ``source`` (see the module docstring), restricted to ``layers``."""
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return _read_list([Path(p) for p in source], layers)
    text = str(os.fspath(source))
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            return read_folder(Locator(local=path), layers)
        return read_file(Locator(local=path.parent), path.name, layers)
    ref = hub.parse_hub_ref(text)
    if ref is None:
        raise FileFormatError(
            f"{text!r} is neither an existing path, a Hugging Face reference (hf://org/repo[/path]"
            "[?revision=...] or org/repo[/path][@revision]) nor a sae_lens release name; check it."
        )
    if Path(ref.path).suffix in (".yaml", ".yml", ".npz", ".safetensors", ".json"):
        parent, name = ref.path.rsplit("/", 1) if "/" in ref.path else ("", ref.path)
        return read_file(Locator(ref=ref.at(parent)), name, layers)
    return read_folder(Locator(ref=ref), layers)


def read_folder(loc: Locator, layers: list[int] | None) -> ReleaseSpec:
    """The release in folder ``loc`` (recognised by what it holds)."""
    for name in CONFIG_NAMES:
        if loc.has(name):
            return read_config(loc, name, layers)
    if loc.has(saelens_io.CFG_FILENAME):
        return _read_list([loc.file(saelens_io.CFG_FILENAME).parent], layers, source=str(loc))
    if loc.has("W_enc_0.safetensors"):
        # config.json is what CrossLayerTranscoder.save writes: its activation is ours, exactly.
        cfg = _json(loc.file("config.json")) if loc.has("config.json") else {}
        ours = {"activation": cfg["activation"], "k": cfg.get("k")} if cfg.get("activation") else {}
        return clt_folder(loc, cfg.get("feature_input_hook", "hook_resid_mid"),
                           cfg.get("feature_output_hook", "hook_mlp_out"), cfg, str(loc), ours)
    for name in ("params.safetensors", "params.npz"):
        if loc.has(name):
            return read_file(loc, name, layers)
    if loc.local is not None:
        subs = sorted(d for d in loc.local.iterdir() if (d / saelens_io.CFG_FILENAME).is_file())
        if subs:
            return _read_list(subs, layers, source=str(loc))
    offline = " (HF_HUB_OFFLINE=1: only the Hugging Face cache was searched)" if loc.ref and hub.offline() else ""
    hint = ""
    if loc.ref is not None:
        include = f"{loc.ref.path}/*" if loc.ref.path else "*"
        rev = f" --revision {loc.ref.revision}" if loc.ref.revision else ""
        hint = f" If it is not downloaded yet: `hf download {loc.ref.repo_id} --include '{include}'{rev}`."
    raise FileFormatError(
        f"no transcoders found at {loc}{offline}: expected config.yaml (circuit-tracer), cfg.json "
        "(SAELens), W_enc_0.safetensors (a cross-layer transcoder), params.safetensors "
        f"(GemmaScope 2) or params.npz (GemmaScope), or SAELens sub-folders.{hint}"
    )


def read_file(loc: Locator, name: str, layers: list[int] | None) -> ReleaseSpec:
    """The release whose file ``name`` is in ``loc``."""
    suffix = Path(name).suffix
    if suffix in (".yaml", ".yml"):
        return read_config(loc, name, layers)
    if name == saelens_io.CFG_FILENAME:
        return _read_list([loc.file(name).parent], layers, source=str(loc))
    path = loc.file(name)
    layer = fr.layer_in_path(str(loc) + "/" + name)
    if suffix == ".npz":
        la = _need_layer(layer, path)
        refs = fr.gemmascope_npz_layer(path, la, f"blocks.{la}.ln2.hook_normalized", f"blocks.{la}.hook_mlp_out")
        return _per_layer({la: refs}, "jumprelu", None, str(path))
    if suffix != ".safetensors":
        raise FileFormatError(f"{path}: tl_circuits reads transcoders from .safetensors, .npz, "
                              "cfg.json folders and config.yaml files, not {suffix!r} files.")
    keys = fr.safetensors_keys(path)
    if "w_enc" in keys:
        la = _need_layer(layer, path)
        config = loc.file("config.json") if loc.has("config.json") else None
        hook_in, hook_out = fr.gemmascope2_sites(config, la)
        return _per_layer({la: fr.gemmascope2_layer(path, la, hook_in, hook_out)}, "jumprelu", None, str(path))
    if "W_enc_0" in keys or any(re.fullmatch(r"W_enc_\d+", k) for k in keys):
        return read_folder(loc, layers)
    raise FileFormatError(
        f"{path} holds {sorted(keys)[:6]}...: a single circuit-tracer layer file does not say where "
        "it reads and writes; load the config.yaml of its set (or the folder holding it)."
    )


def read_config(loc: Locator, name: str, layers: list[int] | None) -> ReleaseSpec:
    """A circuit-tracer ``config.yaml`` set (per-layer or cross-layer)."""
    cfg = load_yaml(loc.file(name))
    source = f"{loc}/{name}"
    for key in ("model_kind", "feature_input_hook", "feature_output_hook"):
        if not isinstance(cfg.get(key), str):
            raise FileFormatError(f"{source} has no {key!r} (found {sorted(cfg)}); a circuit-tracer "
                                  "config names model_kind, feature_input_hook and feature_output_hook.")
    block = cfg.get("tl_circuits")
    ours: dict = block if isinstance(block, dict) else {}
    entries = cfg.get("transcoders")
    kind = cfg["model_kind"]
    if kind == "cross_layer_transcoder":
        if entries:
            return _gemmascope2_clt(loc, [str(e) for e in entries], cfg, ours, source)
        return clt_folder(loc, cfg["feature_input_hook"], cfg["feature_output_hook"], cfg, source, ours)
    if kind != "transcoder_set":
        raise FileFormatError(f"{source}: model_kind {kind!r} is not 'transcoder_set' or 'cross_layer_transcoder'.")
    if entries:
        files = {i: str(e) for i, e in enumerate(entries)}
    else:
        files = {int(m.group(1)): n for n in loc.names() if (m := _LAYER_FILE.match(n))}
    wanted = sorted(files) if layers is None else [la for la in sorted(files) if la in layers]
    refs = {}
    for la in wanted:
        path = loc.entry(files[la]) if entries else loc.file(files[la])
        hook_in = _site(ours, "hook_in", la, cfg["feature_input_hook"])
        hook_out = _site(ours, "hook_out", la, cfg["feature_output_hook"])
        if path.suffix == ".npz":
            refs[la] = fr.gemmascope_npz_layer(path, la, hook_in, hook_out)
        elif "w_enc" in fr.safetensors_keys(path):
            refs[la] = fr.gemmascope2_layer(path, la, hook_in, hook_out)
        else:
            refs[la] = fr.circuit_tracer_layer(path, la, hook_in, hook_out)
    if not refs:
        raise FileFormatError(f"{source} lists no transcoder files (no 'transcoders:' list and no "
                              "layer_{l}.safetensors beside it).")
    spec = _per_layer(refs, "relu", None, source)
    return _with_activation(spec, cfg, ours)


def _site(ours: dict, key: str, layer: int, suffix: str) -> str:
    named = (ours.get(key) or {}).get(str(layer))
    return canonical_hook(named) if named else canonical_hook(suffix, layer)


def _with_activation(spec: ReleaseSpec, cfg: dict, ours: dict) -> ReleaseSpec:
    """Set the activation a circuit-tracer config asks for (its loaders' meaning; see
    :mod:`.activations`). Our own ``tl_circuits:`` block, when present, is exact."""
    has_threshold = any(lr.threshold is not None for lr in spec.layers.values())
    if ours.get("activation"):
        spec.activation, spec.k = str(ours["activation"]), ours.get("k")
        return spec
    raw, k = cfg.get("activation"), cfg.get("k")
    if raw is None or raw in ("jumprelu", "jump_relu"):
        name = "jumprelu" if has_threshold else "relu"
        if raw is not None and not has_threshold:
            raise FileFormatError(f"{spec.source} asks for activation {raw!r} but its files hold no thresholds.")
    elif raw == "relu":
        name = "relu"
        spec.layers = {la: _no_threshold(lr) for la, lr in spec.layers.items()}
    elif raw == "topk":
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise FileFormatError(f"{spec.source} asks for activation 'topk' without a positive integer k (found {k!r}).")
        name, spec.k = "topk_signed", k
        spec.layers = {la: _no_threshold(lr) for la, lr in spec.layers.items()}
    else:
        raise ConfigError(
            f"{spec.source} asks for activation {raw!r}, which tl_circuits does not know; "
            "circuit-tracer configs use relu, jumprelu (thresholds in the files) or topk (with k)."
        )
    if name == "jumprelu" and fr.min_threshold(spec.layers.values(), spec.files) < 0:
        name = "jumprelu_signed"
    spec.activation = name
    return spec


def _no_threshold(lr: LayerRefs) -> LayerRefs:
    from dataclasses import replace

    return replace(lr, threshold=None)


def clt_folder(loc: Locator, in_suffix: str, out_suffix: str, cfg: dict, source: str,
               ours: dict | None = None) -> ReleaseSpec:
    """A circuit-tracer cross-layer transcoder folder (``W_enc_{l}`` / ``W_dec_{l}`` files)."""
    names = set(loc.names())
    n = 0
    while f"W_enc_{n}.safetensors" in names:
        n += 1
    if n == 0:
        raise FileFormatError(f"{source}: no W_enc_0.safetensors; is this a cross-layer transcoder?")
    refs = {}
    for la in range(n):
        refs[la] = fr.circuit_tracer_clt_layer(
            loc.file(f"W_enc_{la}.safetensors"), loc.file(f"W_dec_{la}.safetensors"), la,
            _site(ours or {}, "hook_in", la, in_suffix), _site(ours or {}, "hook_out", la, out_suffix))
    spec = ReleaseSpec("cross_layer", refs, "relu", source)
    return _with_activation(spec, cfg, ours or {})


def _gemmascope2_clt(loc: Locator, entries: list[str], cfg: dict, ours: dict, source: str) -> ReleaseSpec:
    refs = {}
    for la, entry in enumerate(entries):
        refs[la] = fr.gemmascope2_layer(
            loc.entry(entry), la, _site(ours, "hook_in", la, cfg["feature_input_hook"]),
            _site(ours, "hook_out", la, cfg["feature_output_hook"]), cross_layer=True)
    return _with_activation(ReleaseSpec("cross_layer", refs, "relu", source), cfg, ours)


def _read_list(folders: list[Path], layers: list[int] | None, source: str | None = None) -> ReleaseSpec:
    if not folders:
        raise FileFormatError("got an empty list of transcoder folders.")
    refs: dict[int, LayerRefs] = {}
    kinds = set()
    for folder in folders:
        lr, activation, k = fr.saelens_layer(folder)
        if lr.layer in refs:
            raise ConfigError(f"two transcoders for layer {lr.layer} ({folder}); keep one per layer.")
        kinds.add((activation, k))
        if layers is None or lr.layer in layers:
            refs[lr.layer] = lr
    if len(kinds) != 1:
        raise ConfigError(f"the folders mix activations {sorted(kinds, key=str)}; a set shares one.")
    activation, k = kinds.pop()
    return _per_layer(refs, activation, k, source or ", ".join(map(str, folders)))


def _per_layer(refs: dict[int, LayerRefs], activation: str, k: int | None, source: str) -> ReleaseSpec:
    return ReleaseSpec("per_layer", dict(sorted(refs.items())), activation, source, k=k)


def _need_layer(layer: int | None, path: Path) -> int:
    if layer is None:
        raise FileFormatError(f"cannot tell the layer of {path}: its path names none (layer_N); "
                              "load the config.yaml of its set, or a folder named layer_N.")
    return layer


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{path} is not valid JSON ({exc}); download it again.") from exc
    return value if isinstance(value, dict) else {}


def load_yaml(path: Path) -> dict:
    """A YAML mapping (JSON text reads without PyYAML)."""
    text = path.read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(f"reading {path} needs PyYAML: pip install 'tl-circuits[releases]'.") from None
    else:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise FileFormatError(f"{path} is not valid YAML ({exc}).") from exc
    if not isinstance(value, dict):
        raise FileFormatError(f"{path} does not hold a YAML mapping.")
    return value
