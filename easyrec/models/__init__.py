"""Models: ``forward(dense (B, D), sparse (B, F)) -> logits (B,)`` (``(B, num_outputs)`` when asked for more)."""

from easyrec.models.deepfm import DeepFM
from easyrec.models.wide_deep import WideAndDeep

__all__ = ["DeepFM", "WideAndDeep"]
