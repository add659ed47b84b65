"""Steering from the viewer page: set or scale graph features and compare the model's next tokens
and a short greedy completion with the original, through :func:`tl_circuits.intervene` and
:func:`tl_circuits.generate`.

One model runs one request at a time: a request that arrives while another runs is refused
(:class:`Busy`, HTTP 429 in the server) rather than run concurrently on the same model. Requests
are checked before anything runs; a bad one raises :class:`~tl_circuits.errors.ConfigError`
naming the field and the fix.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError

#: Most interventions and generated tokens one request may ask for.
MAX_INTERVENTIONS = 512
MAX_NEW_TOKENS = 64


class Busy(RuntimeError):
    """Another steering request is running on this model."""


def graph_tokens(graph_json: dict[str, Any]) -> list[int]:
    """The prompt's token ids, read from the embedding node ids ``E_{token}_{pos}``.

    Example:
        >>> graph_tokens({"nodes": [{"node_id": "E_7_1", "feature_type": "embedding", "ctx_idx": 1},
        ...                         {"node_id": "E_3_0", "feature_type": "embedding", "ctx_idx": 0}]})
        [3, 7]
    """
    embeds = sorted((n["ctx_idx"], int(n["node_id"].split("_")[1]))
                    for n in graph_json["nodes"] if n["feature_type"] == "embedding")
    return [t for _, t in embeds]


def parse_request(body: Any, graph_json: dict[str, Any]) -> dict[str, Any]:
    """Check a steering request against the graph; returns the interventions as dicts.

    ``body``: ``{"interventions": [{"node_id", "value", "mode": "set"|"scale"}], "constrained":
    bool, "generate": int}``. Raises ConfigError naming the first problem.
    """
    if not isinstance(body, dict):
        raise ConfigError("a steering request is a JSON object with 'interventions'")
    items = body.get("interventions")
    if not isinstance(items, list) or not items:
        raise ConfigError("'interventions' must be a non-empty list of {node_id, value, mode}: "
                          "select at least one feature")
    if len(items) > MAX_INTERVENTIONS:
        raise ConfigError(f"at most {MAX_INTERVENTIONS} interventions per request, got {len(items)}")
    features = {n["node_id"]: n for n in graph_json["nodes"] if n["feature_type"] == "cross layer transcoder"}
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise ConfigError(f"intervention {item!r} must be an object {{node_id, value, mode}}")
        nid, value, mode = item.get("node_id"), item.get("value"), item.get("mode", "set")
        if nid not in features:
            raise ConfigError(f"node {nid!r} is not a feature of this graph: only feature nodes "
                              "(circles) can be set or scaled")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"the value for {nid} must be a finite number, got {value!r}")
        if mode not in ("set", "scale"):
            raise ConfigError(f"mode for {nid} must be 'set' or 'scale', got {mode!r}")
        n = features[nid]
        out.append({"layer": int(n["layer"]), "position": int(n["ctx_idx"]), "feature": int(n["feature_index"]),
                    "value": float(value), "mode": mode})
    n_new = body.get("generate", 8)
    if isinstance(n_new, bool) or not isinstance(n_new, int) or not 0 <= n_new <= MAX_NEW_TOKENS:
        raise ConfigError(f"'generate' must be a whole number of tokens from 0 to {MAX_NEW_TOKENS}, got {n_new!r}")
    constrained = body.get("constrained", False)
    if not isinstance(constrained, bool):
        raise ConfigError(f"'constrained' must be true or false, got {constrained!r}")
    return {"edits": out, "generate": n_new, "constrained": constrained}


class Steering:
    """Runs checked steering requests on one model, one at a time.

    Example:
        >>> s = Steering(model, transcoders)  # doctest: +SKIP
        >>> s.run(graph_json, {"interventions": [{"node_id": "3_12_5", "value": 0}]})  # doctest: +SKIP
    """

    def __init__(self, model: Any, transcoders: Any, *, top: int = 10):
        from ..hosts import as_host

        self.model, self.transcoders, self.top = model, transcoders, top
        self.host = as_host(model)
        #: Held while a request runs on the model (other model users, e.g. attention, share it).
        self.lock = threading.Lock()
        self._clean: dict[tuple[Any, ...], Any] = {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the model for one request; refuse (Busy) when another holds it."""
        if not self.lock.acquire(blocking=False):
            raise Busy("another steering request is running on this model; wait for it to finish "
                       "and run again (one request at a time)")
        try:
            yield
        finally:
            self.lock.release()

    def probabilities(self, tokens: list[int], edits: list[dict[str, Any]], constrained: bool) -> Any:
        """Next-token probabilities (float64) after ``tokens`` with ``edits`` applied."""
        import torch

        import tl_circuits

        layers = range(self.host.n_layers) if constrained else None
        out = tl_circuits.intervene(self.model, self.transcoders, torch.tensor(tokens), edits,
                                    constrained_layers=layers)
        return torch.softmax(out.logits[-1].double(), -1)

    def completion(self, tokens: list[int], n_new: int, edits: list[dict[str, Any]], constrained: bool) -> str:
        """``n_new`` greedy tokens after ``tokens`` with ``edits`` applied, as text."""
        import torch

        import tl_circuits

        if n_new == 0:
            return ""
        layers = range(self.host.n_layers) if constrained else None
        ids = tl_circuits.generate(self.model, self.transcoders, torch.tensor(tokens), n_new,
                                   interventions=edits, constrained_layers=layers)
        return "".join(self.host.token_strings(ids[len(tokens):]))

    def run(self, graph_json: dict[str, Any], body: Any) -> dict[str, Any]:
        """Check ``body`` (see :func:`parse_request`) and run it; raises ConfigError or Busy."""
        req = parse_request(body, graph_json)
        tokens = graph_tokens(graph_json)
        with self._locked():
            key = (tuple(tokens), req["generate"])
            if key not in self._clean:
                self._clean[key] = (self.probabilities(tokens, [], False),
                                    self.completion(tokens, req["generate"], [], False))
            clean, clean_text = self._clean[key]
            new = self.probabilities(tokens, req["edits"], req["constrained"])
            text = self.completion(tokens, req["generate"], req["edits"], req["constrained"])
        return {
            "top": self._top(new, clean), "clean_top": self._top(clean, clean),
            "completion": {"clean": clean_text, "steered": text, "n_tokens": req["generate"]},
            "positions": sorted({e["position"] for e in req["edits"]}),
            "n_prompt_tokens": len(tokens), "n_interventions": len(req["edits"]),
            "constrained": req["constrained"],
        }

    def _top(self, probs: Any, clean: Any) -> list[dict[str, Any]]:
        top = probs.topk(min(self.top, probs.numel()))
        ids = top.indices.tolist()
        return [{"token": s, "token_id": i, "prob": float(probs[i]), "clean_prob": float(clean[i])}
                for s, i in zip(self.host.token_strings(ids), ids)]

    def legacy(self, graph_json: dict[str, Any], settings: list[dict[str, Any]]) -> dict[str, Any]:
        """The older ``/api/intervene`` answer: top next tokens for ``(layer, position, feature,
        value)`` settings."""
        tokens = graph_tokens(graph_json)
        edits = [{"layer": int(s["layer"]), "position": int(s["position"]), "feature": int(s["feature"]),
                  "value": float(s["value"])} for s in settings]
        with self._locked():
            key = (tuple(tokens), 0)
            if key not in self._clean:
                self._clean[key] = (self.probabilities(tokens, [], False), "")
            clean = self._clean[key][0]
            new = self.probabilities(tokens, edits, False)
        return {"top": self._top(new, clean)}
