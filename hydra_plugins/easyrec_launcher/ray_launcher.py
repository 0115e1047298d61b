"""``hydra/launcher=ray``: each job of a sweep is a task of a Ray cluster, run by Hydra's Ray launcher plugin.

The plugin (``hydra-ray-launcher``) connects to the cluster (``ray.init``) and runs Hydra's job in a Ray task
(``_run_job``). This launcher adds what a sweep of easyrec needs on a cluster:

- one task per job, with the job's ``trainer.num_threads`` CPUs (1 when that is null) unless
  ``hydra.launcher.ray.remote.num_cpus`` says otherwise;
- the sweep's parent run and swept keys reach the jobs (Ray's workers do not inherit the launcher's environment),
  and each job runs from the launch directory where its node has it (relative paths mean the same as locally);
- each job's outcome (``sweep_job.json``) comes back to the launching machine, shared sweep directory or not;
- a job whose worker or node dies ends FAILED with the reason, in MLflow and in the sweep's summary, and the sweep
  goes on (the plugin would stop at the first lost job);
- Ctrl-C cancels the jobs still queued or running on the cluster.

Ray and the plugin are the ``ray`` extra (``pip install 'easyrec[ray]'``), imported only when a sweep uses them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
from pathlib import Path
from typing import Any, NamedTuple

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict

from easyrec.errors import ConfigError, first_line
from easyrec.loggers.mlflow import local_store
from easyrec.sweeps.jobs import (
    RESULT_FILE,
    SWEPT_KEYS_ENV,
    end_job_run,
    name_sweep_run,
    record_failed_run,
    write_result,
)
from easyrec.sweeps.parent_run import PARENT_RUN_ENV

log = logging.getLogger("easyrec")

#: What the jobs read from the launcher's environment: handed to each job in ``hydra.job.env_set``.
JOB_ENV = (PARENT_RUN_ENV, SWEPT_KEYS_ENV)
#: Addresses with which ``ray.init`` starts a private cluster on this machine, for this sweep only.
PRIVATE = (None, "local")
INSTALL = "pip install 'easyrec[ray]'"


class RayLauncher(Launcher):
    """Launches a sweep's jobs on the Ray cluster at ``ray.init.address`` (``conf/hydra/launcher/ray.yaml``).

    Args:
        ray: ``init``, the keyword arguments of ``ray.init`` (``address``: None starts a private cluster on this
            machine, ``auto`` joins the cluster this machine is a node of, ``ray://HEAD:10001`` is Ray Client);
            ``remote``, the options of each job's task (``num_cpus``, ``num_gpus``, ``resources``, ``max_retries``,
            ...; ``num_cpus`` None: the job's ``trainer.num_threads``, else 1).
    """

    def __init__(self, ray: DictConfig) -> None:
        self.ray_cfg = ray
        self.config: DictConfig | None = None
        self.hydra_context: Any = None
        self.task_function: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        ray = connect(self.ray_cfg.init)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("Ray launcher: %d jobs on %s, sweep directory %s", len(job_overrides), cluster(ray), sweep_dir)
        env = {key: os.environ[key] for key in JOB_ENV if key in os.environ}
        remote = ray.remote(run_in_worker)
        jobs = []
        for num, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config):
                config.hydra.sweep.dir = str(sweep_dir)  # the same path on every node, not one per worker's cwd
                config.hydra.job.id = f"ray_{num}"
                config.hydra.job.num = num
                config.hydra.job.env_set.update(env)
            output_dir = sweep_dir / str(config.hydra.sweep.subdir)
            ref = remote.options(**task_options(self.ray_cfg.remote, config)).remote(
                self.hydra_context,
                config,
                self.task_function,
                Singleton.get_state(),
                str(self.config.hydra.runtime.cwd),
                str(output_dir),
            )
            jobs.append(Job(num, list(overrides), config, output_dir, ref))
        returns: list[JobReturn] = []
        try:
            for job in jobs:
                returns.append(self._collect(ray, job))
        except KeyboardInterrupt:  # the jobs not collected are cancelled, and the runs they opened end KILLED
            pending = jobs[len(returns) :]
            for job in pending:
                ray.cancel(job.ref, force=True)
            log.warning("Ray launcher: interrupted; cancelled %d jobs on the cluster", len(pending))
            for job in pending:
                end_job_run(
                    task_config(job), job.output_dir, job.overrides, "KILLED", "cancelled: the sweep was interrupted"
                )
            raise
        return returns

    def _collect(self, ray: Any, job: Job) -> JobReturn:
        """The job's return once its task ended; a lost task (its worker or node died) as a failed job."""
        try:
            returned, worker, record = ray.get(job.ref)
        except ray.exceptions.RayError as error:  # the job itself never raises: easyrec records its errors
            return self._lost(job, error)
        result = job.output_dir / RESULT_FILE
        if record is not None and not (result.exists() and result.read_text() == record):  # not a shared directory
            job.output_dir.mkdir(parents=True, exist_ok=True)
            result.write_text(record)
        outcome = json.loads(record)["status"] if record is not None else "ended"
        log.info("#%d %s in Ray worker %s on %s: %s", job.num, outcome, worker["pid"], worker["host"], job.output_dir)
        return returned

    def _lost(self, job: Job, error: Exception) -> JobReturn:
        """Record a job whose task died with its worker or node: its MLflow run ends FAILED with the reason (one is
        made if it had not opened one), ``sweep_job.json`` says FAILED, and the sweep goes on."""
        reason = f"lost on the Ray cluster: {type(error).__name__}: {first_line(error)}"
        log.error("job %d failed: %s", job.num, reason)
        cfg = task_config(job)
        job.output_dir.mkdir(parents=True, exist_ok=True)
        record_failed_run(cfg, job.output_dir, job.overrides, reason)
        write_result(job.output_dir, job.num, job.overrides, "FAILED", error=reason)
        return JobReturn(
            overrides=job.overrides,
            cfg=cfg,
            hydra_cfg=job.config,
            working_dir=str(job.output_dir),
            task_name=str(job.config.hydra.job.name),
            status=JobStatus.COMPLETED,  # as a failed job's own return: NaN, the sweep goes on
            _return_value=math.nan,
        )


def task_options(remote: DictConfig, config: DictConfig) -> dict[str, Any]:
    """The task options of the job ``config``: ``remote`` (``hydra.launcher.ray.remote``, None values left out) with
    ``num_cpus`` from the job's ``trainer.num_threads`` when unset."""
    options = {k: v for k, v in OmegaConf.to_container(remote, resolve=True).items() if v is not None}
    if "num_cpus" not in options:
        options["num_cpus"] = OmegaConf.select(config, "trainer.num_threads", default=None) or 1
    return options


class Job(NamedTuple):
    """A job handed to the cluster: its number, overrides, composed config, output directory and task. (Not a
    dataclass: Hydra's plugin scan runs this module outside ``sys.modules``, where ``@dataclass`` fails.)"""

    num: int
    overrides: list[str]
    config: DictConfig
    output_dir: Path
    ref: Any


def task_config(job: Job) -> DictConfig:
    """The job's config as the job sees it (without ``hydra``), its run named as in the sweep."""
    cfg = OmegaConf.masked_copy(job.config, [key for key in job.config if key != "hydra"])
    name_sweep_run(cfg, job.overrides, job.num)
    return cfg


def run_in_worker(
    hydra_context: Any,
    config: DictConfig,
    task_function: Any,
    singleton_state: Any,
    launch_dir: str,
    output_dir: str,
) -> tuple[JobReturn, dict[str, Any], str | None]:
    """In a Ray worker: run the job from ``launch_dir`` (when this node has it) with the plugin's job function;
    return its :class:`JobReturn`, where it ran (pid, host) and its ``sweep_job.json``."""
    from hydra_plugins.hydra_ray_launcher._launcher_util import _run_job

    worker = {"pid": os.getpid(), "host": socket.gethostname()}
    cwd = os.getcwd()
    if os.path.isdir(launch_dir):
        os.chdir(launch_dir)
    try:
        returned = _run_job(hydra_context, config, task_function, singleton_state)
    finally:
        os.chdir(cwd)  # the worker runs other jobs after this one
    result = Path(output_dir) / RESULT_FILE
    return returned, worker, result.read_text() if result.exists() else None


def require_ray() -> Any:
    """The ``ray`` module; a user error naming the extra when it or the plugin is not installed."""
    try:
        import hydra_plugins.hydra_ray_launcher._launcher_util  # noqa: F401  (the plugin's job function)
        import ray
    except ImportError as error:
        raise ConfigError(f"hydra/launcher=ray: {error.name or error} is not installed: {INSTALL}") from None
    return ray


def connect(init: DictConfig) -> Any:
    """``ray.init(**init)`` once per process (None values left out); the ``ray`` module. A cluster that does not
    answer is a user error naming the address."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    options = {k: v for k, v in OmegaConf.to_container(init, resolve=True).items() if v is not None}
    try:
        ray.init(**options)
    except (ConnectionError, ValueError, RuntimeError) as error:
        hint = (
            ""
            if options.get("address") in PRIVATE
            else " (is it up, and does this machine have the cluster's token, as its nodes do: RAY_AUTH_MODE=token "
            "with ~/.ray/auth_token or RAY_AUTH_TOKEN?)"
        )
        raise ConfigError(
            f"hydra.launcher.ray.init.address={options.get('address')}: {first_line(error)}{hint}"
        ) from None
    return ray


def cluster(ray: Any) -> str:
    """``"3 nodes, 24 CPUs"``: what the connected cluster has."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    return f"{len(nodes)} node{'s' * (len(nodes) != 1)}, {int(ray.cluster_resources().get('CPU', 0))} CPUs"


def check_cluster(config: DictConfig) -> None:
    """Before a sweep on a Ray cluster: refuse stores that the jobs on other nodes cannot reach (a local MLflow
    store; an Optuna study in a local file when the trials report to it to be pruned), connect, and refuse task
    options Ray does not take."""
    init = config.hydra.launcher.ray.init
    address = init.get("address")
    require_ray()
    if address not in PRIVATE:  # a cluster you join may run jobs on other machines, now or once it grows
        where = f"the jobs on other nodes of the Ray cluster (hydra.launcher.ray.init.address={address})"
        tracking = OmegaConf.select(config, "logger.tracking_uri", default=None)
        if tracking is not None and local_store(tracking) is not None:
            raise ConfigError(
                f"logger.tracking_uri={tracking}: a local store that {where} cannot reach; start a tracking server "
                "(mlflow server --host 0.0.0.0 --backend-store-uri ...) and give logger.tracking_uri=http://HOST:5000"
            )
        storage = OmegaConf.select(config, "hydra.sweeper.storage", default=None)
        if storage is not None and local_store(storage) is not None and prunes(config.get("early_stopping")):
            raise ConfigError(
                f"hydra.sweeper.storage={storage}: a local file that {where} cannot reach to report to the study "
                "(early_stopping prunes trials); serve it to them (easyrec study-server --host 0.0.0.0 --port 13000 "
                "--storage ...) and give hydra.sweeper.storage=grpc://HOST:13000, or a database server "
                "(postgresql://...)"
            )
    ray = connect(init)
    try:  # Ray checks the task options here, not when a job is submitted mid-sweep
        ray.remote(run_in_worker).options(**task_options(config.hydra.launcher.ray.remote, config))
    except ValueError as error:
        raise ConfigError(f"hydra.launcher.ray.remote: {first_line(error)}") from None


def prunes(node: Any) -> bool:
    """Whether an ``early_stopping`` config has a rule that reports to an Optuna trial (``PruneTrial``)."""
    if isinstance(node, DictConfig):
        return node.get("_target_") == "easyrec.early_stopping.PruneTrial" or any(
            prunes(node.get(key)) for key in node if key != "_target_"
        )
    return False
