"""Trainable transcoders for every layer at once: per-layer or cross-layer, TopK or JumpReLU.

Inputs and outputs are trained in normalised units (each layer scaled so its mean squared norm is
``d``), and the scales are folded into the weights on export, so an exported transcoder reads
and writes the model's raw activations. For layer ``l`` (``x`` its MLP input, ``y_m`` MLP outputs)::

    pre_l   = (s_l x_l) @ W_enc_l + b_enc_l                               [n, d_sae]
    acts_l  = TopK_k(pre_l)  |  pre_l * (pre_l > exp(log_threshold_l))     (JumpReLU)
    y_hat_m = (sum_{l in src(m)} acts_l @ W_dec_{l->m} + b_dec_m + (s_m x_m) @ W_skip_m.T) / t_m

with ``src(m) = {m}`` for per-layer transcoders and ``{0..m}`` for a cross-layer transcoder. TopK
decodes with ``embedding_bag`` over the k active rows (a gather, never a dense [n, d_sae] matmul).
JumpReLU uses the straight-through estimator of Rajamanoharan et al. 2024 for its threshold. The
activation functions and their training forms come from :mod:`tl_circuits.transcoders.activations`,
the registry the exported transcoders use at inference. ``W_skip_m`` is ``[d_out, d_in]`` here, in
the exported transcoders (per-layer and cross-layer) and in ``reconstruct``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn

from tl_circuits.transcoders import CrossLayerTranscoder, Transcoder, TranscoderSet
from tl_circuits.transcoders.activations import (
    jumprelu_ste,
    step_ste,
    topk_sparse,
    trainable_activation,
)

if TYPE_CHECKING:
    from tl_circuits.training.comm import Comm


class _Pass(NamedTuple):
    """One encode-decode pass of every layer, in normalised units."""

    recon: torch.Tensor  # [L, n, d_out]
    pre: torch.Tensor  # [L, n, d_sae]
    fired: torch.Tensor  # [L, d_sae] bool: features active on some token
    l0: torch.Tensor  # [L] mean active features per token
    sparsity: torch.Tensor  # [] JumpReLU L0 penalty (straight-through), 0 for TopK


class TranscoderStack(nn.Module):
    """Parameters and forward pass of the transcoders being trained (see module docstring)."""

    in_scale: torch.Tensor
    out_scale: torch.Tensor
    since_fired: torch.Tensor
    W_dec: nn.ParameterList
    #: Set by :mod:`tl_circuits.training.distributed`: a data-parallel or feature-sharded run.
    comm: Comm | None = None

    def __init__(
        self,
        n_layers: int,
        d_in: int,
        d_out: int,
        d_sae: int,
        *,
        kind: str = "topk",
        k: int = 32,
        skip: bool = False,
        cross_layer: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        trainable_activation(kind)
        self.n_layers, self.d_in, self.d_out, self.d_sae = n_layers, d_in, d_out, d_sae
        self.kind, self.k, self.skip, self.cross_layer = kind, k, skip, cross_layer
        gen = torch.Generator().manual_seed(seed)
        L = n_layers
        w_dec = torch.randn(L, d_sae, d_out, generator=gen)
        w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True) * 0.1
        w_enc = torch.randn(L, d_in, d_sae, generator=gen) / math.sqrt(d_in)
        self.W_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(L, d_sae))
        self.b_dec = nn.Parameter(torch.zeros(L, d_out))
        if cross_layer:
            # W_dec[l]: [d_sae, (L - l) * d_out], the rows written to layers l..L-1 side by side.
            self.W_dec = nn.ParameterList(
                [nn.Parameter(w_dec[i].repeat(1, L - i) / math.sqrt(L - i)) for i in range(L)]
            )
        else:
            self.W_dec_stacked = nn.Parameter(w_dec)
        self.W_skip = nn.Parameter(torch.zeros(L, d_out, d_in)) if skip else None
        self.log_threshold = (
            nn.Parameter(torch.full((L, d_sae), math.log(0.1))) if kind == "jumprelu" else None
        )
        self.register_buffer("in_scale", torch.ones(L))
        self.register_buffer("out_scale", torch.ones(L))
        self.register_buffer("since_fired", torch.zeros(L, d_sae, dtype=torch.long))

    def decoder(self, layer: int) -> Float[torch.Tensor, "d_sae width"]:
        """Layer's decoder as one embedding matrix (cross-layer: all written layers side by side)."""
        return self.W_dec[layer] if self.cross_layer else self.W_dec_stacked[layer]

    @torch.no_grad()
    def init_from_batch(
        self, x: Float[torch.Tensor, "L n d_in"], y: Float[torch.Tensor, "L n d_out"]
    ) -> None:
        """Set the normalisation scales and ``b_dec`` (the mean output) from a first batch."""
        self.in_scale.copy_((self.d_in / x.float().pow(2).sum(-1).mean(-1)).sqrt())
        self.out_scale.copy_((self.d_out / y.float().pow(2).sum(-1).mean(-1)).sqrt())
        self.b_dec.copy_((y.float() * self.out_scale[:, None, None]).mean(1))

    def pre_activations(self, xn: Float[torch.Tensor, "L n d_in"]) -> Float[torch.Tensor, "L n d_sae"]:
        """Every layer's encoder pre-activations in one batched product (bfloat16 on CPU)."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._bf16(xn)):
            pre = torch.bmm(xn, self.W_enc)
        return pre.to(xn.dtype) + self.b_enc[:, None, :]

    def forward(
        self, x: Float[torch.Tensor, "L n d_in"], y: Float[torch.Tensor, "L n d_out"],
        *, aux_k: int = 0, dead_after: int = 0,
    ) -> dict[str, torch.Tensor]:
        """Losses and metrics of one batch: ``loss`` (to minimise), per-layer ``fvu``/``l0``.

        All layers go through batched operations (one ``bmm``, one ``topk``, one
        ``embedding_bag``): indexing a stacked parameter layer by layer would make autograd
        write a full-size zero gradient per layer, which used to cost most of a step.
        """
        run = self._run(x)
        recon, pre = run.recon, run.pre
        yn = y.to(self.W_enc.dtype) * self.out_scale[:, None, None]
        # With data parallelism the means run over every rank's tokens, so the summed gradients
        # are those of the global batch.
        per_layer_se = self._token_mean((recon - yn).pow(2).sum(-1))
        var = self._token_var(yn)
        fvu = per_layer_se / var.clamp_min(1e-12)
        loss = fvu.sum()
        aux_loss = torch.zeros(())
        if self.kind == "topk" and aux_k > 0 and dead_after > 0 and not self.cross_layer:
            aux_loss = self._aux_loss(pre, recon, yn, aux_k, dead_after)
            loss = loss + aux_loss / 32
        if self.kind == "jumprelu":
            loss = loss + self.sparsity_coef * run.sparsity
        fvu = fvu.detach()
        if self.comm is not None and self.comm.data_parallel:
            fvu = self.comm.all_sum(fvu.clone())
        return {"loss": loss, "fvu": fvu, "l0": run.l0.detach(), "aux": aux_loss.detach(),
                "fired": run.fired}

    def _token_mean(self, t: Float[torch.Tensor, "L n"]) -> Float[torch.Tensor, " L"]:
        """Mean over the tokens of the (global) batch; data parallel: this rank's share of it."""
        if self.comm is not None and self.comm.data_parallel:
            return t.sum(1) / (t.shape[1] * self.comm.world)
        return t.mean(1)

    def _token_var(self, t: Float[torch.Tensor, "L n d"]) -> Float[torch.Tensor, " L"]:
        """Per-layer variance (summed over d) of constants over the tokens of the global batch."""
        if self.comm is not None and self.comm.data_parallel:
            t = t.detach().double()
            stats = self.comm.all_sum(torch.cat([t.sum(1), t.pow(2).sum((1, 2))[:, None]], 1))
            n = t.shape[1] * self.comm.world
            mean, sq = stats[:, :-1] / n, stats[:, -1] / n
            return (sq - mean.pow(2).sum(-1)).to(self.W_enc.dtype)
        return (t - t.mean(1, keepdim=True)).pow(2).sum(-1).mean(-1)

    def reconstruct(self, x: Float[torch.Tensor, "L n d_in"]) -> Float[torch.Tensor, "L n d_out"]:
        """Every layer's reconstruction of its MLP output in raw units, ``y_hat_m`` of the module
        docstring: what the exported transcoders compute (bfloat16 encoders on CPU in float32,
        as in training; exact in float64)."""
        return self._run(x).recon / self.out_scale[:, None, None]

    def _run(self, x: Float[torch.Tensor, "L n d_in"]) -> _Pass:
        """Encode and decode every layer in batched operations (see ``forward``)."""
        L, n = x.shape[0], x.shape[1]
        xn = x.to(self.W_enc.dtype) * self.in_scale[:, None, None]
        base = self.b_dec[:, None, :].expand(L, n, self.d_out)
        if self.W_skip is not None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._bf16(xn)):
                skip = torch.bmm(xn, self.W_skip.transpose(1, 2))
            base = base + skip.to(xn.dtype)
        pre = self.pre_activations(xn)
        sparsity = torch.zeros(())
        sharded = self.comm is not None and self.comm.feature_sharded
        if self.kind == "topk":
            if sharded:
                assert self.comm is not None
                vals, idx, live, l0 = self.comm.global_topk(pre, self.k)
            else:
                vals, idx = topk_sparse(pre, self.k)
                live = vals > 0
                l0 = live.to(xn.dtype).sum(-1).mean(-1)
            fired = torch.zeros(L * self.d_sae, dtype=torch.bool, device=pre.device)
            fired[self._flat(idx)[live]] = True
            fired = fired.view(L, self.d_sae)
            if self.cross_layer:
                outs = [F.embedding_bag(i, self.decoder(la), per_sample_weights=v, mode="sum")
                        for la, (i, v) in enumerate(zip(idx.unbind(0), vals.unbind(0), strict=True))]
            else:
                outs = self._decode_topk(idx, vals)
        else:
            assert self.log_threshold is not None
            thr = self.log_threshold[:, None, :]
            acts = jumprelu_ste(pre, thr)
            fired = (acts > 0).any(1)
            sparsity = self._token_mean(step_ste(pre, thr).sum(-1)).mean()
            l0 = (acts > 0).to(xn.dtype).sum(-1).mean(-1)
            if sharded:  # each rank holds a slice of the features: sum the slices
                assert self.comm is not None
                sparsity = self.comm.sum_shards(sparsity)
                l0 = self.comm.all_sum(l0.detach().clone())
            if self.cross_layer:
                outs = [a @ self.decoder(la) for la, a in enumerate(acts.unbind(0))]
            else:
                outs = torch.bmm(acts, self.W_dec_stacked)
        if sharded:
            assert self.comm is not None
            return _Pass(base + self.comm.sum_shards(self._reconstruct(torch.zeros_like(base), outs)),
                         pre, fired, l0, sparsity)
        return _Pass(self._reconstruct(base, outs), pre, fired, l0, sparsity)

    @torch.no_grad()
    def count_firing(self, fired: torch.Tensor, n_tokens: int) -> None:
        """Advance the tokens-since-fired counters after a step (``fired``: [L, d_sae] bool)."""
        self.since_fired += n_tokens
        self.since_fired[fired] = 0

    sparsity_coef: float = 1e-3
    #: Encoder and skip products in bfloat16 on CPU (benchmarks/train_speed.py measures both).
    bf16_products: bool = True

    def _bf16(self, x: torch.Tensor) -> bool:
        return self.bf16_products and x.device.type == "cpu"

    def _flat(self, idx: torch.Tensor) -> torch.Tensor:
        """Per-layer feature ids ``[L, ...]`` as rows of the stacked decoder ``[L * d_sae, d]``."""
        offsets = torch.arange(idx.shape[0], device=idx.device) * self.d_sae
        return idx + offsets.view(-1, *([1] * (idx.dim() - 1)))

    def _decode_topk(self, idx: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        """Per-layer TopK decode of all layers in one ``embedding_bag`` over the stacked decoder."""
        L, n, k = idx.shape
        out = F.embedding_bag(self._flat(idx).reshape(L * n, k),
                              self.W_dec_stacked.reshape(L * self.d_sae, self.d_out),
                              per_sample_weights=vals.reshape(L * n, k), mode="sum")
        return out.view(L, n, self.d_out)

    def _reconstruct(self, base: torch.Tensor, outs: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Sum of bias, skip and feature writes per output layer (cross-layer: every later layer)."""
        if isinstance(outs, torch.Tensor):
            return base + outs
        recon = list(base.unbind(0))
        for layer, out in enumerate(outs):
            for j, m in enumerate(range(layer, self.n_layers)):
                recon[m] = recon[m] + out[:, j * self.d_out : (j + 1) * self.d_out]
        return torch.stack(recon)

    def _aux_loss(self, pre, recon, yn, aux_k, dead_after) -> torch.Tensor:
        """AuxK (Gao et al. 2024): dead features reconstruct the residual error of their layer."""
        dead = self.since_fired >= dead_after
        n_dead = dead.sum(-1)
        if int(n_dead.max()) == 0:
            return torch.zeros(())
        err = (yn - recon).detach()
        masked = pre.masked_fill(~dead[:, None, :], float("-inf"))
        vals, idx = masked.topk(min(aux_k, int(n_dead.max())), dim=-1, sorted=False)
        out = self._decode_topk(idx, vals.relu())
        denom = self._token_var(err).clamp_min(1e-12)
        per_layer = self._token_mean((out - err).pow(2).sum(-1)) / denom
        return per_layer[n_dead > 0].sum()

    @torch.no_grad()
    def export(
        self, hook_in: list[str], hook_out: list[str], cfg_extra: dict
    ) -> TranscoderSet | CrossLayerTranscoder:
        """Transcoders in raw units (scales folded in), with ``cfg_extra`` in each config; they
        compute :meth:`reconstruct` (``W_skip`` stays ``[d_out, d_in]``, the transcoders' layout)."""
        s_in, s_out = self.in_scale, self.out_scale
        W_enc = [(self.W_enc[la] * s_in[la]).clone() for la in range(self.n_layers)]
        thr = None
        if self.log_threshold is not None:
            thr = [self.log_threshold[la].exp().clone() for la in range(self.n_layers)]
        b_dec = [(self.b_dec[m] / s_out[m]).clone() for m in range(self.n_layers)]
        W_skip = None
        if self.W_skip is not None:
            W_skip = [(self.W_skip[m] * s_in[m] / s_out[m]).clone() for m in range(self.n_layers)]
        activation = "topk" if self.kind == "topk" else "jumprelu"
        if self.cross_layer:
            W_dec = []
            for la in range(self.n_layers):
                rows = self.W_dec[la].view(self.d_sae, self.n_layers - la, self.d_out)
                W_dec.append((rows / s_out[la:, None]).clone())
            return CrossLayerTranscoder(
                W_enc=W_enc, b_enc=[self.b_enc[la].clone() for la in range(self.n_layers)],
                W_dec=W_dec, b_dec=b_dec, threshold=thr, W_skip=W_skip,
                activation=activation, k=self.k if activation == "topk" else None,
                hook_in=hook_in, hook_out=hook_out, extra_config=cfg_extra,
            )
        transcoders = []
        for la in range(self.n_layers):
            tc = Transcoder(
                W_enc[la], self.b_enc[la].clone(), (self.W_dec_stacked[la] / s_out[la]).clone(),
                b_dec[la], hook_name=hook_in[la], hook_name_out=hook_out[la],
                activation=activation, k=self.k if activation == "topk" else None,
                threshold=None if thr is None else thr[la],
                W_skip=None if W_skip is None else W_skip[la],
            )
            tc.cfg["training"] = dict(cfg_extra.get("training", {}))
            tc.cfg["metrics"] = {
                key: (value[la] if isinstance(value, list) else value)
                for key, value in cfg_extra.get("metrics", {}).items()
            }
            transcoders.append(tc)
        return TranscoderSet(transcoders)
