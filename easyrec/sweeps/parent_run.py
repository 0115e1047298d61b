"""The MLflow parent run of a sweep: ``easyrec train -m ...`` nests one child run per job under it."""

from __future__ import annotations

import atexit
import logging
import math
import os
import shlex
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.utils import get_class
from omegaconf import DictConfig

from easyrec import __version__
from easyrec.errors import ConfigError, JobsFailed
from easyrec.loggers import MLflowLogger
from easyrec.loggers.courier import TrackerDown, within
from easyrec.loggers.mlflow import DEFAULT_TRACKING_URI, experiment_id, git_tags, open_client
from easyrec.sweeps.checks import check_sweep
from easyrec.sweeps.jobs import SWEPT_KEYS_ENV, read_results
from easyrec.user_errors import describe, exit_with

log = logging.getLogger("easyrec")

#: Read by ``conf/logger/mlflow.yaml`` (``logger.parent_run_id``) in every job, in this process or another.
PARENT_RUN_ENV = "EASYREC_PARENT_RUN_ID"


class SweepParentRun(Callback):
    """A Hydra callback (``conf/hydra/default.yaml``) around a multirun.

    Before the first job it checks that every job composes (and an Optuna search space), then opens the sweep's
    parent run (tags: the sweep's overrides, sweeper and directory) and hands its id to the jobs in
    ``EASYREC_PARENT_RUN_ID``. After the last job it records on the parent the number of jobs, of failed jobs and
    the best child by ``optimized_metric`` (``trainer.monitor_mode`` says if more is better), ends it FINISHED
    (FAILED if every job failed), names the best job and the ``easyrec compare`` command to run next, and exits
    non-zero, naming the failed jobs, if any failed.
    """

    def __init__(self) -> None:
        self.tracking_uri: str | None = None  # a URI, not a client: the callback is pickled to joblib's workers
        self.run_id: str | None = None
        self.swept: list[str] = []
        self.started = 0.0
        self.timeout = 30.0  # logger.timeout: the longest wait for each exchange with the tracker

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        # Hydra turns a callback's exceptions into warnings: a user error must exit here, before any job.
        try:
            self.swept, tracked = check_sweep(config), _is_mlflow(config)
        except Exception as error:
            message = describe(error)
            if message is None:
                raise
            exit_with("train", error, message)
        os.environ[SWEPT_KEYS_ENV] = ",".join(self.swept)
        if not tracked:
            return
        self.tracking_uri, self.timeout = config.logger.tracking_uri, float(config.logger.get("timeout", 30.0))
        sweep_dir = Path(config.hydra.sweep.dir).absolute()
        tags = {
            "easyrec.sweep.overrides": " ".join(config.hydra.overrides.task),
            "easyrec.sweep.sweeper": config.hydra.sweeper._target_,
            "easyrec.sweep.launcher": config.hydra.launcher._target_,
            "easyrec.sweep.dir": str(sweep_dir),
            "easyrec.version": __version__,
            **git_tags(Path.cwd()),
        }
        if "study_name" in config.hydra.sweeper:  # an Optuna search
            tags |= {"easyrec.sweep.study_name": config.hydra.sweeper.study_name}

        def open_parent() -> str:
            client = open_client(self.tracking_uri)
            experiment = experiment_id(client, config.logger.experiment_name)
            return client.create_run(experiment, run_name=f"sweep-{sweep_dir.name}", tags=tags).info.run_id

        try:
            self.run_id = within(self.timeout, open_parent)
        except TrackerDown as error:
            log.warning(
                "MLflow at %s did not take the sweep's parent run (%s): jobs run without one", self.tracking_uri, error
            )
            return
        os.environ[PARENT_RUN_ENV] = self.run_id
        atexit.register(self._abandon)
        log.info("MLflow parent run %s of the sweep in %s", self.run_id, sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self._abandon)
        os.environ.pop(PARENT_RUN_ENV, None)
        os.environ.pop(SWEPT_KEYS_ENV, None)
        results = read_results(Path(config.hydra.sweep.dir), since=self.started)
        failed = [r for r in results if r["status"] == "FAILED"]
        best = best_result(results, config.trainer.monitor_mode == "max")
        child = None
        if self.run_id is not None:
            try:
                child = within(self.timeout, lambda: self._summarize(config, results, failed, best))
            except TrackerDown as error:
                log.warning("MLflow at %s did not take the sweep's summary (%s)", self.tracking_uri, error)
        if best is not None:
            self._name_best(config, results, best, child)
        if failed:
            shown = "; ".join(f"#{r['job']} ({self._swept_values(r)}): {r['error']}" for r in failed[:3])
            more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
            error = JobsFailed(f"{len(failed)} of {len(results)} jobs failed: {shown}{more}")
            exit_with("train", error, str(error))

    def _summarize(
        self,
        config: DictConfig,
        results: list[dict[str, Any]],
        failed: list[dict[str, Any]],
        best: dict[str, Any] | None,
    ) -> Any:
        """Record the jobs and the best of them on the parent run and end it; returns the best job's child run."""
        client = open_client(self.tracking_uri)
        tags = {"easyrec.sweep.jobs": str(len(results)), "easyrec.sweep.failed": str(len(failed))}
        metrics = {"sweep/jobs": len(results), "sweep/failed": len(failed)}
        child = None
        if best is not None:
            child = self._child(client, best["output_dir"])
            tags |= {"easyrec.sweep.best_job": str(best["job"]), "easyrec.sweep.best_value": repr(best["value"])}
            if child is not None:
                tags |= {
                    "easyrec.sweep.best_run_id": child.info.run_id,
                    "easyrec.sweep.best_run_name": child.info.run_name,
                }
            metrics[f"best/{config.optimized_metric}"] = best["value"]
        for key, value in tags.items():
            client.set_tag(self.run_id, key, value)
        for key, value in metrics.items():
            client.log_metric(self.run_id, key, float(value))
        status = "FAILED" if results and len(failed) == len(results) else "FINISHED"
        client.set_terminated(self.run_id, status)
        log.info("MLflow parent run %s ended %s: %d jobs, %d failed", self.run_id, status, len(results), len(failed))
        return child

    def _name_best(self, config: DictConfig, results: list[dict[str, Any]], best: dict[str, Any], child: Any) -> None:
        """The sweep's last lines: its best job (its run's name, value and directory) and, when tracked, the
        ``easyrec compare`` command that puts its runs side by side."""
        name = child.info.run_name if child is not None else f"#{best['job']} {self._swept_values(best)}".strip()
        value = f"{config.optimized_metric} {best['value']:.5f}"
        log.info("best of %d jobs: %s (%s) in %s", len(results), name, value, best["output_dir"])
        if self.run_id is not None:
            store = (
                "" if self.tracking_uri == DEFAULT_TRACKING_URI else f" --tracking-uri {shlex.quote(self.tracking_uri)}"
            )
            log.info("compare the runs: easyrec compare %s%s", self.run_id, store)

    def _abandon(self) -> None:
        """At exit without :meth:`on_multirun_end` (Ctrl-C, a sweeper's crash): the parent ends KILLED, not RUNNING."""
        try:
            within(self.timeout, lambda: open_client(self.tracking_uri).set_terminated(self.run_id, "KILLED"))
        except TrackerDown as error:  # exiting anyway: say why the parent stays RUNNING
            log.warning("MLflow parent run %s could not be ended: %s", self.run_id, error)

    def _swept_values(self, result: dict[str, Any]) -> str:
        return " ".join(o for o in result["overrides"] if o.split("=", 1)[0].lstrip("+~") in self.swept)

    def _child(self, client: Any, output_dir: str) -> Any:
        """The child run of the job in ``output_dir``."""
        experiment = client.get_run(self.run_id).info.experiment_id
        runs = client.search_runs(
            [experiment],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.run_id}' and tags.`easyrec.output_dir` = '{output_dir}'",
            max_results=1,
        )
        return runs[0] if runs else None


def best_result(results: list[dict[str, Any]], larger: bool) -> dict[str, Any] | None:
    """The finished job with the best finite value (the largest when ``larger``), None if there is none."""
    finished = [
        r for r in results if r["status"] == "FINISHED" and r["value"] is not None and math.isfinite(r["value"])
    ]
    return (max if larger else min)(finished, key=lambda r: r["value"]) if finished else None


def _is_mlflow(config: DictConfig) -> bool:
    target = config.get("logger", {}).get("_target_")
    try:
        return target is not None and issubclass(get_class(target), MLflowLogger)
    except (ImportError, ValueError) as error:
        raise ConfigError(f"logger._target_={target}: {error}") from None
