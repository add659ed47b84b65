"""Benchmark worker: one attribution implementation in its own process, driven over stdin.

Run by benchmarks/peer.py as ``python _worker.py ours|peer EXPORT_DIR`` with the interpreter of
that implementation's virtual environment (circuit-tracer's pins conflict with ours). Commands on
stdin, one JSON object per line: {"cmd": "run"} times one attribution; {"cmd": "dump", "path": p}
writes the last graph's edges keyed by node identity; {"cmd": "quit"}.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def reset_peak() -> None:
    """Reset VmHWM so the next reading is the peak of what follows (Linux clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def rss_mib() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss would include the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_ours(export: Path, settings: dict):
    import tl_circuits as tc
    from tl_circuits import models

    model = models.load_default()
    transcoders = tc.TranscoderSet.load(export / "transcoders")

    def run(settings):
        return tc.attribute(model, transcoders, settings["tokens"], progress=False,
                            max_feature_nodes=settings["max_feature_nodes"],
                            batch_size=settings["batch_size"])

    def dump(graph, path):
        adj = graph.adjacency
        adj = adj.to_sparse_coo() if adj.layout == torch.sparse_csr else adj  # CSR: no index_select
        rows = adj.index_select(0, graph.rows_computed).to_dense()
        kinds = graph.node_kind.tolist()
        layer, pos, idx = graph.node_layer.tolist(), graph.node_position.tolist(), graph.node_index.tolist()
        keys = [_key(("feature", "error", "token", "logit")[k], la, p, i, graph)
                for k, la, p, i in zip(kinds, layer, pos, idx)]
        _save(path, rows, [keys[r] for r in graph.rows_computed.tolist()], keys)

    return run, dump


def _key(kind, layer, pos, idx, graph):
    if kind == "feature":
        return f"f{layer}_{pos}_{idx}"
    if kind == "error":
        return f"e{layer}_{pos}"
    if kind == "token":
        return f"t{pos}"
    return f"l{graph.targets[idx].token_ids[0]}"


def build_peer(export: Path, settings: dict):
    from circuit_tracer import attribute
    from circuit_tracer.replacement_model.replacement_model_transformerlens import (
        TransformerLensReplacementModel,
    )
    from circuit_tracer.transcoder.activation_functions import TopK
    from circuit_tracer.transcoder.single_layer_transcoder import (
        SingleLayerTranscoder,
        TranscoderSet,
    )
    from transformer_lens import HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast

    cfg_dict = json.loads((export / "model_cfg.json").read_text())
    valid = set(HookedTransformerConfig.__dataclass_fields__)
    cfg_dict = {k: v for k, v in cfg_dict.items() if k in valid}
    cfg_dict["dtype"] = torch.float32
    cfg = HookedTransformerConfig(**cfg_dict)
    model = TransformerLensReplacementModel(cfg)
    state = load_file(str(export / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(m.endswith(("IGNORE", "mask", "rotary_sin", "rotary_cos")) for m in missing), (
        missing, unexpected)
    special = json.loads((export / "tokenizer_special.json").read_text())
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(export / "tokenizer" / "tokenizer.json"), **special)
    model.tokenizer = tokenizer  # set_tokenizer needs a hub name; only decode() is used
    tcs = {}
    meta = json.loads((export / "peer_transcoders.json").read_text())
    for layer in range(cfg.n_layers):
        w = load_file(str(export / f"peer_transcoder_{layer}.safetensors"))
        act = torch.nn.Sequential(TopK(meta["k"]), torch.nn.ReLU())
        t = SingleLayerTranscoder(cfg.d_model, w["W_enc"].shape[0], act, layer,
                                  skip_connection="W_skip" in w, device=torch.device("cpu"),
                                  dtype=torch.float32)
        t.load_state_dict(w)
        tcs[layer] = t
    transcoders = TranscoderSet(tcs, feature_input_hook=meta["feature_input_hook"],
                                feature_output_hook="hook_mlp_out")
    model._configure_replacement_model(transcoders)

    def run(settings):
        return attribute(torch.tensor(settings["tokens"]), model,
                         max_feature_nodes=settings["max_feature_nodes"],
                         batch_size=settings["batch_size"], verbose=False)

    def dump(graph, path):
        adj = graph.adjacency_matrix
        n_pos = len(graph.input_tokens)
        feats = graph.active_features[graph.selected_features].tolist()
        keys = [f"f{la}_{p}_{i}" for la, p, i in feats]
        keys += [f"e{la}_{p}" for la in range(cfg.n_layers) for p in range(n_pos)]
        keys += [f"t{p}" for p in range(n_pos)]
        keys += [f"l{int(t)}" for t in _peer_target_ids(graph)]
        n_feat = len(feats)
        row_ids = list(range(n_feat)) + list(range(len(keys) - len(_peer_target_ids(graph)), len(keys)))
        _save(path, adj[row_ids], [keys[r] for r in row_ids], keys)

    return run, dump


def _peer_target_ids(graph):
    targets = graph.logit_targets
    if isinstance(targets, torch.Tensor):
        return targets.tolist()
    return [int(getattr(t, "vocab_idx", getattr(t, "token_id", t))) for t in targets]


def _save(path, rows, row_keys, col_keys):
    save_file({"rows": rows.float().contiguous()}, path,
              metadata={"rows": json.dumps(row_keys), "cols": json.dumps(col_keys)})


def main() -> None:
    impl, export = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(int(json.loads((export / "settings.json").read_text())["threads"]))
    settings = json.loads((export / "settings.json").read_text())
    run, dump = (build_ours if impl == "ours" else build_peer)(export, settings)
    loaded = rss_mib()
    print(json.dumps({"ready": True, "rss_loaded_mib": loaded}), flush=True)
    graph = None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "run":
            graph = None
            reset_peak()
            t0 = time.perf_counter()
            graph = run({**settings, **cmd.get("settings", {})})
            dt = time.perf_counter() - t0
            print(json.dumps({"time": dt, "rss_peak_mib": rss_mib(), "rss_loaded_mib": loaded}), flush=True)
        elif cmd["cmd"] == "dump":
            dump(graph, cmd["path"])
            print(json.dumps({"dumped": cmd["path"]}), flush=True)
        else:
            break


if __name__ == "__main__":
    main()
