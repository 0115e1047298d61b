"""Evaluation metrics, chosen by each head's task (:class:`EvalMetrics`), the training loss on the eval split
(:class:`EvalLoss`) and running training metrics (:class:`TrainingMetrics`)."""

from easyrec.metrics.binary import binary_metrics
from easyrec.metrics.evaluation import EvalMetrics, Evaluation, evaluate_model
from easyrec.metrics.grouped_auc import grouped_auc
from easyrec.metrics.multiclass import multiclass_metrics
from easyrec.metrics.objective import EvalLoss
from easyrec.metrics.regression import regression_metrics
from easyrec.metrics.retrieval import in_batch_recall_hits
from easyrec.metrics.running import TrainingMetrics

__all__ = [
    "EvalLoss",
    "EvalMetrics",
    "Evaluation",
    "TrainingMetrics",
    "binary_metrics",
    "evaluate_model",
    "grouped_auc",
    "in_batch_recall_hits",
    "multiclass_metrics",
    "regression_metrics",
]
