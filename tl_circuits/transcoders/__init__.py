"""Per-layer transcoders in SAELens format, and the TranscoderSet the attribution core reads."""

from tl_circuits.transcoders.per_layer import Transcoder
from tl_circuits.transcoders.transcoder_set import TranscoderSet

__all__ = ["Transcoder", "TranscoderSet"]
