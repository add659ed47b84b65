"""Rows of the adjacency matrix from batched backward passes over one retained forward graph.

Row ``t`` holds the direct effects on node ``t``: ``A[t, s] = < v_s , d h_t / d y(site_s) >``
where ``h_t`` is the target's linear read-out and ``v_s`` what source ``s`` writes at its site
``y(site_s)``. The forward pass holds one copy of the prompt; rows come in chunks of up to ``batch``
read-outs, and each chunk is one backward pass vmapped over its read-outs
(``torch.func.vmap`` over ``torch.autograd.grad``). The frozen attention products take the
backward pass of :mod:`tl_circuits.replacement.frozen_attention`: the read-outs become columns of
one product with each pattern (no copy of it), and the pass runs on the chunk's causal prefix only
(positions up to its last read-out; chunks hold rows sorted by layer and position): on a forward
pass of that prefix (rounded up to :func:`prefix_step` positions, made once per length, its patterns
views of the prompt's), so that the projections, norms and residual adds stop there too. The
gradients at the write sites are contracted with every source's write vector.

Where some pattern does not take that road (a host whose attention multiplies it otherwise, a
remote trace) or with :data:`REFERENCE`, the straightforward passes are used: vmapped
(``is_grads_batched``) for short prompts, one per read-out from ``VMAP_BELOW`` on, since
PyTorch's batching rule copies every frozen pattern once per read-out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from ..replacement import ReplacementState
from ..transcoders import Transcoders
from .layout import NodeLayout

#: A chunk of ``b`` read-outs over ``p`` positions gets one vmapped backward pass when
#: ``b * p**2 < VMAP_BELOW``, else one pass per read-out: vmap copies each layer's frozen
#: attention pattern (``heads x p x p``) once per read-out, which outgrows what batching saves.
#: Measured on SmolLM2 (2 CPU cores, demo transcoders; benchmarks/backward.py), looped / vmapped
#: time per row: chunks of 4: 0.98 at 384 positions, 0.63 at 512, 0.24 at 2,048; chunks of 32:
#: 0.95 at 64 and 96, 0.54 at 128; chunks of 64: 0.65 at 64. Below the threshold vmap wins (up
#: to 2.4x at 16 positions) or the two are within 5%.
VMAP_BELOW = 2**18

#: From this many positions on, the batched path puts only read-outs of one layer in a chunk
#: (sorted by position): a chunk's backward pass costs each read-out its deepest layer and last
#: position, which outweighs what batching saves once the prompt is long. Measured on SmolLM2
#: (benchmarks/backward.py, 32 random rows, chunks of 16): batched / reference time per row with
#: chunks across layers 0.53 at 128 positions, 1.12 at 512; grouped by layer 0.40 at 512.
GROUP_FROM = 256

#: On that grouped path a chunk's read-outs times the positions of its pass stay at most this
#: many (``batch`` still bounds the read-outs; one read-out always goes): the pass's gradients are
#: ``read-outs x positions x d_model`` at every layer, and once they outgrow the caches a bigger
#: chunk costs more per row, not less. Measured on SmolLM2 (``benchmarks/chunk_size.py``, 2,048
#: tokens, rows of layer 15), ms per row for chunks of 1 / 2 / 4 / 8 / 16: positions below 1,024:
#: 230 / 227 / 217 / 212 / 302; below 2,048: 621 / 591 / 545 / 688 / 819.
CHUNK_POSITIONS = 8192

#: A chunk whose read-outs stop before position ``n - PREFIX_STEP`` runs its backward pass on a
#: forward pass of its causal prefix only (rounded up to a multiple of ``PREFIX_STEP``; one such
#: pass per length, kept for the engine's life, its patterns views of the prompt's): every layer's
#: projections, norms and residual adds then cost the prefix, not the prompt. See
#: docs/performance.md for the measured choice.
PREFIX_STEP = 256

#: At most this many prefix lengths per prompt: on prompts longer than ``PREFIX_PASSES *
#: PREFIX_STEP`` the step grows to ``n / PREFIX_PASSES`` (rounded up to a multiple of
#: ``PREFIX_STEP``), so the kept prefix passes together hold the activations of at most
#: ``(PREFIX_PASSES - 1) / 2`` prompts (3.5 at 8: about 0.9 GB at 2,048 tokens on SmolLM2), not a
#: number growing with the prompt (15 passes, 7.5 prompts, at 4,096 tokens with a fixed step).
PREFIX_PASSES = 8

#: True: the straightforward backward passes (plain detached patterns, no prefix), the reference
#: the batched ones are tested against (graphs equal to float64 round-off).
REFERENCE = False


@dataclass
class ReadOuts:
    """Targets to read in one backward pass: a site (layer, or None for the final residual),
    a position and a direction each."""

    layer: list[int | None]
    pos: list[int]
    vectors: Float[torch.Tensor, "n d"]


def prefix_step(n_pos: int) -> int:
    """Prefix lengths are multiples of this for a prompt of ``n_pos`` positions."""
    return max(1, -(-n_pos // (PREFIX_PASSES * PREFIX_STEP))) * PREFIX_STEP


class RowEngine:
    """Computes adjacency rows for read-outs, reusing one replacement forward pass."""

    def __init__(self, state: ReplacementState, layout: NodeLayout, transcoders: Transcoders,
                 batch: int, *, errors: dict[int, torch.Tensor] | None = None,
                 keep_writes: bool = True):
        """``errors``: the error nodes' vectors per layer (default: the state's; a feature pool
        folds dropped features into them). ``keep_writes=False`` rebuilds each layer's write
        block per pass instead of holding all of them (for one pass over millions of features)."""
        self.state = state
        self.layout = layout
        self.transcoders = transcoders
        self.errors = state.errors if errors is None else errors
        if int(state.logits.shape[0]) != 1:
            raise ValueError("RowEngine vmaps its backward passes over one forward copy (batch 1)")
        self.batch = batch
        #: every frozen pattern takes the batched backward pass (and the prefix limit)
        self.fast = state.patterns is not None and state.patterns.all_routed and not REFERENCE
        self.vmapped = self.fast or batch * layout.n_pos**2 < VMAP_BELOW
        self.n_layers = layout.n_layers
        self._prefixes: dict[int, ReplacementState] = {}  # forward passes of prompt prefixes
        # What each feature writes, per output layer (activation * decoder row), padded by
        # position so that one batched product contracts a whole layer's features.
        self.writes: dict[int, dict[int, PaddedWrites]] | None = (
            {layer: self._layer_writes(layer) for layer in transcoders.layers} if keep_writes else None
        )

    def _layer_writes(self, layer: int) -> dict[int, PaddedWrites]:
        layout = self.layout
        sl = layout.feature_slice(layer)
        idx = layout.feat_idx[sl].to(layout.feat_act.device)
        act = layout.feat_act[sl]
        return {
            out: PaddedWrites.build(layout.feat_pos[sl], vec * act[:, None], layout.n_pos)
            for out, vec in self.transcoders.decoder_vectors(layer, idx).items()
        }

    def rows(self, reads: ReadOuts) -> Float[torch.Tensor, "n n_nodes"]:
        """Adjacency rows for the read-outs (in their order), in chunks of at most ``batch``."""
        out = torch.empty(len(reads.pos), self.layout.n_nodes, dtype=self.state.logits.dtype,
                          device=self.state.logits.device)
        for idx in self._chunks(reads):
            chunk = ReadOuts([reads.layer[i] for i in idx], [reads.pos[i] for i in idx],
                             reads.vectors[torch.tensor(idx, device=reads.vectors.device)])
            out[torch.tensor(idx, device=out.device)] = self._chunk_rows(chunk)
        return out

    def _chunks(self, reads: ReadOuts) -> list[list[int]]:
        """Which read-outs share a backward pass. A vmapped pass costs every read-out as much as
        the chunk's deepest layer and last position, so from ``GROUP_FROM`` positions on the
        batched path groups read-outs of one layer (sorted by position, so each chunk's causal
        prefix is short where it can be); below it, and on the reference path, they go in order,
        ``batch`` at a time (one at a time on a reference path that is not vmapped). Grouped chunks
        also keep read-outs x pass positions within :data:`CHUNK_POSITIONS`."""
        n = len(reads.pos)
        if not self.fast or self.layout.n_pos < GROUP_FROM:
            step = self.batch if self.vmapped else 1
            return [list(range(lo, min(lo + step, n))) for lo in range(0, n, step)]
        key = [(self.n_layers if la is None else la, p) for la, p in zip(reads.layer, reads.pos, strict=True)]
        chunks: list[list[int]] = []
        for i in sorted(range(n), key=key.__getitem__):
            length = self._pass_length(key[i][1] + 1)  # a chunk ending with read-out i
            if (chunks and len(chunks[-1]) < self.batch and key[chunks[-1][0]][0] == key[i][0]
                    and (len(chunks[-1]) + 1) * length <= CHUNK_POSITIONS):
                chunks[-1].append(i)
            else:
                chunks.append([i])
        return chunks

    def _chunk_rows(self, reads: ReadOuts) -> Float[torch.Tensor, "b n_nodes"]:
        state, layout = self.state, self.layout
        assert state.embed is not None and state.resid_final is not None
        n = len(reads.pos)
        grads = self.gradients(reads)
        # Gradients are zero past the prefix the read-outs reach: contract the prefix only.
        end = self._limit(reads) or layout.n_pos
        g_write = [None if g is None else g[:, :end] for g in grads[:-1]]
        g_embed = None if grads[-1] is None else grads[-1][:, :end]
        rows = torch.zeros(n, layout.n_nodes, dtype=state.embed.dtype, device=state.embed.device)
        for layer in self.transcoders.layers:
            per_out = self.writes[layer] if self.writes is not None else self._layer_writes(layer)
            sl = layout.feature_slice(layer)
            for out_layer, padded in per_out.items():
                g = g_write[out_layer]
                if g is not None:
                    got = padded.contract(g)
                    rows[:, sl.start : sl.start + got.shape[1]] += got
        start = layout.start
        for m, g in enumerate(g_write):
            if g is not None and end > start:
                lo = layout.error_slice(m).start
                rows[:, lo : lo + end - start] = (g[:, start:] * self.errors[m][start:end]).sum(-1)
        tok = layout.token_offset
        if g_embed is not None:
            rows[:, tok : tok + end] = (g_embed * state.embed[0, :end].detach()).sum(-1)
        if start == 1:
            for m, g in enumerate(g_write):
                if g is not None:
                    rows[:, tok] += (g[:, 0] * state.mlp_out[m][0]).sum(-1)
        return rows

    def read_tensor(self, site: int | None) -> Float[torch.Tensor, "batch pos d"]:
        """What a read-out at ``site`` reads: the transcoder input of layer ``site``, or the final
        residual (None). :mod:`tl_circuits.attention` reads queries and keys (negative sites)."""
        tensor = self.state.resid_final if site is None else self.state.x_in[site]
        assert tensor is not None
        return tensor

    def reach(self, site: int | None) -> int:
        """How many layers' writes can reach a read-out at ``site`` (an upper bound): all of them
        for the final residual and for the sites of subclasses (negative), else up to ``site``."""
        return self.n_layers if site is None or site < 0 else min(site + 1, self.n_layers)

    def _limit(self, reads: ReadOuts) -> int | None:
        """Positions the read-outs can reach (causal attention: up to the last read-out's), or
        None for all of them (the reference path, or a pattern that is not causal)."""
        scope = self.state.patterns
        if not self.fast or scope is None or not scope.causal:
            return None
        return max(reads.pos) + 1

    @contextlib.contextmanager
    def _prefix(self, reads: ReadOuts) -> Iterator[None]:
        """The frozen patterns' backward passes stop after the last read-out's position."""
        scope = self.state.patterns
        limit = self._limit(reads)
        if limit is None or scope is None:
            yield
            return
        scope.limit = limit
        try:
            yield
        finally:
            scope.limit = None

    def _state_for(self, reads: ReadOuts) -> ReplacementState:
        """The forward pass the read-outs' backward pass runs on: the prompt's, or (batched path,
        causal patterns, read-outs at transcoder inputs or the final residual) that of the
        shortest prefix in steps of :func:`prefix_step` that holds them, made on first use."""
        limit = self._limit(reads)
        n_pos = self.layout.n_pos
        if limit is None or self.state.prefix is None or any(la is not None and la < 0 for la in reads.layer):
            return self.state
        length = self._pass_length(limit)
        if length >= n_pos:
            return self.state
        if length not in self._prefixes:
            self._prefixes[length] = self.state.prefix(length)
        return self._prefixes[length]

    def _pass_length(self, limit: int) -> int:
        """Positions of the forward pass that read-outs reaching ``limit`` positions run on: the
        prefix rounded up to a multiple of :func:`prefix_step`, at most the prompt."""
        step = prefix_step(self.layout.n_pos)
        return min(-(-limit // step) * step, self.layout.n_pos)

    def _site(self, state: ReplacementState, site: int | None) -> Float[torch.Tensor, "batch pos d"]:
        """:meth:`read_tensor` of the prompt's pass, or the same site of a prefix's."""
        if state is self.state:
            return self.read_tensor(site)
        tensor = state.resid_final if site is None else state.x_in[site]
        assert tensor is not None
        return tensor

    def gradients(self, reads: ReadOuts) -> list[Float[torch.Tensor, "b pos d"] | None]:
        """Gradients of the read-outs at every write site and at the embeddings (None where no
        read-out reaches): one backward pass, vmapped over the read-outs when there are several.
        The position axis is that of the pass they ran on (a prefix of the prompt, or all of
        it); positions past the read-outs' last one hold zeros."""
        with self._prefix(reads):
            return self._gradients_in_scope(reads, self._state_for(reads))

    def _gradients_in_scope(self, reads: ReadOuts,
                            state: ReplacementState) -> list[Float[torch.Tensor, "b pos d"] | None]:
        assert state.embed is not None
        n = len(reads.pos)
        # Writes above the highest read-out's layer cannot reach it.
        top = max(self.reach(la) for la in reads.layer)
        inputs = [state.writes[m] for m in range(top)] + [state.embed]
        none: list[Float[torch.Tensor, "b pos d"] | None] = [None] * (self.n_layers - top)
        outputs, grad_outputs = [], []
        for site in sorted(set(reads.layer), key=lambda la: -1 if la is None else la):
            tensor = self._site(state, site)
            here = [b for b, la in enumerate(reads.layer) if la == site]
            seed = tensor.new_zeros(n, *tensor.shape[1:])
            seed[here, [reads.pos[b] for b in here]] = reads.vectors[here].to(seed.dtype)
            outputs.append(tensor)
            grad_outputs.append(seed)
        if n == 1:  # the forward pass has batch 1: the seed is already shaped like the tensor read
            grads = list(torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph=True,
                                             allow_unused=True))
            return grads[:-1] + none + grads[-1:]
        seeds = [g.unsqueeze(1) for g in grad_outputs]
        if self.fast:
            def one(*seed: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return torch.autograd.grad(outputs, inputs, seed, retain_graph=True,
                                           materialize_grads=True)

            batched = list(torch.func.vmap(one)(*seeds))
        else:
            batched = list(torch.autograd.grad(outputs, inputs, seeds, retain_graph=True,
                                               allow_unused=True, is_grads_batched=True))
        grads = [None if g is None else g[:, 0] for g in batched]
        return grads[:-1] + none + grads[-1:]


@dataclass
class PaddedWrites:
    """Write vectors of one layer's features grouped by position, padded to equal counts.

    Only positions that hold a feature get a slot row (a feature pool leaves most positions of a
    long prompt empty). ``vecs[r, j]`` is the j-th feature at position ``positions[r]`` (zeros
    past its count); ``slot[i]`` is where feature i (in column order) sits in the flattened
    [rows * max_count] grid.
    """

    vecs: Float[torch.Tensor, "rows max_count d"]
    positions: Int[torch.Tensor, " rows"]
    slot: Int[torch.Tensor, " n"]

    @classmethod
    def build(cls, pos: Int[torch.Tensor, " n"], vecs: Float[torch.Tensor, "n d"], n_pos: int) -> PaddedWrites:
        counts = torch.bincount(pos, minlength=n_pos)
        positions = counts.nonzero().flatten()
        width = int(counts.max()) if pos.numel() else 0
        row_of = torch.full((n_pos,), -1, dtype=torch.long)
        row_of[positions] = torch.arange(positions.numel())
        first = torch.cumsum(counts, 0) - counts  # features are sorted by position
        within = torch.arange(pos.numel()) - first[pos]
        slot = (row_of[pos] * width + within).to(vecs.device)
        padded = vecs.new_zeros(positions.numel() * width, vecs.shape[1])
        padded[slot] = vecs
        return cls(padded.view(positions.numel(), width, -1), positions.to(vecs.device), slot)

    def contract(self, grad: Float[torch.Tensor, "b pos d"]) -> Float[torch.Tensor, "b m"]:
        """``out[b, i] = < grad[b, pos_i], vecs_i >`` as one batched product over positions, for
        the first ``m`` features: those at positions below ``grad.shape[1]`` (features sort by
        position, so they come first; the rest read zero gradients)."""
        n_rows = int(torch.searchsorted(self.positions, grad.shape[1]))
        if n_rows == self.positions.numel():
            m = self.slot.numel()
        else:  # the first feature in row n_rows is the first one left out
            m = int(torch.searchsorted(self.slot, n_rows * self.vecs.shape[1]))
        g = grad[:, self.positions[:n_rows]].transpose(0, 1)  # rows b d
        per_pos = torch.bmm(g, self.vecs[:n_rows].transpose(1, 2))  # rows b width
        return per_pos.transpose(0, 1).reshape(grad.shape[0], -1)[:, self.slot[:m]]


def target_reads(
    vectors: Float[torch.Tensor, "n_targets d_model"], last_pos: int
) -> ReadOuts:
    """Read-outs of the target nodes: directions on the final residual at the last position."""
    n = vectors.shape[0]
    return ReadOuts([None] * n, [last_pos] * n, vectors)


def feature_reads(
    layout: NodeLayout, transcoders: Transcoders, feature_ids: Int[torch.Tensor, " n"]
) -> ReadOuts:
    """Read-outs of feature nodes: encoder rows on the transcoder input (no bias), gathered
    one layer at a time with ``transcoders.encoder_rows``."""
    layer_of = layout.feat_layer[feature_ids]
    poss = layout.feat_pos[feature_ids].tolist()
    idxs = layout.feat_idx[feature_ids]
    if not len(poss):
        return ReadOuts([], [], torch.zeros(0, transcoders.d_in))
    vectors = torch.empty(len(poss), transcoders.d_in, dtype=transcoders.dtype,
                          device=transcoders.device)
    for la in layer_of.unique().tolist():
        rows = (layer_of == la).nonzero().flatten()
        vectors[rows.to(vectors.device)] = transcoders.encoder_rows(la, idxs[rows])
    return ReadOuts(layer_of.tolist(), poss, vectors)
