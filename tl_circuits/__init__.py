"""tl_circuits: attribution graphs (circuit tracing) as a plugin of TransformerLens / nnsight hooks.

Importing this package imports none of transformer_lens, nnsight or sae_lens; the adapter for a
model is imported when that model is first seen.
"""

__version__ = "0.2.0"

from .attention import HeadLoadings, QKExplanation, explain_attention, head_loadings
from .attribution import attribute
from .dashboards import Dashboards, build_dashboards
from .errors import ConfigError, FileFormatError, TLCircuitsError
from .graph import Graph, Node, NodeKind, TargetInfo
from .graph_check import GraphCheck, check_graph
from .interventions import Intervention, InterventionResult, generate, intervene
from .training import evaluate_transcoders, train_transcoders
from .transcoders import (
    CrossLayerTranscoder,
    Transcoder,
    Transcoders,
    TranscoderSet,
    as_transcoders,
    load_transcoders,
)

__all__ = [
    "ConfigError",
    "CrossLayerTranscoder",
    "Dashboards",
    "FileFormatError",
    "Graph",
    "GraphCheck",
    "HeadLoadings",
    "Intervention",
    "InterventionResult",
    "Node",
    "NodeKind",
    "QKExplanation",
    "TLCircuitsError",
    "TargetInfo",
    "Transcoder",
    "TranscoderSet",
    "Transcoders",
    "__version__",
    "as_transcoders",
    "attribute",
    "build_dashboards",
    "check_graph",
    "evaluate_transcoders",
    "explain_attention",
    "generate",
    "head_loadings",
    "intervene",
    "load_transcoders",
    "train_transcoders",
]
