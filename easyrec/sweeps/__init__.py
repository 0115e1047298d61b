"""Sweeps: ``easyrec train -m`` (a grid, or ``hparams_search=optuna``) with an MLflow parent run per sweep. The
Optuna sweeper and the Ray launcher are in ``hydra_plugins.easyrec_sweeper`` and ``hydra_plugins.easyrec_launcher``,
where Hydra takes plugins from (:mod:`easyrec.run` registers them)."""

from easyrec.sweeps.parent_run import SweepParentRun

__all__ = ["SweepParentRun"]
