"""Run by ``test_vs_circuit_tracer.py`` with circuit-tracer's interpreter (benchmarks/.peer-venv):
load each transcoder set through circuit-tracer's own ``config.yaml`` loader from the Hugging Face
cache named by ``HF_HUB_CACHE``, attribute the prompt on the exported tiny model, and write the
graph's computed rows keyed by node identity (``f{layer}_{pos}_{index}``, ``e{layer}_{pos}``,
``t{pos}``, ``l{token}``).

    python circuit_tracer_driver.py EXPORT_DIR     (reads EXPORT_DIR/job.json)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import load_file, save_file


def main() -> None:
    export = Path(sys.argv[1])
    job = json.loads((export / "job.json").read_text())
    from circuit_tracer import attribute
    from circuit_tracer.replacement_model.replacement_model_transformerlens import (
        TransformerLensReplacementModel,
    )
    from circuit_tracer.utils import hf_utils
    from transformer_lens import HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast

    # The pre-flight "is the repo gated?" check is a network call; the files are in the cache.
    hf_utils.hf_api.repo_info = lambda repo_id, token=None: SimpleNamespace(gated=False)
    fields = set(HookedTransformerConfig.__dataclass_fields__)
    cfg_dict = {k: v for k, v in json.loads((export / "model_cfg.json").read_text()).items() if k in fields}
    cfg = HookedTransformerConfig(**{**cfg_dict, "dtype": torch.float32, "device": "cpu"})
    state = load_file(str(export / "model.safetensors"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(export / "tokenizer" / "tokenizer.json"),
                                        bos_token="<bos>", unk_token="<unk>")
    for name, ref in job["sets"].items():
        transcoders, _ = hf_utils.load_transcoder_from_hub(ref, device=torch.device("cpu"), dtype=torch.float32,
                                                           use_cache=False)
        model = TransformerLensReplacementModel(cfg)
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected, unexpected
        model.tokenizer = tokenizer
        model._configure_replacement_model(transcoders)
        graph = attribute(torch.tensor(job["tokens"]), model, max_feature_nodes=None, batch_size=64, verbose=False)
        dump(graph, cfg.n_layers, export / f"{name}.safetensors")


def dump(graph, n_layers: int, path: Path) -> None:
    n_pos = len(graph.input_tokens)
    feats = graph.active_features[graph.selected_features].tolist()
    targets = graph.logit_targets
    target_ids = targets.tolist() if isinstance(targets, torch.Tensor) else [
        int(getattr(t, "vocab_idx", getattr(t, "token_id", t))) for t in targets]
    keys = [f"f{la}_{p}_{i}" for la, p, i in feats]
    keys += [f"e{la}_{p}" for la in range(n_layers) for p in range(n_pos)]
    keys += [f"t{p}" for p in range(n_pos)] + [f"l{t}" for t in target_ids]
    rows = list(range(len(feats))) + list(range(len(keys) - len(target_ids), len(keys)))
    save_file({"rows": graph.adjacency_matrix[rows].float().contiguous()}, str(path),
              metadata={"rows": json.dumps([keys[r] for r in rows]), "cols": json.dumps(keys)})


if __name__ == "__main__":
    main()
