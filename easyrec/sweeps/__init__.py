"""Sweeps: ``easyrec train -m`` (a grid, or ``hparams_search=optuna``) with an MLflow parent run per sweep."""

from easyrec.sweeps.optuna_sweeper import OptunaSweeper
from easyrec.sweeps.parent_run import SweepParentRun

__all__ = ["OptunaSweeper", "SweepParentRun"]
