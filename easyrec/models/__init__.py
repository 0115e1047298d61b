"""Models: ``forward(dense (B, D), sparse (B, F)) -> logits (B,)``."""

from easyrec.models.deepfm import DeepFM
from easyrec.models.wide_deep import WideAndDeep

__all__ = ["DeepFM", "WideAndDeep"]
