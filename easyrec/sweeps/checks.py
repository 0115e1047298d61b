"""What is checked before a sweep starts: every job's config composes; an Optuna search space and study fit."""

from __future__ import annotations

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from easyrec.errors import ConfigError
from easyrec.loggers.mlflow import absolute_uri
from easyrec.sweeps.search_space import PREFIX, SearchSpace

OPTUNA_SWEEPER = "hydra_plugins.easyrec_sweeper.optuna_sweeper.OptunaSweeper"
RAY_LAUNCHER = "hydra_plugins.easyrec_launcher.ray_launcher.RayLauncher"


def check_sweep(config: DictConfig) -> list[str]:
    """Raise a user error if a job of this sweep would not compose (an unknown key or option), or, with the Optuna
    sweeper, if the search space is invalid or the study was made with another one, or, with the Ray launcher, if
    its jobs could not reach the stores they write to or the cluster does not answer. Returns the swept keys."""
    loader = GlobalHydra.instance().config_loader()
    overrides = list(config.hydra.overrides.task)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(overrides)
    if config.hydra.sweeper._target_ == OPTUNA_SWEEPER:
        from hydra_plugins.easyrec_sweeper.optuna_sweeper import check_counts, check_study, study_direction

        sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
        if sweeps:
            raise ConfigError(f"{sweeps[0]}: a sweep on the command line; an Optuna search takes keys from {PREFIX}")
        sweeper = config.hydra.sweeper
        check_counts(sweeper.n_trials, sweeper.n_jobs)
        space = SearchSpace(OmegaConf.to_container(sweeper.params, resolve=True) or {})
        for key in space.keys():
            if key not in config.hydra.runtime.choices and OmegaConf.select(config, key, default=KeyError) is KeyError:
                raise ConfigError(f"{PREFIX}.{key}: no such key or config group in the config")
        jobs = [overrides + corner for corner in space.corner_overrides()]
        check_study(
            absolute_uri(sweeper.storage), sweeper.study_name, space, study_direction(sweeper.direction, config)
        )
        swept = space.keys()
    else:
        jobs = [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        swept = [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]
    for job in jobs:
        loader.load_sweep_config(master_config=config, sweep_overrides=job)
    if config.hydra.launcher._target_ == RAY_LAUNCHER:
        from hydra_plugins.easyrec_launcher.ray_launcher import check_cluster

        check_cluster(config)
    return swept
