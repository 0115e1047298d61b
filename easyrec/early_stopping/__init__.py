"""Early-stopping rules: ``should_stop(eval_metrics, step)`` after each evaluation, ``after_step(step, train)``
after each optimizer step; either returning True ends training with a ``reason``."""

from easyrec.early_stopping.any_of import AnyOf
from easyrec.early_stopping.base import EarlyStopping
from easyrec.early_stopping.custom import CustomStop
from easyrec.early_stopping.deadline import StopAtDeadline
from easyrec.early_stopping.divergence import StopOnDivergence
from easyrec.early_stopping.never import NeverStop
from easyrec.early_stopping.plateau import StopOnPlateau
from easyrec.early_stopping.prune_trial import PruneTrial
from easyrec.early_stopping.stop_file import StopOnFile
from easyrec.early_stopping.threshold import StopAtThreshold

__all__ = [
    "AnyOf",
    "CustomStop",
    "EarlyStopping",
    "NeverStop",
    "PruneTrial",
    "StopAtDeadline",
    "StopAtThreshold",
    "StopOnDivergence",
    "StopOnFile",
    "StopOnPlateau",
]
