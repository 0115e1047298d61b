"""One job of a sweep (``easyrec train -m``): a failing job is recorded, not raised, so that the sweep goes on."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from easyrec.loggers.mlflow import run_name_from
from easyrec.user_errors import describe

log = logging.getLogger("easyrec")

#: Each job writes its outcome here, in its own output directory; the sweep's callback reads them all.
RESULT_FILE = "sweep_job.json"
#: The keys the sweep varies (set by the sweep's callback): children are named by these alone.
SWEPT_KEYS_ENV = "EASYREC_SWEPT_KEYS"


def run_sweep_job(
    train: Callable[[DictConfig, Path, list[str]], float],
    cfg: DictConfig,
    output_dir: Path,
    overrides: list[str],
    job: int,
) -> float:
    """``train(cfg, output_dir, overrides)`` as job number ``job`` of a sweep: returns the optimized metric, or NaN
    when the job fails. A failure is logged, its MLflow run ends FAILED with the error (a run is made for a job
    that failed before opening one), and ``sweep_job.json`` records it for the sweep's summary and exit code."""
    name_sweep_run(cfg, overrides, job)
    try:
        value = train(cfg, output_dir, overrides)
    except Exception as error:
        message = describe(error)
        if message is None:  # a bug: keep the traceback in the job's log
            log.exception("job %d failed", job)
            message = f"{type(error).__name__}: {error}".strip().splitlines()[0]
        else:
            log.error("job %d failed: %s", job, message)
        # the tag train() writes when the run was open: the error's type and message
        record_failed_run(cfg, output_dir, overrides, f"{type(error).__name__}: {describe(error) or error}")
        write_result(output_dir, job, overrides, "FAILED", error=message)
        return math.nan
    write_result(output_dir, job, overrides, "FINISHED", value=value)
    return value


def name_sweep_run(cfg: DictConfig, overrides: Sequence[str], job: int) -> None:
    """Name the job's run by :func:`sweep_run_name` unless ``logger.run_name`` names it."""
    if "run_name" in cfg.get("logger", {}) and cfg.logger.run_name is None:
        with open_dict(cfg):
            cfg.logger.run_name = sweep_run_name(overrides, job)


def sweep_run_name(overrides: Sequence[str], job: int) -> str:
    """``"#2 optimizer=adagrad,optimizer.lr=0.0031"``: the job number and the values of the swept keys only (the
    last value of a key given twice, floats to 4 digits)."""
    swept = [key for key in os.environ.get(SWEPT_KEYS_ENV, "").split(",") if key]
    values: dict[str, str] = {}
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if not swept or key in swept:
            values.pop(key, None)
            values[key] = _short(value)
    return f"#{job} {run_name_from([f'{key}={value}' for key, value in values.items()])}"


def _short(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if any(c in value for c in ".eE") else value


def write_result(
    output_dir: Path,
    job: int,
    overrides: Sequence[str],
    status: str,
    value: float | None = None,
    error: str | None = None,
) -> None:
    record = {"job": job, "status": status, "value": value, "error": error, "overrides": list(overrides)}
    record["output_dir"] = str(output_dir)
    (output_dir / RESULT_FILE).write_text(json.dumps(record, indent=1) + "\n")


def read_results(sweep_dir: Path, since: float = 0.0) -> list[dict[str, Any]]:
    """The records of the jobs of the sweep in ``sweep_dir`` written since ``since`` (a ``time.time()``: a sweep
    dir given twice keeps the files of the earlier sweep), by job number."""
    paths = [path for path in sweep_dir.rglob(RESULT_FILE) if path.stat().st_mtime >= since]
    return sorted((json.loads(path.read_text()) for path in paths), key=lambda record: record["job"])


def record_failed_run(cfg: DictConfig, output_dir: Path, overrides: list[str], message: str) -> None:
    """Make sure the tracker has a FAILED run for this job, with the error: ``train`` ends its run FAILED itself
    once it opened one; a job that failed before (an impossible value) gets one here, with its params; the run of
    a job whose process died (its Ray node went down) is still RUNNING, and ends FAILED here."""
    end_job_run(cfg, output_dir, overrides, "FAILED", message, create=True)


def end_job_run(
    cfg: DictConfig, output_dir: Path, overrides: list[str], status: str, message: str, create: bool = False
) -> None:
    """End the tracker's run of this job ``status``, with ``message`` in its ``easyrec.error`` tag, when the job's
    process died and left it RUNNING (a lost Ray node; a sweep cancelled with Ctrl-C: KILLED); with ``create``, a
    job that never opened one gets one (with its params). A tracker that fails is a warning: the job's log and
    ``sweep_job.json`` still say what happened."""
    from easyrec.loggers import MLflowLogger
    from easyrec.loggers.courier import within
    from easyrec.loggers.mlflow import open_client

    def end_running(run: Any) -> None:
        client = open_client(logger.tracking_uri)
        client.set_tag(run.info.run_id, "easyrec.error", message[:5000])
        client.set_terminated(run.info.run_id, status)

    try:
        logger = instantiate(cfg.logger)
        if not isinstance(logger, MLflowLogger):
            return
        run = within(logger.timeout, lambda: job_run(logger, output_dir))
        if run is not None:
            if run.info.status == "RUNNING":
                within(logger.timeout, lambda: end_running(run))
            return
        if not create:
            return
        try:
            config = OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # the error may be in an interpolation
            config = OmegaConf.to_container(cfg, resolve=False)
        logger.start(config, overrides, output_dir)
        logger.set_tags({"easyrec.error": message[:5000]})
        logger.finish(status)
    except Exception as error:
        log.warning("could not record the %s job in MLflow: %s", status, describe(error) or error)


def job_run(logger: Any, output_dir: Path) -> Any:
    """The run of the job in ``output_dir`` in ``logger``'s experiment, None if it has none."""
    from easyrec.loggers.mlflow import open_client

    client = open_client(logger.tracking_uri)
    experiment = client.get_experiment_by_name(logger.experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`easyrec.output_dir` = '{output_dir}'", max_results=1
    )
    return runs[0] if runs else None
