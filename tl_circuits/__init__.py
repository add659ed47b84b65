"""tl_circuits: attribution graphs (circuit tracing) as a plugin of TransformerLens / nnsight hooks.

Importing this package imports none of transformer_lens, nnsight or sae_lens; the adapter for a
model is imported when that model is first seen.
"""

__version__ = "0.1.0"

from .attribution import attribute
from .errors import ConfigError, FileFormatError, TLCircuitsError
from .graph import Graph, Node, TargetInfo
from .transcoders import Transcoder, TranscoderSet

__all__ = [
    "ConfigError",
    "FileFormatError",
    "Graph",
    "Node",
    "TLCircuitsError",
    "TargetInfo",
    "Transcoder",
    "TranscoderSet",
    "__version__",
    "attribute",
]
