"""Evaluation metrics."""

from easyrec.metrics.binary import binary_metrics
from easyrec.metrics.grouped_auc import grouped_auc

__all__ = ["binary_metrics", "grouped_auc"]
