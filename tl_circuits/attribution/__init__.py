"""The attribution engine: targets, batched backward passes, the node budget."""

from .attribute import attribute
from .targets import Target, TargetSpec

__all__ = ["Target", "TargetSpec", "attribute"]
