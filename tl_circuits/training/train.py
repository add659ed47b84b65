"""``train_transcoders``: transcoders for every MLP of a model, on any host, from one forward pass per batch.

Activations are streamed: each step runs the model on a batch of contexts, reads every layer's
MLP input and output through the host's hooks (:func:`tl_circuits.training.data.layer_activations`,
the pass stopped after the last MLP), and takes one Adam step for all layers together; or, with
``cache_dir``, they are written once to an activation cache (:mod:`tl_circuits.training.cache`)
that this and later runs read. With ``reuse > 1`` an in-memory buffer
(:mod:`tl_circuits.training.buffer`) serves each model activation to several steps. Under
``torchrun`` the processes train one set together (:mod:`tl_circuits.training.distributed`).
Checkpoints (atomic, beside the output, every ``checkpoint_every`` steps and, under a time
budget, at least every minute) make an interrupted run resumable, and a resumed run ends with
the same weights as an uninterrupted one (the batch and learning rate of a step depend only on
the seed and the step number; under a time budget the learning rate follows the clock instead).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.optim import Adam

from tl_circuits.errors import ConfigError
from tl_circuits.hosts import as_host
from tl_circuits.hosts.base import Host
from tl_circuits.training import batches as batches_mod
from tl_circuits.training import corpus as corpus_mod
from tl_circuits.training import distributed as dist_mod
from tl_circuits.training.buffer import ActivationBuffer
from tl_circuits.training.cache import model_fingerprint
from tl_circuits.training.checkpoint import (
    checkpoint_dir,
    checkpoint_seconds,
    load_checkpoint,
    recover_checkpoint,
    save_checkpoint,
)
from tl_circuits.training.data import (
    bos_to_prepend,
    layer_activations,
    model_name,
    tokenizer_of,
)
from tl_circuits.training.evaluate import layer_metrics, metrics_of_batches
from tl_circuits.training.sources import describe as describe_corpus
from tl_circuits.transcoders import CrossLayerTranscoder, TranscoderSet

DEFAULT_HOOK_IN = "blocks.{l}.ln2.hook_normalized"
DEFAULT_HOOK_OUT = "blocks.{l}.hook_mlp_out"
#: Under a time budget, a checkpoint at least this often (seconds), whatever the step count.
CHECKPOINT_SECONDS = 60.0


def train_transcoders(
    model: Any,
    texts: Sequence[str] | None = None,
    *,
    corpus: Any = None,
    field: str = "text",
    split: str = "train",
    cache_dir: str | Path | None = None,
    kind: str = "topk",
    skip: bool = False,
    cross_layer: bool = False,
    d_sae: int | None = None,
    k: int = 32,
    steps: int | None = None,
    tokens: int = 1_000_000,
    batch: int = 32,
    ctx_len: int = 128,
    lr: float = 1e-3,
    sparsity_coef: float = 1e-3,
    out_dir: str | Path | None = None,
    resume: bool = True,
    seed: int = 0,
    hook_in: str = DEFAULT_HOOK_IN,
    hook_out: str = DEFAULT_HOOK_OUT,
    eval_fraction: float = 0.05,
    checkpoint_every: int = 50,
    bfloat16_model: bool = True,
    time_budget: float | None = None,
    reuse: int = 1,
    buffer_batches: int = 8,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> TranscoderSet | CrossLayerTranscoder:
    """Train transcoders for every layer of ``model``.

    Args:
        model: any model :func:`~tl_circuits.hosts.as_host` adapts (``HookedTransformer``,
            ``TransformerBridge``, nnsight ``LanguageModel``, Hugging Face ``*ForCausalLM`` held
            by an ``HFHost``) with a tokenizer; the texts are cut into contexts by its tokenizer.
        texts: training texts; None uses the default corpus (see docs/training.md).
        corpus: instead of ``texts``, a corpus in any format of :mod:`tl_circuits.training.sources`
            (a text/JSON-lines/Parquet file or folder, a ``datasets`` folder or object, or
            ``"hf://org/name"``), with the text in ``field`` (and ``split`` of a dataset). It is
            read only as far as the run needs (``steps * batch`` contexts and the held-out
            share after them), and one too small is an error saying how many tokens it holds.
        cache_dir: keep the activations in an activation cache under this folder
            (:mod:`tl_circuits.training.cache`): the model runs once over the run's contexts
            and this run (and later ones over the same contexts, of any width, sparsity or
            kind) trains from the cache in shuffled order.
        kind: ``"topk"`` (exactly ``k`` active features per token and layer) or ``"jumprelu"``
            (learned thresholds, L0 penalised by ``sparsity_coef``).
        skip: add a linear skip connection ``W_skip`` (a "skip transcoder").
        cross_layer: train one cross-layer transcoder (features write to their layer and every
            later one) instead of per-layer transcoders.
        d_sae: features per layer (default ``4 * d_model``).
        steps / tokens: training length in steps, or in tokens when ``steps`` is None (with
            ``time_budget``: the most steps).
        time_budget: seconds of training (model forwards included, evaluation not), summed over
            resumed runs; training stops when they are spent, the learning rate decaying to 0
            over the last 20% of the time. The metrics reached are in the configs as usual, and
            ``steps_done`` in their ``training`` settings. The schedule follows the clock, so a
            resumed or repeated run is not bit-identical to another.
        reuse: training steps each buffered model activation serves (see
            :mod:`tl_circuits.training.buffer`): 1 streams (one model forward per step); ``r > 1``
            runs the model once on ``buffer_batches`` steps' contexts and trains ``r`` passes
            over those tokens, reshuffled, so the model runs ``r`` times less often.
        buffer_batches: steps' worth of contexts held in memory when ``reuse > 1`` (each batch
            of 8 x 128 tokens of a 30-layer, d_model 576 model is about 70 MB).
        batch / ctx_len: contexts per step and tokens per context.
        lr: Adam learning rate (activations are normalised, so it transfers across models); warmed
            up over the first 5% of steps and decayed linearly to 0 over the last 20%.
        out_dir: where to save the result (SAELens per-layer directories, or a circuit-tracer CLT
            directory); None keeps it in memory only (no checkpoints either).
        resume: continue from the checkpoint left by an interrupted run with the same settings.
        hook_in / hook_out: hook name patterns with ``{l}`` for the layer (TransformerLens names,
            on every host).
        eval_fraction: share of contexts held out; final metrics on them go into the configs.
        bfloat16_model: run the forward passes on a bfloat16 copy of a float32 CPU model (about
            twice as fast; the transcoders themselves train in float32 with bfloat16 encoders),
            where the host can make one (``bfloat16_copy``; every tl_circuits host can).
        callback: called after every step with ``(step, metrics)``.

    Returns:
        A :class:`TranscoderSet` (per-layer) or a :class:`CrossLayerTranscoder`.
    """
    if kind not in ("topk", "jumprelu"):
        raise ConfigError(f"kind={kind!r} is not supported; use 'topk' or 'jumprelu'.")
    host = as_host(model)
    L, d_model = host.n_layers, host.d_model
    n_feat: int = d_sae or 4 * d_model
    hooks_in = [hook_in.format(l=la) for la in range(L)]
    hooks_out = [hook_out.format(l=la) for la in range(L)]
    missing = [h for h in hooks_in + hooks_out if not host.has_hook(h)]
    if missing:
        raise ConfigError(
            f"the model has no hook(s) {missing[:3]}{'...' if len(missing) > 3 else ''} for the "
            f"requested transcoder sites {hook_in!r} -> {hook_out!r}; use TransformerLens names "
            "such as 'blocks.{l}.ln2.hook_normalized' or 'blocks.{l}.hook_resid_mid' -> "
            "'blocks.{l}.hook_mlp_out'."
        )
    if time_budget is not None and not time_budget > 0:
        raise ConfigError(f"time_budget={time_budget} must be a positive number of seconds.")
    if reuse < 1 or buffer_batches < 1:
        raise ConfigError(f"reuse={reuse} and buffer_batches={buffer_batches} must be 1 or more.")
    if not 0 < k <= n_feat:
        raise ConfigError(f"k={k} must lie in 1..d_sae={n_feat}.")
    if host.n_ctx is not None and ctx_len > host.n_ctx:
        raise ConfigError(f"ctx_len={ctx_len} is longer than the model's context of {host.n_ctx} "
                          "tokens; pass a smaller ctx_len.")
    out_path = None if out_dir is None else Path(out_dir)
    if out_path is not None:
        corpus_mod.writable_dir(out_path.parent, "output directory")
    bos = bos_to_prepend(host)
    if corpus is not None:
        if texts is not None:
            raise ConfigError("give texts or corpus, not both.")
        train_ctx, eval_ctx, steps = batches_mod.corpus_contexts(
            tokenizer_of(host), corpus, ctx_len, bos, steps=steps, tokens=tokens, batch=batch,
            eval_fraction=eval_fraction, field=field, split=split)
    else:
        if texts is None:
            texts = corpus_mod.default_texts(model, progress=progress)
        contexts = corpus_mod.tokenize_contexts(tokenizer_of(host), texts, ctx_len, bos_token_id=bos)
        train_ctx, eval_ctx = corpus_mod.split_contexts(contexts, eval_fraction)
    batch = min(batch, len(train_ctx))
    per_step = batch * (ctx_len - (bos is not None))
    steps = steps if steps is not None else max(1, math.ceil(tokens / per_step))
    comm = dist_mod.setup(cross_layer=cross_layer, d_sae=n_feat, batch=batch)
    settings = {
        "kind": kind, "skip": skip, "cross_layer": cross_layer, "d_sae": n_feat, "k": k,
        "steps": steps, "batch": batch, "ctx_len": ctx_len, "lr": lr, "seed": seed,
        "sparsity_coef": sparsity_coef, "hook_in": hook_in, "hook_out": hook_out,
        "n_train_contexts": len(train_ctx), "n_eval_contexts": len(eval_ctx),
        "model": model_name(model), "bfloat16_model": bfloat16_model,
    }
    if corpus is not None:
        settings["corpus"] = describe_corpus(corpus)
    if time_budget is not None or reuse > 1:  # absent otherwise: older checkpoints still resume
        settings.update(time_budget=time_budget, reuse=reuse, buffer_batches=buffer_batches)
    if comm is not None and (time_budget is not None or reuse > 1):
        raise ConfigError("time_budget and reuse > 1 are single-process for now (the ranks "
                          "would stop at different steps); under torchrun give steps or tokens.")
    stack = dist_mod.make_stack(comm, n_layers=L, d_in=d_model, d_out=d_model, d_sae=n_feat,
                                kind=kind, k=k, skip=skip, cross_layer=cross_layer, seed=seed)
    stack.sparsity_coef = sparsity_coef
    stack.to(host.device)  # the activations' device (a GPU run trains there)
    optimizer = Adam(stack.parameters(), lr=lr, betas=(0.9, 0.999))
    ckpt = None if out_path is None else checkpoint_dir(out_path)
    rank0 = comm is None or comm.rank == 0
    start, spent = 0, 0.0
    if ckpt is not None and recover_checkpoint(ckpt):
        if resume:
            start = load_checkpoint(ckpt, settings=settings, module=stack, optimizer=optimizer,
                                    scatter=lambda t: dist_mod.shard_tensors(t, comm))
            spent = checkpoint_seconds(ckpt)
        else:
            dist_mod.on_rank0(comm, lambda: shutil.rmtree(ckpt))
    runner = _bfloat16_copy(host) if bfloat16_model else host

    def read(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return layer_activations(runner, tokens, hooks_in, hooks_out, skip_first=bos is not None)

    eval_batches = None
    if cache_dir is None:
        next_batch = batches_mod.streamed(read, train_ctx, batch, seed, comm)
    else:
        settings_key = {"model": model_name(model), "fingerprint": model_fingerprint(model),
                        "hooks_in": hooks_in, "hooks_out": hooks_out, "ctx_len": ctx_len,
                        "skip_first": bos is not None, "dtype": str(runner.dtype)}
        next_batch, eval_batches = batches_mod.from_cache(
            Path(cache_dir), settings_key, read, train_ctx, eval_ctx, tokens_per_step=per_step,
            seed=seed, comm=comm, dtype=runner.dtype, device=host.device,
            progress=progress and rank0)
    buffer = ActivationBuffer(
        lambda ids: read(train_ctx[ids]),
        lambda step: batches_mod.batch_ids(step, batch, len(train_ctx), seed),
        n_batches=buffer_batches, reuse=reuse, seed=seed, chunk=batch) if reuse > 1 else None
    dead_after = 20 * per_step
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=start, desc="training transcoders", disable=not progress or not rank0,
               unit="step")
    done = start
    t0 = time.perf_counter()
    saved_at = spent

    def elapsed() -> float:
        return spent + time.perf_counter() - t0

    try:
        for step in range(start, steps):
            if time_budget is not None and (elapsed() >= time_budget or (
                    buffer is not None and step > start and buffer.due(step)
                    and elapsed() + buffer.fill_seconds >= time_budget)):
                break  # spent, or the next fill (as long as the last) would overrun it
            x, y = next_batch(step) if buffer is None else buffer.get(step)
            if step == 0:
                stack.init_from_batch(*dist_mod.whole_batch(x, y, comm))
            factor = _lr_factor(step, steps)
            if time_budget is not None:
                factor = min(_lr_factor(step, steps, decay=False),
                             max(0.0, (1 - elapsed() / time_budget) / 0.2))
            for group in optimizer.param_groups:
                group["lr"] = lr * factor
            out = stack(x, y, aux_k=4 * k, dead_after=dead_after)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            dist_mod.after_backward(stack, comm)
            optimizer.step()
            stack.count_firing(dist_mod.fired_anywhere(out["fired"], comm),
                               dist_mod.tokens_per_rank_step(x.shape[1], comm))
            done = step + 1
            metrics = {
                "loss": float(out["loss"].detach()), "fvu": float(out["fvu"].mean()),
                "l0": float(out["l0"].mean()),
                "dead": float((stack.since_fired >= dead_after).float().mean()),
            }
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", fvu=f"{metrics['fvu']:.3f}",
                            l0=f"{metrics['l0']:.1f}", dead=f"{metrics['dead']:.1%}",
                            tok_s=f"{(done - start) * per_step / max(time.perf_counter() - t0, 1e-9):.0f}")
            bar.update(1)
            due = (step + 1) % checkpoint_every == 0 or (
                time_budget is not None and elapsed() - saved_at >= CHECKPOINT_SECONDS)
            if ckpt is not None and due and step + 1 < steps:
                saved_at = elapsed()
                save_checkpoint(ckpt, step=step + 1, settings=settings, module=stack,
                                optimizer=optimizer, seconds=saved_at, write=rank0,
                                gather=lambda t: dist_mod.gather_tensors(t, comm))
                dist_mod.barrier(comm)
            if callback is not None:
                callback(step, metrics)
    except KeyboardInterrupt:
        # Under torchrun the ranks may be stopped at different points: they resume from the
        # last periodic checkpoint instead of saving one here.
        if ckpt is not None and comm is None:
            save_checkpoint(ckpt, step=done, settings=settings, module=stack, optimizer=optimizer,
                            seconds=elapsed())
        raise
    finally:
        bar.close()
    train_seconds = time.perf_counter() - t0
    settings_out = {**settings, "train_seconds_this_run": round(train_seconds, 1),
                    "train_seconds": round(spent + train_seconds, 1), "steps_done": done}
    full = dist_mod.full_stack(stack, comm)
    result = full.export(hooks_in, hooks_out, {"training": settings_out})
    # Dead in the SAELens sense: silent over the last 20 steps of training (dead_after tokens).
    window = {"dead_last_20_steps": (full.since_fired >= dead_after).float().mean(-1).tolist()}
    if eval_batches is not None:
        window.update(metrics_of_batches(result, eval_batches))
    elif len(eval_ctx):
        window.update(layer_metrics(runner, result, eval_ctx, skip_first=bos is not None))
    _attach_metrics(result, window)
    if out_path is not None and rank0:
        result.save(out_path)
        if ckpt is not None and ckpt.exists():
            shutil.rmtree(ckpt, ignore_errors=True)
    dist_mod.barrier(comm)
    return result


def _attach_metrics(result: TranscoderSet | CrossLayerTranscoder, metrics: dict[str, list[float]]) -> None:
    if isinstance(result, CrossLayerTranscoder):
        result.extra_config["metrics"] = metrics
        return
    for tc in result:
        tc.cfg["metrics"] = {name: values[tc.layer] for name, values in metrics.items()}


def _lr_factor(step: int, steps: int, *, decay: bool = True) -> float:
    warm = max(1, steps // 20) if decay else max(1, min(steps // 20, 20))
    decay_from = int(steps * 0.8)
    if step < warm:
        return (step + 1) / warm
    if decay and step >= decay_from:
        return max(0.0, (steps - step) / max(1, steps - decay_from))
    return 1.0


def _bfloat16_copy(host: Host) -> Host:
    """A host of a bfloat16 copy of a float32 CPU model, or ``host`` itself (other dtypes and
    devices, or a host that cannot copy its model)."""
    make = getattr(host, "bfloat16_copy", None)
    if make is None or host.dtype != torch.float32 or host.device.type != "cpu":
        return host
    return make()



def __getattr__(name: str) -> Any:
    """Deprecated alias (one release): ``activations`` moved to ``training.data.layer_activations``
    (same arguments, with a model of any host)."""
    if name == "activations":
        import warnings

        from .data import layer_activations

        warnings.warn("tl_circuits.training.train.activations moved to "
                      "tl_circuits.training.data.layer_activations", DeprecationWarning, stacklevel=2)
        return lambda model, *args, **kw: layer_activations(as_host(model), *args, **kw)
    raise AttributeError(f"module 'tl_circuits.training.train' has no attribute {name!r}")
