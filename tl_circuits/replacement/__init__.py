"""The replacement model, written once against the host protocol: freeze, splice, error terms.

A transcoder ``T`` replaces the MLP of each layer it covers; the replacement model writes
``reconstruct(m, acts, x) + error_m`` there, with ``error_m = y_m - reconstruct(m, acts, x)`` on the
clean run, so it reproduces the model exactly (:mod:`.splice`, the one splice). Four runs use it:

- :func:`run_replacement` (:mod:`.frozen`): attribution's pass, attention patterns and norm scales
  frozen, every MLP output a constant to autograd except through the transcoders' skips;
- :func:`clean_run` (:mod:`.frozen`): the same pass without gradients, keeping what an intervened
  run holds fixed;
- :func:`run_spliced` (:mod:`.intervened`): features live (open-loop), constrained or edited,
  attention frozen or not; without a clean run, the error-free replacement model of evaluation;
- :func:`activations_at` (:mod:`.activations`): values at named sites, the pass stopped after the
  last one (training, evaluation, dashboards).

:mod:`.inputs` holds the checks all of them start from (:func:`prepare`, :func:`prompt_tokens`).
"""

from .activations import activations_at
from .frozen import ReplacementState, clean_run, replacement_hooks, run_replacement
from .inputs import check_compatible, prepare, prompt_tokens, read_prompt
from .intervened import FeatureEdit, SplicedRun, run_spliced
from .splice import error_term, spliced

__all__ = [
    "FeatureEdit", "ReplacementState", "SplicedRun", "activations_at", "check_compatible",
    "clean_run", "error_term", "prepare", "prompt_tokens", "read_prompt", "replacement_hooks", "run_replacement",
    "run_spliced", "spliced",
]
