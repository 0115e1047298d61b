"""Early-stopping rules: ``should_stop(eval_metrics, step) -> bool``."""

from easyrec.early_stopping.base import EarlyStopping
from easyrec.early_stopping.never import NeverStop
from easyrec.early_stopping.plateau import StopOnPlateau

__all__ = ["EarlyStopping", "NeverStop", "StopOnPlateau"]
