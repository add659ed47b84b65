"""Attribution with a transcoder set bigger than memory, memory-mapped (``LazyTranscoders``), beside
an in-memory set of a width that fits, measured in the same run.

Writes a synthetic TopK set for SmolLM2-135M-Instruct (30 layers x d_sae 262,144 x d_model 576,
float32: 36.2 GB of safetensors, more than a 24 GiB machine's memory) in the memory-mappable layout
``tl-circuits transcoders convert`` writes, drops it from the page cache, and attributes a 16-token
prompt with it. The baseline is a d_sae 16,384 set (2.3 GB) held in memory; the same small set
memory-mapped shows what lazy costs at a normal size. Prints the wall time (median of --repeats)
and the peak resident memory (VmHWM, reset before each run; mapped pages count while mapped) of
each run, and the ratios of times.

Disk: the big set plus the small one (by default 36.2 + 2.3 GB) under --dir (default: a temporary
folder under $TMPDIR), deleted at the end unless --keep. Writing takes a few minutes.

    python benchmarks/lazy.py                     # the 36 GB set
    python benchmarks/lazy.py --d-sae 65536       # a quicker look (9 GB)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _setup import bos_prompt, summary
from _worker import reset_peak, rss_mib  # benchmarks/ is on the path when run as a script
from tqdm.auto import tqdm

import tl_circuits as tc
from tl_circuits.transcoders import LazyTranscoders
from tl_circuits.transcoders.releases.file_readers import circuit_tracer_layer
from tl_circuits.transcoders.releases.layout import ReleaseSpec
from tl_circuits.transcoders.releases.load import resolve_spec
from tl_circuits.transcoders.releases.safetensors_map import StreamWriter, row_blocks
from tl_circuits.transcoders.releases.writer import write_config

BLOCK = 64 * 2**20


def evict(path: Path) -> None:
    """Flush ``path`` and drop it from the page cache, so that reads come from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def write_set(folder: Path, n_layers: int, d: int, d_sae: int, k: int, bar: tqdm) -> None:
    """A random TopK set in the mappable layout (one encoder direction / decoder row per row)."""
    folder.mkdir(parents=True)
    refs = {}
    for layer in range(n_layers):
        path = folder / f"layer_{layer}.safetensors"
        shapes = [("W_enc", torch.float32, (d_sae, d)), ("W_dec", torch.float32, (d_sae, d)),
                  ("b_enc", torch.float32, (d_sae,)), ("b_dec", torch.float32, (d,))]
        writer = StreamWriter(path, shapes, metadata={"format": "pt"})
        gen = torch.Generator().manual_seed(layer)
        for key, scale in (("W_enc", d**-0.5), ("W_dec", 0.05)):
            for start, stop in row_blocks(d_sae, 4 * d, BLOCK):
                block = torch.empty(stop - start, d).normal_(generator=gen).mul_(scale)
                writer.write(key, block)
                bar.update(block.numel() * 4)
        writer.write("b_enc", torch.zeros(d_sae))
        writer.write("b_dec", torch.zeros(d))
        writer.close()
        evict(path)
        refs[layer] = circuit_tracer_layer(path, layer, f"blocks.{layer}.ln2.hook_normalized",
                                           f"blocks.{layer}.hook_mlp_out")
    write_config(ReleaseSpec("per_layer", refs, "topk", "benchmarks/lazy.py synthetic set", k=k), folder)


def rss_now_mib() -> float:
    """Resident memory of this process now (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed_runs(name: str, model, transcoders, tokens, args, repeats: int) -> tuple[float, float]:
    """(min, median) seconds of ``repeats`` attributions; prints them with the peak resident
    memory. On a shared machine the minimum is the better estimate of the cost itself."""
    before = rss_now_mib()
    reset_peak()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        graph = tc.attribute(model, transcoders, tokens, max_feature_nodes=args.max_feature_nodes,
                             batch_size=args.batch_size, progress=False)
        times.append(time.perf_counter() - t0)
    print(f"{name}: {summary(times)}; peak RSS {rss_mib():,.0f} MiB (before the run {before:,.0f} MiB); "
          f"{int(graph.settings['n_active_features']):,} active features", flush=True)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-sae", type=int, default=262_144, help="features per layer of the big set")
    parser.add_argument("--fit-d-sae", type=int, default=16_384, help="features per layer of the set that fits")
    parser.add_argument("--k", type=int, default=64, help="active features per token (TopK)")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--max-feature-nodes", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the small sets")
    parser.add_argument("--repeats-big", type=int, default=1, help="runs of the big set")
    parser.add_argument("--encoder-cache-gib", type=float, default=4.0,
                        help="encoder cache of the last run (the default on the CPU is none)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the sets (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the written sets")
    args = parser.parse_args()
    from tl_circuits import models

    model = models.load_default()
    n_layers, d = model.cfg.n_layers, model.cfg.d_model
    tokens = bos_prompt(model, args.tokens)
    root = args.dir or Path(tempfile.mkdtemp(prefix="tl-circuits-lazy-"))
    big, small = root / f"d_sae_{args.d_sae}", root / f"d_sae_{args.fit_d_sae}"
    total = 8 * n_layers * d * (args.d_sae + args.fit_d_sae)
    print(f"SmolLM2-135M-Instruct ({n_layers} layers, d_model {d}); {args.tokens} tokens; TopK k={args.k}; "
          f"max_feature_nodes {args.max_feature_nodes}; batch {args.batch_size}; torch threads "
          f"{torch.get_num_threads()}; writing {total / 1e9:.1f} GB under {root}", flush=True)
    try:
        t0 = time.perf_counter()
        with tqdm(total=total, unit="B", unit_scale=True, desc="writing synthetic sets") as bar:
            for folder, width in ((small, args.fit_d_sae), (big, args.d_sae)):
                if not folder.exists():
                    write_set(folder, n_layers, d, width, args.k, bar)
        print(f"wrote the sets in {time.perf_counter() - t0:.0f}s; big set {resolve_spec(big).nbytes() / 1e9:.1f} GB",
              flush=True)
        in_memory = tc.load_transcoders(small, lazy=False)
        base = timed_runs(f"in memory, d_sae {args.fit_d_sae:,}", model, in_memory, tokens, args, args.repeats)
        del in_memory
        lazy_small = timed_runs(f"lazy, d_sae {args.fit_d_sae:,}", model, tc.load_transcoders(small, lazy=True),
                                tokens, args, args.repeats)
        for path in big.iterdir():
            evict(path)
        streaming = tc.load_transcoders(big)
        assert isinstance(streaming, LazyTranscoders), "lazy='auto' should map a set bigger than memory"
        lazy_big = timed_runs(f"lazy, d_sae {args.d_sae:,} (the defaults: lazy='auto' maps it, no encoder cache)",
                              model, streaming, tokens, args, args.repeats_big)
        for path in big.iterdir():
            evict(path)
        cache = int(args.encoder_cache_gib * 2**30)
        cached = LazyTranscoders(resolve_spec(big), encoder_cache_bytes=cache)
        lazy_default = timed_runs(f"lazy, d_sae {args.d_sae:,} (encoder cache {args.encoder_cache_gib:g} GiB)",
                                  model, cached, tokens, args, args.repeats_big)
        for i, which in enumerate(("min", "median")):
            print(f"ratios of {which} times: lazy / in memory at d_sae {args.fit_d_sae:,}: "
                  f"{lazy_small[i] / base[i]:.2f}; lazy d_sae {args.d_sae:,} / in memory d_sae "
                  f"{args.fit_d_sae:,}: {lazy_big[i] / base[i]:.1f} (no cache), "
                  f"{lazy_default[i] / base[i]:.1f} (with the encoder cache)")
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
