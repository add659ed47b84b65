"""Shared set-up for benchmarks: SmolLM2 with a per-layer set when available, else a random model."""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch


def random_model(n_layers: int = 6, d_model: int = 256, n_ctx: int = 2048, seed: int = 0) -> Any:
    """A Llama-style random HookedTransformer (rotary, GQA, gated MLP)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = HookedTransformerConfig(
            n_layers=n_layers, d_model=d_model, n_ctx=n_ctx, d_head=32, n_heads=d_model // 32,
            d_vocab=4000, d_mlp=4 * d_model, act_fn="silu", normalization_type="RMS",
            positional_embedding_type="rotary", rotary_dim=32, gated_mlp=True,
            n_key_value_heads=max(1, d_model // 96), dtype=torch.float32, seed=seed,
        )
        model = HookedTransformer(cfg)
    return model.eval()


def random_transcoders(model: Any, d_sae: int = 4096, k: int = 32, seed: int = 0) -> Any:
    """TopK transcoders of random weights for every layer of ``model``."""
    from tl_circuits import Transcoder, TranscoderSet

    d = model.cfg.d_model
    gen = torch.Generator().manual_seed(seed)
    out = []
    for layer in range(model.cfg.n_layers):
        out.append(Transcoder(
            torch.randn(d, d_sae, generator=gen) / d**0.5, torch.zeros(d_sae),
            torch.randn(d_sae, d, generator=gen) / d_sae**0.5, torch.zeros(d),
            hook_name=f"blocks.{layer}.ln2.hook_normalized",
            hook_name_out=f"blocks.{layer}.hook_mlp_out", activation="topk", k=k,
        ))
    return TranscoderSet(out)


def smollm2_or_random(prefer_smollm2: bool = True) -> tuple[Any, Any, str]:
    """(model, transcoders, description): SmolLM2 with random TopK transcoders (d_sae 4096, k 32,
    as in peer.py), or a random model when SmolLM2 is not installed or not wanted."""
    if prefer_smollm2:
        try:
            from tl_circuits import models

            model = models.load_default()
            return model, random_transcoders(model), "SmolLM2-135M-Instruct + random TopK transcoders (k=32)"
        except Exception as err:  # noqa: BLE001 - a benchmark falls back and says so
            print(f"(SmolLM2 unavailable: {err}; using a random model)")
    model = random_model()
    return model, random_transcoders(model), "random 6-layer d_model=256 Llama-style model"


def prompt_tokens(model: Any, n: int, seed: int = 0) -> list[int]:
    """``n`` token ids: the start of a fixed English text, or random ids without a tokenizer."""
    text = (
        "The capital of France is Paris. The capital of Germany is Berlin. Rivers flow to the sea, "
        "and the mountains of the Alps rise above the valleys where farmers grow wheat and grapes. "
    ) * 200
    if model.tokenizer is not None:
        return model.tokenizer(text, add_special_tokens=False)["input_ids"][:n]
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(10, model.cfg.d_vocab, (n,), generator=gen).tolist()


def bos_prompt(model: Any, n: int) -> list[int]:
    """``n`` token ids starting with the tokenizer's BOS (the sink both implementations skip),
    or plain :func:`prompt_tokens` when there is no BOS."""
    bos = model.tokenizer.bos_token_id if model.tokenizer is not None else None
    return [bos] + prompt_tokens(model, n - 1) if bos is not None else prompt_tokens(model, n)


def benchmark_transcoders(model: Any, use_demo: bool) -> tuple[Any, str]:
    """(transcoders, description): the cached demo set when asked for and present, else random
    TopK transcoders (d_sae 4096, k 32), the reproducible default."""
    if use_demo:
        from tl_circuits import TranscoderSet
        from tl_circuits.loading import demo_dir

        try:
            return TranscoderSet.load(demo_dir()), f"demo transcoders from {demo_dir()}"
        except Exception as err:  # noqa: BLE001 - a benchmark falls back and says so
            print(f"(no cached demo transcoders: {err}; using random ones)")
    return random_transcoders(model), "random TopK transcoders (k=32)"


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summary(times: list[float]) -> str:
    return f"min {min(times):.3f}s  median {statistics.median(times):.3f}s  max {max(times):.3f}s"


def attribution_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the run settings that peer.py and floor.py share (same defaults, so their
    figures compare): --tokens, --max-feature-nodes, --batch-size, --repeats."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--max-feature-nodes", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    return parser


def flop_counter() -> Any:
    """A dispatch mode counting FLOPs with PyTorch's formulas (``torch.utils.flop_counter``), the
    frozen-pattern products (``tl_circuits::frozen_pattern_vjp``) counted as the triangular blocks
    they multiply; ``get_total_flops()`` as on ``FlopCounterMode``, whose module tracker breaks
    ``autograd.grad`` over a forward pass run inside it."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    from tl_circuits.replacement import frozen_attention

    op = torch.ops.tl_circuits.frozen_pattern_vjp
    if op not in flop_registry:
        @register_flop_formula(op)
        def _pattern_flops(pattern_shape, grad_shape, limit, causal, *args, out_shape=None, **kw) -> int:
            n = pattern_shape[-1]
            lim = min(limit, n)
            batch = 1
            for size in grad_shape[:-2]:
                batch *= size
            block = frozen_attention._BLOCK
            pairs = sum((lim - lo) * min(block, lim - lo) for lo in range(0, lim, block)) if causal else n * n
            return 2 * batch * pairs * grad_shape[-1]

    class Counter(TorchDispatchMode):
        total = 0

        def get_total_flops(self) -> int:
            return self.total

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.total += formula(*args, **kwargs, out_val=out)
            return out

    return Counter()


def matmul_rate(m: int, k: int, n: int, repeats: int = 3) -> float:
    """GFLOP/s of a float32 ``[m, k] @ [k, n]`` product on this machine (the best of ``repeats``
    after one warm-up): the ceiling benchmarks compare their passes with."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best = min(timed(lambda: a @ b, repeats))
    return 2 * m * k * n / best / 1e9
