"""Training and evaluating transcoders on a model's own activations (per-layer or cross-layer)."""

from tl_circuits.training.evaluate import evaluate_transcoders
from tl_circuits.training.train import train_transcoders

__all__ = ["evaluate_transcoders", "train_transcoders"]
