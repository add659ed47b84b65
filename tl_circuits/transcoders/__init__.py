"""Transcoders: the protocol every set implements (:mod:`.protocol`), per-layer sets in SAELens
format, cross-layer transcoders in circuit-tracer format, and the one registry of activation
functions they and training share (:mod:`.activations`)."""

from tl_circuits.transcoders.cross_layer import CrossLayerTranscoder
from tl_circuits.transcoders.lazy import LazyTranscoders
from tl_circuits.transcoders.per_layer import Transcoder
from tl_circuits.transcoders.protocol import Transcoders, as_transcoders
from tl_circuits.transcoders.releases.load import convert_transcoders, load_transcoders
from tl_circuits.transcoders.transcoder_set import TranscoderSet

__all__ = ["CrossLayerTranscoder", "Transcoder", "TranscoderSet", "Transcoders", "as_transcoders"]
__all__ += ["LazyTranscoders", "convert_transcoders", "load_transcoders"]
