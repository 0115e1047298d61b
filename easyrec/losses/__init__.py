"""Losses: :class:`~easyrec.losses.base.Loss` modules, ``forward(logits, labels, weights | None[, sessions | None])
-> scalar``.

* Pointwise: ``forward(logits (B,), labels (B,), weights (B,) | None)``; ``SoftmaxCrossEntropy`` and ``ZILNLoss``
  take ``(B, K)`` logits (``num_outputs = K``).
* Pairwise and listwise losses also take ``sessions (B,) | None``: pairs and lists are formed within a session.
* Retrieval losses take a two-tower model's ``(B, 2, D)`` user and item embeddings.
* ``MultiTaskLoss`` takes ``(B, K)`` outputs and ``(B, L)`` labels, one loss per task.

What the run and the trainer ask of a loss (``task``, ``num_outputs``, the labels it accepts, ``scores``,
``log_values()``, ...) is written down, with its defaults, in :class:`~easyrec.losses.base.Loss`.
"""

from easyrec.losses.base import Loss
from easyrec.losses.bce import BinaryCrossEntropy
from easyrec.losses.circle import CircleLoss
from easyrec.losses.f1_reweighted import F1ReweightedLoss
from easyrec.losses.focal import BinaryFocalLoss
from easyrec.losses.in_batch_softmax import InBatchSoftmaxLoss
from easyrec.losses.jrc import JRCLoss
from easyrec.losses.kl_divergence import KLDivergenceLoss
from easyrec.losses.l2 import L2Loss
from easyrec.losses.listwise_distill import ListwiseDistillLoss
from easyrec.losses.listwise_rank import ListwiseRankLoss
from easyrec.losses.multi_similarity import MultiSimilarityLoss
from easyrec.losses.multi_task import MultiTaskLoss
from easyrec.losses.order_calibrate import OrderCalibrateLoss
from easyrec.losses.pairwise_focal import PairwiseFocalLoss
from easyrec.losses.pairwise_hinge import PairwiseHingeLoss
from easyrec.losses.pairwise_logistic import PairwiseLogisticLoss
from easyrec.losses.sigmoid_l2 import SigmoidL2Loss
from easyrec.losses.soft_labels import SoftBinaryCrossEntropy, SoftCrossEntropy, SoftLabelLoss
from easyrec.losses.softmax_ce import SoftmaxCrossEntropy
from easyrec.losses.softmax_negative_mining import SoftmaxNegativeMiningLoss
from easyrec.losses.weighted import WeightedLosses
from easyrec.losses.ziln import ZILNLoss

__all__ = [
    "Loss",
    "WeightedLosses",
    "MultiTaskLoss",
    "BinaryCrossEntropy",
    "BinaryFocalLoss",
    "F1ReweightedLoss",
    "L2Loss",
    "SigmoidL2Loss",
    "SoftmaxCrossEntropy",
    "ZILNLoss",
    "KLDivergenceLoss",
    "SoftLabelLoss",
    "SoftBinaryCrossEntropy",
    "SoftCrossEntropy",
    "OrderCalibrateLoss",
    "PairwiseFocalLoss",
    "PairwiseHingeLoss",
    "PairwiseLogisticLoss",
    "ListwiseDistillLoss",
    "ListwiseRankLoss",
    "JRCLoss",
    "CircleLoss",
    "MultiSimilarityLoss",
    "InBatchSoftmaxLoss",
    "SoftmaxNegativeMiningLoss",
]
