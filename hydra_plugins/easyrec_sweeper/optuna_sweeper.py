"""A Hydra sweeper that runs an Optuna study: ``easyrec train hparams_search=optuna``.

Not the ``hydra-optuna-sweeper`` plugin: its last release needs optuna<3 (whose SQLite storage breaks under
SQLAlchemy 2, which MLflow needs) and supports neither pruning nor resuming a study. This one asks Optuna (>= 3)
for trials, launches them with Hydra's launcher (in turn, or in parallel with ``hydra/launcher=joblib``), and
tells the study each result; the study lives in an SQLite file, so running the command again resumes it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from easyrec.early_stopping.prune_trial import PRUNED_AT, study_storage
from easyrec.errors import ConfigError
from easyrec.loggers.mlflow import absolute_uri
from easyrec.sweeps.search_space import SearchSpace

log = logging.getLogger("easyrec")

#: The study's user attribute that keeps its search space, to refuse resuming it with another one.
SPACE_ATTR = "easyrec.search_space"
#: The environment of each trial's job, read by ``conf/early_stopping/optuna_pruning.yaml``.
TRIAL_ENV = {
    "trial_id": "EASYREC_OPTUNA_TRIAL",
    "study_name": "EASYREC_OPTUNA_STUDY",
    "storage": "EASYREC_OPTUNA_STORAGE",
}


class OptunaSweeper(Sweeper):
    """Runs ``n_trials`` more trials of Optuna study ``study_name`` in ``storage``, ``n_jobs`` at a time.

    Args:
        params: the search space, ``{key: {type: float|int|categorical, low, high, log, step, choices}}``
            (:class:`~easyrec.sweeps.search_space.SearchSpace`).
        storage: an Optuna database URL (``sqlite:///optuna.db`` is a file in the launch directory), or a study
            server's ``grpc://HOST:PORT`` (``easyrec study-server``), which the jobs on a Ray cluster's nodes reach.
        study_name: created on first use, resumed after; resuming with another search space or direction is refused.
        n_trials: trials this command adds to the study.
        n_jobs: trials launched together (they run in parallel with a parallel launcher).
        direction: ``maximize`` or ``minimize``; None: from ``trainer.monitor_mode`` (max or min).
        sampler: an ``optuna.samplers.*`` node; its ``seed`` is offset by the trials already in the study, so a
            resumed study does not sample its first points again.
    """

    def __init__(
        self,
        params: Any,
        storage: str = "sqlite:///optuna.db",
        study_name: str = "easyrec",
        n_trials: int = 10,
        n_jobs: int = 1,
        direction: str | None = None,
        sampler: Any = None,
    ) -> None:
        check_counts(n_trials, n_jobs)
        self.params = OmegaConf.to_container(params, resolve=True) if isinstance(params, DictConfig) else params
        self.storage, self.study_name, self.direction = storage, study_name, direction
        self.n_trials, self.n_jobs, self.sampler = n_trials, n_jobs, sampler
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[list[JobReturn]]:
        import optuna

        space = SearchSpace(self.params or {})
        direction = study_direction(self.direction, self.config)
        storage = absolute_uri(self.storage)
        check_study(storage, self.study_name, space, direction)
        study = optuna.create_study(
            study_name=self.study_name, storage=study_storage(storage), direction=direction, load_if_exists=True
        )
        study.set_user_attr(SPACE_ATTR, space.to_json())
        if self.sampler is not None:  # else Optuna's default
            study.sampler = self._sampler(len(study.trials))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(
            "Optuna study '%s' in %s: %d trials so far, adding %d",
            self.study_name,
            storage,
            len(study.trials),
            self.n_trials,
        )
        env = {"study_name": self.study_name, "storage": storage}
        returns, done = [], 0
        while done < self.n_trials:
            trials = [study.ask() for _ in range(min(self.n_jobs, self.n_trials - done))]
            batch = [
                [*arguments, *space.overrides(trial), *env_overrides({**env, "trial_id": str(trial._trial_id)})]
                for trial in trials
            ]
            # jobs numbered as their trials (the runs' names, the sweep's subdirectories), unless another process
            # asked for trials of this study in between
            numbers = [trial.number for trial in trials]
            first = numbers[0] if numbers == list(range(numbers[0], numbers[0] + len(numbers))) else done
            results = self.launcher.launch(batch, initial_job_idx=first)
            for trial, result in zip(trials, results, strict=True):
                tell(study, trial, result)
            done += len(trials)
            returns.append(list(results))
        write_results(study, sweep_dir / "optimization_results.yaml")
        return returns

    def _sampler(self, trials_so_far: int) -> Any:
        node = OmegaConf.create(self.sampler) if not isinstance(self.sampler, DictConfig) else self.sampler
        seed = node.get("seed")
        return instantiate(node, **({"seed": seed + trials_so_far} if seed is not None else {}))


def check_counts(n_trials: Any, n_jobs: Any) -> None:
    """Refuse a number of trials or of trials at a time that is not a positive integer."""
    for key, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"hydra.sweeper.{key}={value!r}: must be an integer >= 1")


def study_direction(direction: str | None, config: DictConfig) -> str:
    """``maximize``/``minimize``: as given, or from ``trainer.monitor_mode``."""
    if direction is None:
        return "maximize" if config.trainer.monitor_mode == "max" else "minimize"
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"hydra.sweeper.direction={direction}: must be one of: maximize, minimize")
    return direction


def check_study(storage: str, study_name: str, space: SearchSpace, direction: str) -> None:
    """Refuse to resume study ``study_name`` with another search space or direction than it was made with."""
    rdb = study_storage(storage)
    try:
        study_id = rdb.get_study_id_from_name(study_name)
    except KeyError:
        return
    where = f"hydra.sweeper.study_name={study_name}: the study in {storage}"
    stored = rdb.get_study_user_attrs(study_id).get(SPACE_ATTR)
    if stored is not None and stored != space.to_json():
        before = {p["key"]: p for p in json.loads(stored)}
        now = {p["key"]: p for p in json.loads(space.to_json())}
        differ = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise ConfigError(
            f"{where} searches another space (differs in {', '.join(differ)}): resume it with the same "
            "hydra.sweeper.params, or give another study_name"
        )
    stored_direction = rdb.get_study_directions(study_id)[0].name.lower()
    if stored_direction != direction:
        raise ConfigError(f"{where} is to {stored_direction}, this search would {direction}: give another study_name")


def env_overrides(env: dict[str, str]) -> list[str]:
    """Overrides that set the trial's environment variables in its job (``hydra.job.env_set``)."""
    return [f"++hydra.job.env_set.{TRIAL_ENV[key]}={json.dumps(value)}" for key, value in env.items()]


def tell(study: Any, trial: Any, result: JobReturn) -> None:
    """Tell ``study`` how ``trial`` ended: pruned (the job's pruning rule marked it), failed (an error, NaN) or
    its value."""
    from optuna.trial import TrialState

    value = result.return_value if result.status == JobStatus.COMPLETED else None
    pruned_at = study._storage.get_trial(trial._trial_id).user_attrs.get(PRUNED_AT)
    if pruned_at is not None:
        study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %d: pruned at step %s", trial.number, pruned_at)
    elif value is None or not math.isfinite(value):
        study.tell(trial, state=TrialState.FAIL)
        log.info("trial %d: failed", trial.number)
    else:
        study.tell(trial, float(value))
        log.info("trial %d: %.6g", trial.number, value)


def write_results(study: Any, path: Path) -> None:
    """Log the best trial so far and write it, with the counts of each state, to ``path``."""
    from optuna.trial import TrialState

    counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    results: dict[str, Any] = {"study_name": study.study_name, "trials": {k: v for k, v in counts.items() if v}}
    if counts["complete"]:
        best = study.best_trial
        results.update(best_trial=best.number, best_value=best.value, best_params=best.params)
        log.info("best trial of '%s': #%d, %.6g, %s", study.study_name, best.number, best.value, best.params)
    OmegaConf.save(OmegaConf.create(results), path)
