"""Per-layer transcoders in SAELens format, cross-layer transcoders in circuit-tracer format, and
the TranscoderSet protocol the attribution core reads."""

from tl_circuits.transcoders.cross_layer import CrossLayerTranscoder
from tl_circuits.transcoders.per_layer import Transcoder
from tl_circuits.transcoders.transcoder_set import TranscoderSet

__all__ = ["CrossLayerTranscoder", "Transcoder", "TranscoderSet"]
