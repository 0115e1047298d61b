"""Losses: ``forward(logits (B,), labels (B,), weights (B,) | None) -> scalar``; plain nn.Modules.

Pairwise losses also take ``sessions (B,) | None``: pairs are formed within a session (the whole batch without).
``label_values`` on a loss class names the labels it accepts (None: any real value).
"""

from easyrec.losses.bce import BinaryCrossEntropy
from easyrec.losses.f1_reweighted import F1ReweightedLoss
from easyrec.losses.focal import BinaryFocalLoss
from easyrec.losses.jrc import JRCLoss
from easyrec.losses.l2 import L2Loss
from easyrec.losses.listwise_distill import ListwiseDistillLoss
from easyrec.losses.listwise_rank import ListwiseRankLoss
from easyrec.losses.pairwise_focal import PairwiseFocalLoss
from easyrec.losses.pairwise_hinge import PairwiseHingeLoss
from easyrec.losses.pairwise_logistic import PairwiseLogisticLoss
from easyrec.losses.sigmoid_l2 import SigmoidL2Loss
from easyrec.losses.weighted import WeightedLosses

__all__ = [
    "WeightedLosses",
    "BinaryCrossEntropy",
    "BinaryFocalLoss",
    "F1ReweightedLoss",
    "L2Loss",
    "SigmoidL2Loss",
    "PairwiseFocalLoss",
    "PairwiseHingeLoss",
    "PairwiseLogisticLoss",
    "ListwiseDistillLoss",
    "ListwiseRankLoss",
    "JRCLoss",
]
