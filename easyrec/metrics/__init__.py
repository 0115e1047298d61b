"""Evaluation metrics, chosen by each head's task (:class:`EvalMetrics`)."""

from easyrec.metrics.binary import binary_metrics
from easyrec.metrics.evaluation import EvalMetrics, Evaluation, evaluate_model
from easyrec.metrics.grouped_auc import grouped_auc
from easyrec.metrics.multiclass import multiclass_metrics
from easyrec.metrics.regression import regression_metrics
from easyrec.metrics.retrieval import in_batch_recall_hits

__all__ = [
    "EvalMetrics",
    "Evaluation",
    "binary_metrics",
    "evaluate_model",
    "grouped_auc",
    "in_batch_recall_hits",
    "multiclass_metrics",
    "regression_metrics",
]
