"""Report eval metrics to an Optuna trial and stop when its pruner says the trial is hopeless."""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Mapping
from typing import Any

from easyrec.early_stopping.base import EarlyStopping, require_metric

#: The trial's user attribute that tells the sweeper a trial was pruned (its value: the step).
PRUNED_AT = "easyrec.pruned_at_step"
#: A study server's URL: ``grpc://HOST:PORT`` (``easyrec study-server``).
GRPC = "grpc://"


class PruneTrial(EarlyStopping):
    """At each evaluation, report ``monitor`` to Optuna trial ``trial_id`` of ``study_name`` in ``storage`` as the
    intermediate value of that step; stop training when ``pruner`` prunes the trial.

    The Optuna sweeper (``hparams_search=optuna``) runs each trial with the trial's id, study and storage in the
    environment (see ``conf/early_stopping/optuna_pruning.yaml``); without a trial (a plain ``easyrec train``)
    the rule never stops. A pruned trial ends its run normally (its checkpoints and metrics are kept), with the
    reason in the run's ``easyrec.stop_reason`` tag, and the sweeper tells the study it was pruned.

    Args:
        monitor: the eval metric to report, e.g. ``"eval/auc"``; the study's direction says whether more is better.
        pruner: an ``optuna.pruners.BasePruner`` (``MedianPruner``, ``ThresholdPruner``, ...).
        trial_id, study_name, storage: the trial to report to; None: no trial, never stop.

    Example::

        rule = PruneTrial("eval/auc", optuna.pruners.MedianPruner(), trial_id=3, study_name="s", storage="sqlite:///o.db")
        rule.should_stop({"eval/auc": 0.61}, step=100)  # True if the median of other trials at step 100 was better
    """

    name = "optuna_pruning"

    def __init__(
        self,
        monitor: str = "eval/auc",
        pruner: Any = None,
        trial_id: int | None = None,
        study_name: str | None = None,
        storage: str | None = None,
    ) -> None:
        self.monitor, self.pruner = monitor, pruner
        self.trial_id, self.study_name, self.storage = trial_id, study_name, storage
        self._trial: Any = None

    def check_metrics(self, names: Collection[str]) -> None:
        require_metric("monitor", self.monitor, names)

    def should_stop(self, metrics: Mapping[str, float], step: int) -> bool:
        if self.trial_id is None:
            return False
        value = float(metrics[self.monitor])
        if not math.isfinite(value):
            return False
        trial = self._open_trial()
        trial.report(value, step)
        if not trial.should_prune():
            return False
        trial.set_user_attr(PRUNED_AT, step)
        self.reason = f"pruned by Optuna (trial {trial.number}) at step {step}: {self.monitor} {value:.6g}"
        return True

    def _open_trial(self) -> Any:
        if self._trial is None:
            import optuna

            study = optuna.load_study(
                study_name=self.study_name, storage=study_storage(self.storage), pruner=self.pruner
            )
            self._trial = optuna.trial.Trial(study, int(self.trial_id))
        return self._trial


def study_storage(url: str, timeout: float = 30.0) -> Any:
    """The Optuna storage at ``url``: ``grpc://HOST:PORT`` is a study server (``easyrec study-server``: Optuna's gRPC
    storage proxy in front of a database), which every node of a cluster can reach; anything else is a database
    URL (``sqlite:///optuna.db``, ``postgresql://...``). A study server that does not answer in ``timeout``
    seconds is a user error naming it."""
    import optuna

    from easyrec.errors import ConfigError

    if not url.startswith(GRPC):
        return optuna.storages.get_storage(url)
    host, _, port = url[len(GRPC) :].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"hydra.sweeper.storage={url}: a study server's URL is grpc://HOST:PORT")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # Optuna >= 4.2 has it
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=int(port))
    try:
        proxy.wait_server_ready(timeout=timeout)
    except ConnectionError:
        raise ConfigError(
            f"hydra.sweeper.storage={url}: no study server answers in {timeout:g} s (start one: easyrec study-server "
            f"--port {port})"
        ) from None
    return proxy
