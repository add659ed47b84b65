"""Our transcoder trainer against SAELens' trainer on the same cached SmolLM2 activations.

One layer's MLP inputs and outputs (``blocks.L.ln2.hook_normalized -> blocks.L.hook_mlp_out``)
are cached once (:mod:`tl_circuits.training.cache`, reused by later runs); both trainers then
read the same batches in the same shuffled order, with the same token budget, width and
TopK ``k`` (the target L0), the same normalisation (each side scaled to mean squared norm
``d``, as our trainer does) and the same learning-rate schedule (5% warm-up, linear decay over
the last 20%). Reported: FVU and L0 on held-out cached tokens, training tokens per second, and
our/SAELens ratios (FVU below 1 and speed above 1 favour us).

SAELens 6.54 trains SAEs, not transcoders (its ``Transcoder`` classes are inference-only), so
its side is SAELens' own ``SAETrainer`` (Adam, gradient clipping, LR scheduler, dead-feature
tracking, optional bfloat16 autocast) and ``TopKTrainingSAE`` (TopK, decoder-norm rescaling,
AuxK) with one change: the training forward pass encodes the MLP input and reconstructs the
MLP output (the batch is ``[x, y]`` side by side). SAELens runs twice, float32 and with its
bfloat16 autocast, and its best learning rate of ``--saelens-lrs`` is reported.

Run (a few minutes; the first run also caches the activations):
    flock /tmp/heavy.lock python benchmarks/train_vs_saelens.py
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

TRAIN = "train"


def cached_batches(args):
    """The cached activations of one layer: (train ShuffledBatches, held-out (x, y))."""
    from tl_circuits.hosts import as_host
    from tl_circuits.models import load_default
    from tl_circuits.training.cache import (
        ShuffledBatches,
        build_activation_cache,
        model_fingerprint,
        open_cache,
    )
    from tl_circuits.training.corpus import default_texts, tokenize_contexts
    from tl_circuits.training.data import bos_to_prepend, layer_activations
    from tl_circuits.training.train import _bfloat16_copy

    model = load_default()
    host = as_host(model)
    runner = _bfloat16_copy(host)
    bos = bos_to_prepend(host)
    hooks_in, hooks_out = [f"blocks.{args.layer}.ln2.hook_normalized"], [f"blocks.{args.layer}.hook_mlp_out"]
    contexts = tokenize_contexts(model.tokenizer, default_texts(), args.ctx_len, bos_token_id=bos)
    body = args.ctx_len - (bos is not None)
    n_train, n_eval = math.ceil(args.tokens / body), math.ceil(args.eval_tokens / body)
    if n_train + n_eval > len(contexts):
        raise SystemExit(f"the corpus has {len(contexts)} contexts of {args.ctx_len}; ask for fewer tokens")
    train_ctx, eval_ctx = contexts[:n_train], contexts[-n_eval:]

    def read(tokens):
        return layer_activations(runner, tokens, hooks_in, hooks_out, skip_first=bos is not None)

    settings = {"model": "SmolLM2-135M-Instruct", "fingerprint": model_fingerprint(model),
                "hooks_in": hooks_in, "hooks_out": hooks_out, "ctx_len": args.ctx_len}
    t0 = time.perf_counter()
    runs = 0
    for part, ctx in ((TRAIN, train_ctx), ("eval", eval_ctx)):
        runs += build_activation_cache(args.cache / part, ctx, read, settings=settings,
                                       dtype=runner.dtype)
    print(f"activation cache {args.cache}: {runs} forward batches this run "
          f"({time.perf_counter() - t0:.0f} s; 0 when reused)")
    train = ShuffledBatches(open_cache(args.cache / TRAIN, train_ctx), args.batch_tokens, seed=0)
    held = open_cache(args.cache / "eval", eval_ctx)
    x, y = zip(*(held.shard(i) for i in range(len(held.shards))), strict=True)
    return train, (torch.cat(x, 1)[0].float(), torch.cat(y, 1)[0].float())


def fvu(y, y_hat):
    y, y_hat = y.double(), y_hat.double()
    return float((y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum())


def train_ours(batches, steps, args, held):
    """Our loop (train_transcoders' step) for one layer: TranscoderStack + Adam + schedule."""
    from torch.optim import Adam

    from tl_circuits.training.stack import TranscoderStack
    from tl_circuits.training.train import _lr_factor

    d = held[0].shape[-1]
    stack = TranscoderStack(1, d, d, args.d_sae, kind="topk", k=args.k, seed=0)
    opt = Adam(stack.parameters(), lr=args.lr)
    dead_after = 20 * args.batch_tokens
    t0 = time.perf_counter()
    for step in range(steps):
        x, y = batches.batch(step)
        if step == 0:
            stack.init_from_batch(x, y)
        for group in opt.param_groups:
            group["lr"] = args.lr * _lr_factor(step, steps)
        out = stack(x, y, aux_k=4 * args.k, dead_after=dead_after)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        stack.count_firing(out["fired"], x.shape[1])
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        y_hat = stack.reconstruct(held[0][None])[0]
        l0 = float((stack._run(held[0][None]).l0)[0])
    return {"fvu": fvu(held[1], y_hat), "l0": l0, "seconds": seconds}, stack


def train_saelens(batches, steps, args, held, scales, *, lr, autocast):
    """SAELens' SAETrainer and TopKTrainingSAE, reconstructing the MLP output from its input."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.sae import TrainStepOutput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    class TopKTranscoder(TopKTrainingSAE):
        """The SAE's training pass, with input x and target y (``sae_in = [x, y]``)."""

        def training_forward_pass(self, step_input):  # type: ignore[override]
            x, y = step_input.sae_in.split(self.cfg.d_in, dim=-1)
            acts, pre = self.encode_with_hidden_pre(x)
            y_hat = self.decode(acts)
            mse = self.mse_loss_fn(y_hat, y).sum(-1).mean()
            aux = self.calculate_topk_aux_loss(sae_in=y, sae_out=y_hat, hidden_pre=pre,
                                               dead_neuron_mask=step_input.dead_neuron_mask)
            return TrainStepOutput(sae_in=y, sae_out=y_hat, feature_acts=acts, hidden_pre=pre,
                                   loss=mse + aux, losses={"mse_loss": mse, "aux": aux})

    d = held[0].shape[-1]
    s_in, s_out = scales
    sae = TopKTranscoder(TopKTrainingSAEConfig(d_in=d, d_sae=args.d_sae, k=args.k,
                                               apply_b_dec_to_input=False))

    def provider():
        step = 0
        while True:
            x, y = batches.batch(step)
            yield torch.cat([x[0] * s_in, y[0] * s_out], -1)
            step += 1

    cfg = SAETrainerConfig(
        total_training_samples=steps * args.batch_tokens, train_batch_size_samples=args.batch_tokens,
        lr=lr, lr_warm_up_steps=max(1, steps // 20), lr_decay_steps=steps // 5, lr_end=0.0,
        autocast=autocast, dead_feature_window=20, feature_sampling_window=10**9, device="cpu",
    )
    trainer = SAETrainer(cfg, sae, provider())
    t0 = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        acts = sae.encode(held[0] * s_in)
        y_hat = sae.decode(acts) / s_out
    return {"fvu": fvu(held[1], y_hat), "l0": float((acts > 0).sum(-1).float().mean()),
            "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer", type=int, default=3)
    p.add_argument("--tokens", type=int, default=49_152, help="training tokens (both trainers)")
    p.add_argument("--eval-tokens", type=int, default=4_096)
    p.add_argument("--ctx-len", type=int, default=128)
    p.add_argument("--batch-tokens", type=int, default=1024)
    p.add_argument("--d-sae", type=int, default=2304, help="width (4 x d_model)")
    p.add_argument("--k", type=int, default=32, help="TopK k: the target L0")
    p.add_argument("--lr", type=float, default=2e-3, help="our learning rate")
    p.add_argument("--saelens-lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    p.add_argument("--cache", type=Path, default=None,
                   help="activation cache folder (default: the tl_circuits cache home)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.cache is None:
        from tl_circuits.training.corpus import cache_home

        args.cache = cache_home() / "bench-train-vs-saelens" / f"layer{args.layer}-ctx{args.ctx_len}"
    batches, held = cached_batches(args)
    steps = args.tokens // args.batch_tokens
    tokens = steps * args.batch_tokens
    ours, stack = train_ours(batches, steps, args, held)
    scales = (float(stack.in_scale[0]), float(stack.out_scale[0]))
    rows = {"tl_circuits": ours}
    for autocast in (False, True):
        runs = {lr: train_saelens(batches, steps, args, held, scales, lr=lr, autocast=autocast)
                for lr in args.saelens_lrs}
        best = min(runs, key=lambda lr: runs[lr]["fvu"])
        for lr, r in runs.items():
            print(f"  SAELens autocast={autocast} lr={lr:g}: FVU {r['fvu']:.4f}, "
                  f"{tokens / r['seconds']:.0f} tokens/s")
        rows[f"SAELens ({'bf16 autocast' if autocast else 'float32'}, lr {best:g})"] = runs[best]
    print(f"\nlayer {args.layer}, {tokens} training tokens ({steps} steps of {args.batch_tokens}), "
          f"width {args.d_sae}, k {args.k}, held-out {held[0].shape[0]} tokens, "
          f"{torch.get_num_threads()} threads")
    print(f"{'trainer':42s} {'FVU':>8s} {'L0':>6s} {'tokens/s':>9s}")
    for name, r in rows.items():
        print(f"{name:42s} {r['fvu']:8.4f} {r['l0']:6.1f} {tokens / r['seconds']:9.0f}")
    for name, r in list(rows.items())[1:]:
        print(f"ours / {name}: FVU ratio {ours['fvu'] / r['fvu']:.3f}, "
              f"speed ratio {r['seconds'] / ours['seconds']:.2f}x")


if __name__ == "__main__":
    main()
