"""Losses: ``forward(logits (B,), labels (B,), weights (B,) | None) -> scalar``; plain nn.Modules."""

from easyrec.losses.bce import BinaryCrossEntropy
from easyrec.losses.focal import BinaryFocalLoss

__all__ = ["BinaryCrossEntropy", "BinaryFocalLoss"]
