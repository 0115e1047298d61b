"""Models: ``forward(dense (B, D), sparse (B, F)) -> logits (B,)``."""

from easyrec.models.deepfm import DeepFM

__all__ = ["DeepFM"]
