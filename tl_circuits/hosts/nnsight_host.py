"""Host adapter for an nnsight ``LanguageModel`` (``NNsightHost``).

The forward pass runs through nnsight's ``LanguageModel.trace``, so whatever the nnsight model does
to a forward pass applies; its hooks are PyTorch module hooks on the wrapped model, placed as for
a plain Hugging Face model (:class:`.hf.HFHost`). ``run_traced`` instead runs a whole job (forward
and backward passes) inside one trace with the sites placed as nnsight interventions
(:mod:`.nnsight_trace`), which is what remote execution needs.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int

from .hf import HFHost

__all__ = ["HFHost", "NNsightHost"]


class NNsightHost(HFHost):
    """Adapts an nnsight ``LanguageModel``; the forward pass runs through ``model.trace``."""

    def __init__(self, model: Any):
        self.nnsight_model = model
        super().__init__(model._module, getattr(model, "tokenizer", None))

    def forward(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos d_vocab"]:
        model = self.nnsight_model
        with model.trace({"input_ids": tokens, "use_cache": False}):
            logits = model.output.logits.save()
        return logits

    def run_traced(self, tokens: Int[torch.Tensor, " pos"], job: Any, *, remote: bool | str = False) -> Any:
        """``job(host)`` inside one ``model.trace(tokens, remote=remote)``; its (saved) result.

        ``remote`` is nnsight's: False (here), True (NDIF), ``"local"`` (serialize the request
        as for NDIF, then run it here) or a server URL. For a remote run the tl_circuits code is
        registered with nnsight to travel by value with the request, with everything ``job``
        holds (the transcoders' weights included). The result should hold only tensors and
        plain Python values.
        """
        import nnsight

        from .nnsight_trace import run_job

        if remote:
            nnsight.register("tl_circuits")
        model = self.nnsight_model
        with torch.enable_grad(), model.trace({"input_ids": tokens[None], "use_cache": False},
                                              remote=remote):
            result = run_job(model, tokens, job, self.sites.sites)
            nnsight.save(result)
        return result
