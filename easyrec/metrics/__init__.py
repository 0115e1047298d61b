"""Evaluation metrics."""

from easyrec.metrics.binary import binary_metrics

__all__ = ["binary_metrics"]
