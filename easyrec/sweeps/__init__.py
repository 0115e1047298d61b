"""Sweeps: ``easyrec train -m`` (a grid, or ``hparams_search=optuna``) with an MLflow parent run per sweep. The
Optuna sweeper itself is in ``hydra_plugins.easyrec_sweeper``, where Hydra takes sweepers from."""

from hydra.core.plugins import Plugins

from easyrec.sweeps.parent_run import SweepParentRun
from hydra_plugins.easyrec_sweeper.optuna_sweeper import OptunaSweeper

# Hydra finds plugins by listing the folders of hydra_plugins, which an editable install does not show it.
Plugins.instance().register(OptunaSweeper)

__all__ = ["OptunaSweeper", "SweepParentRun"]
