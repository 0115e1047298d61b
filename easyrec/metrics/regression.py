"""Metrics of real-valued predictions (values, lifetime value, soft labels)."""

from __future__ import annotations

from torch import Tensor


def regression_metrics(predictions: Tensor, labels: Tensor) -> dict[str, float]:
    """RMSE and MAE of ``predictions (N,)`` against ``labels (N,)``."""
    predictions, labels = predictions.double(), labels.double()
    return {
        "rmse": float((predictions - labels).square().mean().sqrt()),
        "mae": float((predictions - labels).abs().mean()),
    }
