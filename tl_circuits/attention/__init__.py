"""Attention in the graph: which heads carry a cross-position edge (head loadings), and which
pairs of sources made a head attend (QK attribution). Both read the frozen replacement model the
graph was computed in and reuse the attribution row engine (docs/concepts.md, "Attention")."""

from .loadings import HeadLoadings, head_loadings
from .qk import QKExplanation, QKPair, explain_attention

__all__ = ["HeadLoadings", "QKExplanation", "QKPair", "explain_attention", "head_loadings"]
