"""Numeric checks that a host's hooks do what attribution needs, run before any graph is built.

Attribution is exact only if, on the host's hooks, (Ameisen et al. 2025, "Circuit Tracing" §2):

- (a) **the splice reproduces the model**: with every freeze hook in place, the embedding a
  leaf and every MLP output replaced by a constant (the error term of a transcoder-free splice),
  the logits equal a plain forward pass's;
- (b) **the frozen model is linear**: with every pattern and norm scale *held* at its clean
  value and every MLP output held, the map from the embedding to the residual stream (each
  layer's input and the unembedding's input) is affine: ``f(x+a+b) - f(x+a) - f(x+b) + f(x) = 0``
  to float tolerance, for random perturbations ``a``, ``b`` as large as the embedding; and the
  gradient the engine reads (through its own hooks: freezes detached, writes as leaves holding
  their clean values) predicts the change that a write at the embedding or at any MLP output
  makes in that held model;
- (c) **patterns and scales are really frozen**: every freeze hook runs, and under the held
  freezes the gradient of the last position's read-out with respect to the embedding does not
  change when the other positions' inputs change (it would through an unfrozen softmax).

Each check reads every layer's input, so a failure names the first block (and its attention
or norm module) where it appears. Only the host protocol is used (``freeze_hook_names``,
``embed_hook``, ``mlp_out_hook``, ``resid_final_hook``, ``hooks``, ``forward``); a host that can
say which module a site is on (``host.sites.module_path``) gets HF module paths in the messages.
The HF hosts run :func:`require_checked` on automatic sites (:mod:`.discover`), the Bridge host
on architectures without a row, once per model. Cost: seven forward passes of ``n_tokens``
tokens (one with ``n_layers + 2`` rows) and ``2 n_layers`` backward passes.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from jaxtyping import Float

from ..errors import ConfigError
from .base import Host, freeze

#: relative tolerances of checks (a) and (b, c) by dtype; (a) compares the host's recomputed
#: norms and attention with the model's own kernels, (b) and (c) the hooked model with itself.
TOLERANCE: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-4, 1e-9),
    torch.float32: (1e-3, 1e-4),
}
_LOW_PRECISION = (5e-2, 5e-2)
#: rounding allowance of (b) and (c), in units of eps * |values| (see :class:`_Probe`)
_ROUNDING_STEPS = 64


@dataclass
class CheckReport:
    """What :func:`check_host` measured: the largest relative error of each check, and failures."""

    logits_error: float = 0.0  #: (a) max |spliced - plain| / max |plain| over the logits
    nonlinearity: float = 0.0  #: (b) max |second difference| / max |first difference|
    derivative_error: float = 0.0  #: (b) max |change - gradient . write| / |change| (read-outs)
    gradient_change: float = 0.0  #: (c) max |grad change| / max |grad|
    failures: list[str] = field(default_factory=list)  #: one line per failed check, naming the site
    seconds: float = 0.0  #: wall time of the checks

    @property
    def passed(self) -> bool:
        return not self.failures


def check_host(host: Host, *, n_tokens: int = 8, seed: int = 0) -> CheckReport:
    """Run checks (a), (b) and (c) on ``host`` with ``n_tokens`` random tokens.

    Example:
        >>> report = check_host(as_host(model))  # doctest: +SKIP
        >>> report.passed, report.logits_error, report.nonlinearity, report.gradient_change  # doctest: +SKIP
        (True, 3.1e-08, 2.2e-15, 0.0)
    """
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, host.W_U.shape[1], (1, n_tokens), generator=gen).to(host.device)
    tol_a, tol = TOLERANCE.get(host.dtype, _LOW_PRECISION)
    report = CheckReport()
    probe = _Probe(host, tol)
    clean, ran = probe.clean(tokens)
    missing = [n for n in probe.freeze if n not in ran]
    if missing:
        report.failures.append(
            f"check (c) patterns and scales frozen: the freeze hook{'s' * (len(missing) > 1)} "
            f"{_some(missing)} never ran, {_where(host, missing[0])}; a pattern that never passes "
            "through the hook cannot be frozen")
    lost = [n for n in probe.splice if n not in ran]
    if lost:
        report.failures.append(f"check (a) splice reproduces the logits: the hook {lost[0]} never "
                               f"ran ({_where(host, lost[0])})")
        report.seconds = time.perf_counter() - start
        return report
    report.logits_error = probe.logits_error(tokens, clean)
    if not report.logits_error <= tol_a:
        report.failures.append(
            f"check (a) splice reproduces the logits: with the freeze hooks and the MLP outputs "
            f"spliced, the logits differ from the model's by {report.logits_error:.3g} (relative, "
            f"tolerance {tol_a:g}): a hooked site recomputes something the model does not (norm "
            "kind or epsilon, attention mask or scale)")
    report.nonlinearity, allowed, worst = probe.nonlinearity(tokens, clean, gen)
    linear = report.nonlinearity <= allowed
    if not linear:
        report.failures.append(
            f"check (b) linear under the freezes: with patterns, norm scales and MLP outputs held, "
            f"the second difference of {worst} is {report.nonlinearity:.3g} of its first "
            f"(tolerance {allowed:.2g}), {_after(host, worst)}: something nonlinear there is not frozen")
    report.derivative_error, allowed, (worst, write) = probe.derivative_error(tokens, clean, gen)
    if report.derivative_error > allowed and linear:  # else said above
        report.failures.append(
            f"check (b) linear under the freezes, as the gradient reads it: a change written at "
            f"{write} ({_where(host, write)}) moves {worst} by {report.derivative_error:.3g} (relative, "
            f"tolerance {allowed:.2g}) more or less than the gradient through the attribution hooks "
            f"predicts: the value the hook at {write} returns is not (all) on the autograd path")
    report.gradient_change, allowed, worst = probe.gradient_change(tokens, clean, gen)
    if report.gradient_change > allowed:
        report.failures.append(
            f"check (c) patterns and scales frozen: the gradient of the last position's {worst} "
            f"changes by {report.gradient_change:.3g} (relative, tolerance {allowed:.2g}) when the "
            f"other positions' inputs change, {_after(host, worst, attention=True)}")
    report.failures.sort(key=lambda f: f[:9])  # (a), (b), (c)
    report.seconds = time.perf_counter() - start
    return report


#: id(model) -> report of its checks, so each model is checked once (weights are assumed fixed);
#: an entry goes when its model does. A plain dict: a remote nnsight request pickles this module
#: by value, and a WeakKeyDictionary cannot be pickled.
_VERDICTS: dict[int, CheckReport] = {}


def require_checked(host: Any, model: Any, what: str, fix: str | None = None) -> CheckReport:
    """:func:`check_host` once per ``model`` (cached); ConfigError listing the failed checks.

    ``what`` names the sites checked (``automatic sites for 'gpt_neox' (GPTNeoXForCausalLM)``);
    ``fix`` says how to fix a failure (default: pin the layout with a table row).
    """
    report = _VERDICTS.get(id(model))
    if report is None:
        report = _VERDICTS[id(model)] = check_host(host)
        weakref.finalize(model, _VERDICTS.pop, id(model), None)
    if not report.passed:
        raise ConfigError(
            f"{what} failed the checks that make a graph exact, so no graph is built:\n  - "
            + "\n  - ".join(report.failures) + "\nTo fix: " + (fix or (
                "pin the layout with a row in tl_circuits/hosts/sites.py ARCH_SITES (docs/hosts.md, "
                "'Adding an architecture'); an attention module must compute its softmax through "
                "transformers' AttentionInterface (ALL_ATTENTION_FUNCTIONS) for its pattern to be "
                "frozen")))
    return report


class _Probe:
    """The host's sites and the three kinds of hooked pass the checks run."""

    def __init__(self, host: Host, tol: float):
        self.host = host
        self.tol = tol
        #: float rounding of a value v is about eps * |v|; a deep held model accumulates it, and a
        #: difference of values much larger than itself (massive activations) inherits it
        self.eps = torch.finfo(host.dtype).eps
        self.noise = _ROUNDING_STEPS * self.eps
        self.freeze = host.freeze_hook_names()
        self.mlp_out = [host.mlp_out_hook(la) for la in range(host.n_layers)]
        self.reads = [f"blocks.{la}.hook_resid_pre" for la in range(1, host.n_layers)
                      if host.has_hook(f"blocks.{la}.hook_resid_pre")] + [host.resid_final_hook()]
        self.splice = [host.embed_hook(), *self.mlp_out, host.resid_final_hook()]

    def clean(self, tokens: torch.Tensor) -> tuple[dict[str, torch.Tensor], set[str]]:
        """Every site's value in a pass with read-only hooks, and the names of the hooks that ran."""
        clean: dict[str, torch.Tensor] = {}
        names = sorted(set(self.freeze) | set(self.splice) | set(self.reads))

        def grab(name: str) -> Callable[[torch.Tensor], None]:
            return lambda x: clean.__setitem__(name, x.detach().clone())

        with torch.no_grad(), self.host.hooks([(n, grab(n)) for n in names]):
            clean["logits"] = self.host.forward(tokens).detach()
        return clean, set(clean)

    def logits_error(self, tokens: torch.Tensor, clean: dict[str, torch.Tensor]) -> float:
        """(a): the logits of the spliced pass (freeze hooks, embedding leaf, MLP outputs held)."""
        with torch.no_grad():
            plain = self.host.forward(tokens)
        hooks = [(n, freeze) for n in self.freeze] + [(self.host.embed_hook(), _leaf)]
        hooks += [(n, _leaf) for n in self.mlp_out]
        with torch.enable_grad(), self.host.hooks(hooks):
            spliced = self.host.forward(tokens).detach()
        return _rel(spliced - plain, plain)

    def _held(self, clean: dict[str, torch.Tensor], values: dict[str, torch.Tensor],
              live: dict[str, torch.Tensor]) -> list[tuple[str, Callable[[torch.Tensor], Any]]]:
        """Hooks holding every freeze site and MLP output at its clean value (batch repeated),
        sites in ``values`` (the embedding, perhaps MLP outputs) replaced by those batched values,
        and the read sites recorded into ``live``."""
        batch = values[self.host.embed_hook()].shape[0]

        def held(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
            value = clean[name]
            return lambda x: value.repeat(batch, *([1] * (value.dim() - 1)))

        hooks: list[tuple[str, Callable[[torch.Tensor], Any]]] = [
            (n, held(n)) for n in [*self.freeze, *self.mlp_out]
            if n in clean and n not in values]  # (c) names the freeze sites that never ran
        hooks += [(n, _constant(v)) for n, v in values.items()]
        return hooks + [(n, _recorder(live, n)) for n in self.reads]

    def nonlinearity(self, tokens: torch.Tensor, clean: dict[str, torch.Tensor],
                     gen: torch.Generator) -> tuple[float, float, str]:
        """(b): rows x, x+a, x+b, x+a+b of the held model; at each read site, the second difference
        relative to the first, and what rounding allows for values of that size."""
        x = clean[self.host.embed_hook()]
        a, b = _perturbation(x, gen), _perturbation(x, gen)
        values = {self.host.embed_hook(): torch.cat([x, x + a, x + b, x + a + b])}
        live: dict[str, torch.Tensor] = {}
        with torch.no_grad(), self.host.hooks(self._held(clean, values, live)):
            self.host.forward(tokens.expand(4, -1))
        errors = {}
        for name in self.reads:
            f = live[name]
            first = float(torch.stack([f[1] - f[0], f[2] - f[0]]).abs().max())
            second = float((f[3] - f[1] - f[2] + f[0]).abs().max())
            errors[name] = _relative(second, first, self.tol, self.noise * float(f.abs().max()))
        return _worst(errors)

    def derivative_error(self, tokens: torch.Tensor, clean: dict[str, torch.Tensor],
                         gen: torch.Generator) -> tuple[float, float, tuple[str, str]]:
        """(b), as the engine reads it: the change a write at the embedding or at an MLP output
        makes in the held model (one row per write site), against the one predicted by the
        gradient the engine would read (through its own hooks: freezes detached, writes leaves
        holding their clean values), for a random read-out at each read site."""
        x = clean[self.host.embed_hook()]
        writes = [self.host.embed_hook(), *self.mlp_out]
        changes = {n: _perturbation(x, gen) for n in writes}
        values = {n: clean[n].repeat(1 + len(writes), *([1] * (clean[n].dim() - 1))) for n in writes}
        for row, n in enumerate(writes, start=1):
            values[n][row] += changes[n][0]
        moved: dict[str, torch.Tensor] = {}
        with torch.no_grad(), self.host.hooks(self._held(clean, values, moved)):
            self.host.forward(tokens.expand(1 + len(writes), -1))
        leaves: dict[str, torch.Tensor] = {}
        live: dict[str, torch.Tensor] = {}

        def leaf(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
            return lambda x: leaves.setdefault(name, _leaf(x))

        hooks = [(n, freeze) for n in self.freeze] + [(n, leaf(n)) for n in writes]
        hooks += [(n, _recorder(live, n)) for n in self.reads]
        errors: dict[tuple[str, str], tuple[float, float]] = {}
        with torch.enable_grad(), self.host.hooks(hooks):
            self.host.forward(tokens)
            for name in self.reads:
                direction = torch.randn(live[name].shape, generator=gen, dtype=torch.float64).to(x)
                change = ((moved[name][1:] - moved[name][:1]) * direction).flatten(1).sum(1)
                rounding = self.noise * float((moved[name].abs() * direction.abs()).flatten(1).sum(1).max())
                grads = torch.autograd.grad((live[name] * direction).sum(), [leaves[n] for n in writes],
                                            retain_graph=True, allow_unused=True)
                scale = float(change.abs().max())
                for i, (n, g) in enumerate(zip(writes, grads)):
                    predicted = 0.0 if g is None else float((g[0] * changes[n][0]).sum())
                    errors[name, n] = _relative(abs(float(change[i]) - predicted), scale, self.tol, rounding)
        return _worst(errors, group=lambda k: k[0])

    def gradient_change(self, tokens: torch.Tensor, clean: dict[str, torch.Tensor],
                        gen: torch.Generator) -> tuple[float, float, str]:
        """(c): rows x and x + (change at every position but the last) of the held model; for each
        read site, the gradient of a random read-out at the last position in both rows."""
        x = clean[self.host.embed_hook()]
        change = _perturbation(x, gen)
        change[:, -1] = 0
        embed = torch.cat([x, x + change]).requires_grad_(True)
        live: dict[str, torch.Tensor] = {}
        with torch.enable_grad(), self.host.hooks(self._held(clean, {self.host.embed_hook(): embed}, live)):
            self.host.forward(tokens.expand(2, -1))
            errors = {}
            for name in self.reads:
                out = live[name][:, -1]
                direction = torch.randn(out.shape[-1], generator=gen, dtype=torch.float64).to(out)
                (grad,) = torch.autograd.grad((out @ direction).sum(), embed, retain_graph=True,
                                              allow_unused=True)
                scale = 0.0 if grad is None else float(grad[0].abs().max())
                moved = float("inf") if grad is None else float((grad[1] - grad[0]).abs().max())
                # the held model's gradient uses only weights and held values: bit for bit the
                # same in both rows when the freezes hold, in any dtype
                errors[name] = _relative(moved, scale, self.tol, 4 * self.eps * scale)
        return _worst(errors)


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().requires_grad_(True)


def _constant(value: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: value


def _recorder(into: dict[str, torch.Tensor], name: str) -> Callable[[torch.Tensor], None]:
    return lambda x: into.__setitem__(name, x)


def _perturbation(x: Float[torch.Tensor, "1 pos d_model"], gen: torch.Generator) -> torch.Tensor:
    """Random vectors as large as ``x`` at each position (so any nonlinearity shows at O(1))."""
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x)
    return noise * (x.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True))


def _rel(diff: torch.Tensor, ref: torch.Tensor) -> float:
    scale = float(ref.abs().max())
    return float(diff.abs().max()) / scale if scale > 0 else float("inf")


def _relative(error: float, scale: float, tol: float, rounding: float) -> tuple[float, float]:
    """``(error / scale, what is allowed relative to scale)``: ``tol`` plus float rounding."""
    if scale <= 0:  # the write does not reach the read (a later layer), or nothing moved at all
        return (0.0, tol) if error <= rounding else (float("inf"), tol)
    return error / scale, tol + rounding / scale


_K = TypeVar("_K")


def _worst(errors: dict[_K, tuple[float, float]],
           group: Callable[[_K], object] = lambda k: k) -> tuple[float, float, _K]:
    """The error, and its allowance, furthest over (or closest to) its allowance. Where errors
    fail, the worst of the first failing group (keys in the model's order, grouped by read site):
    where the fault first shows."""
    def excess(k: _K) -> float:
        error, allowed = errors[k]
        return error / allowed if allowed > 0 else float("inf")

    failing = [k for k in errors if excess(k) > 1]
    keys = [k for k in failing if group(k) == group(failing[0])] if failing else list(errors)
    worst = max(keys, key=excess)
    return errors[worst][0], errors[worst][1], worst


def _where(host: Any, site: str) -> str:
    """``on module PATH (Class)``: where ``site`` is placed (an HF module path on the HF hosts,
    the TransformerLens module path elsewhere)."""
    module_path = getattr(getattr(host, "sites", None), "module_path", None)
    if module_path is not None:
        path, root = module_path(site), host.sites.model
    else:
        path, root = site.rsplit(".", 1)[0], getattr(host, "model", None)
    try:
        module = root.get_submodule(path)  # type: ignore[union-attr]
    except AttributeError:
        return f"at site {site}"
    return f"on module {path} ({type(module).__name__})"


def _after(host: Any, read: str, attention: bool = False) -> str:
    """Which block a failure at read site ``read`` (an input of layer l, or the unembedding's
    input) comes from: the block before it (its attention module for a pattern) or the final norm."""
    if read.startswith("blocks."):
        layer = int(read.split(".")[1]) - 1
        site = f"blocks.{layer}.attn.hook_pattern" if attention else f"blocks.{layer}.hook_resid_pre"
        return f"first seen after block {layer}: {_where(host, site)}"
    last = host.n_layers - 1
    return (f"first seen at the unembedding's input (block {last}: "
            f"{_where(host, f'blocks.{last}.hook_resid_pre')}, or the final norm: "
            f"{_where(host, 'ln_final.hook_scale')})")


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
