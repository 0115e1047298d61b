"""Metrics of real-valued predictions (values, lifetime value, soft labels)."""

from __future__ import annotations

from torch import Tensor
from torchmetrics.functional import mean_absolute_error, mean_squared_error


def regression_metrics(predictions: Tensor, labels: Tensor) -> dict[str, float]:
    """RMSE and MAE of ``predictions (N,)`` against ``labels (N,)``."""
    predictions, labels = predictions.double(), labels.double()
    return {
        "rmse": float(mean_squared_error(predictions, labels, squared=False)),
        "mae": float(mean_absolute_error(predictions, labels)),
    }
