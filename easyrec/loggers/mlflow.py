"""MLflow tracking: one MLflow run per ``easyrec train`` job."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from easyrec import __version__
from easyrec.loggers.base import Logger
from easyrec.loggers.retry import LockRetryingClient, is_locked

log = logging.getLogger(__name__)

HYDRA_KEYS = ("_partial_", "_convert_", "_recursive_")
MAX_PARAM_VALUE, MAX_KEY, MAX_RUN_NAME = 6000, 250, 250
#: A file in the launch directory: the store of ``easyrec train`` and ``easyrec compare`` unless told otherwise.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted params from a nested config: ``{"optimizer.lr": "0.001", "optimizer": "torch.optim.Adam"}``.

    A node's ``_target_`` becomes the node's own value, Hydra's other ``_..._`` keys are dropped, lists of
    plain values are kept whole, lists of nodes get ``.i`` keys (MLflow allows no brackets).
    """
    params: dict[str, str] = {}
    for key, value in config.items():
        if key in HYDRA_KEYS:
            continue
        name = prefix if key == "_target_" else (f"{prefix}.{key}" if prefix else str(key))
        if isinstance(value, Mapping):
            params.update(flatten_params(value, name))
        elif isinstance(value, list) and any(isinstance(item, Mapping) for item in value):
            for i, item in enumerate(value):
                params.update(flatten_params(item, f"{name}.{i}") if isinstance(item, Mapping) else {})
        else:
            params[name[:MAX_KEY]] = str(value)[:MAX_PARAM_VALUE]
    return params


def run_name_from(overrides: Sequence[str]) -> str:
    """``"optimizer=adagrad,loss=focal"`` from the command-line overrides; ``"defaults"`` if none."""
    shown = [o for o in overrides if not o.startswith(("hydra.", "logger."))]
    return (",".join(shown) or "defaults")[:MAX_RUN_NAME]


def group_choices(hydra_dir: Path) -> dict[str, str]:
    """The option chosen in each config group of the job (``{"optimizer": "adam", "data/features": "criteo"}``), from
    the ``hydra.yaml`` Hydra writes in the job's ``.hydra`` folder; Hydra's own groups and empty choices left out,
    and nothing when the file is missing or unreadable (``hydra.output_subdir=null``)."""
    import yaml

    try:
        choices = yaml.safe_load((hydra_dir / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    if not isinstance(choices, dict):
        return {}
    return {
        str(group): str(option)
        for group, option in choices.items()
        if option is not None and str(group).split("/")[0] != "hydra"
    }


def git_tags(directory: Path) -> dict[str, str]:
    """The commit (and whether the tree is dirty) of the git repository around ``directory``, if any."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=5, check=True)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git.commit": commit, "git.dirty": str(dirty).lower()}


def local_store(tracking_uri: str) -> Path | None:
    """The file or folder of a local tracking store (``sqlite:///mlflow.db``, ``file:./mlruns``, ``./mlruns``); None
    for a server."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :])
    if tracking_uri.startswith("file:"):
        return Path(tracking_uri[len("file:") :].removeprefix("//"))
    return None if "://" in tracking_uri else Path(tracking_uri)


def absolute_uri(tracking_uri: str) -> str:
    """A local store's URI with an absolute path (``sqlite:///mlflow.db`` -> ``sqlite:////launch/dir/mlflow.db``):
    MLflow keeps one store per URI string in a process, so a relative one would follow the first directory it
    was opened in. Servers' URIs are returned as they are."""
    store = local_store(tracking_uri)
    if store is None or store.is_absolute():
        return tracking_uri
    if tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{store.resolve()}"
    return str(store.resolve())


def log_to_run(
    tracking_uri: str, run_id: str, metrics: Mapping[str, float], step: int, tags: Mapping[str, str]
) -> str | None:
    """Add ``metrics`` (at ``step``) and ``tags`` to an existing run, whatever its status, which stays as it is
    (``easyrec evaluate`` on a finished run). Returns None, or why nothing was logged: the store or the run is not
    there (a local store is never created here)."""
    store = local_store(tracking_uri)
    if store is not None and not store.exists():
        return f"no MLflow store {tracking_uri} here (in {Path.cwd()}); give it with logger.tracking_uri=..."
    tracking_uri = absolute_uri(tracking_uri)
    client = open_client(tracking_uri)
    from mlflow.entities import Metric

    try:
        client.get_run(run_id)
    except Exception as error:  # not in this store, or the server cannot be reached
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"MLflow run {run_id} not found in {tracking_uri} ({first})"
    timestamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, float(value), timestamp, step) for key, value in metrics.items()])
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    return None


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment ``name``, created if missing (by this process or, at the same moment, another)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another job created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def open_client(tracking_uri: str) -> Any:
    """An MlflowClient on ``tracking_uri`` (a local store's path made absolute) that retries locked SQLite calls;
    MLflow's own INFO lines (database migrations) and usage telemetry are off unless asked for."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    return LockRetryingClient(MlflowClient(absolute_uri(tracking_uri)))


class MLflowLogger(Logger):
    """Logs params, metrics, tags and artifacts of one run to an MLflow tracking store.

    Args:
        tracking_uri: ``sqlite:///mlflow.db`` (a file in the launch directory), ``http://host:5000``, ...
        experiment_name: created on first use.
        run_name: None builds one from the command-line overrides.
        asynchronous: send metrics from a background thread (flushed in :meth:`finish`).
        parent_run_id: nest the run under this one (a sweep's parent run: ``mlflow.parentRunId``).

    The run's tags: its command-line overrides (``easyrec.overrides``), the option of each config group
    (``easyrec.choices``, JSON), the version, the output directory and the git commit.

    Calls that an SQLite store refuses because another process holds its lock are retried, so parallel jobs on
    one ``mlflow.db`` lose no run, param or metric.
    """

    def __init__(
        self,
        tracking_uri: str = DEFAULT_TRACKING_URI,
        experiment_name: str = "easyrec",
        run_name: str | None = None,
        asynchronous: bool = True,
        parent_run_id: str | None = None,
    ) -> None:
        self.tracking_uri, self.experiment_name, self.run_name = tracking_uri, experiment_name, run_name
        self.asynchronous, self.parent_run_id = asynchronous, parent_run_id
        self.client = None
        self.run_id: str | None = None
        self._pending: list[tuple[Any, list[Any]]] = []  # (background operation, its metrics)

    def start(
        self, config: Mapping[str, Any], overrides: Sequence[str], output_dir: Path, run_id: str | None = None
    ) -> None:
        from mlflow.entities import Param

        self.tracking_uri = absolute_uri(self.tracking_uri)
        self.client = open_client(self.tracking_uri)
        if run_id is not None and self._reopen(run_id, overrides):
            return
        experiment = experiment_id(self.client, self.experiment_name)
        tags = {
            "easyrec.overrides": " ".join(overrides),
            "easyrec.version": __version__,
            "easyrec.output_dir": str(output_dir),
            **git_tags(Path.cwd()),
        }
        choices = group_choices(output_dir / ".hydra")
        if choices:  # what `easyrec compare` shows for a swept group: its option, not its classes' params
            tags["easyrec.choices"] = json.dumps(choices)
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        run = self.client.create_run(experiment, run_name=self.run_name or run_name_from(overrides), tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten_params(config).items()]
        self.client.log_batch(self.run_id, params=params)
        self.client.log_dict(self.run_id, dict(config), "config/resolved.yaml")
        hydra_dir = output_dir / ".hydra"
        if hydra_dir.is_dir():
            self.client.log_artifacts(self.run_id, str(hydra_dir), "hydra")
        log.info("MLflow run %s in experiment '%s' at %s", self.run_id, self.experiment_name, self.tracking_uri)

    def attach(self, run_id: str) -> None:
        self.tracking_uri = absolute_uri(self.tracking_uri)
        self.client = open_client(self.tracking_uri)
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")  # again, after the workers were restarted

    def _reopen(self, run_id: str, overrides: Sequence[str]) -> bool:
        """Continue the run a checkpoint belongs to: status RUNNING again, the resume recorded as tags; False when
        this store does not have it."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            log.warning("MLflow run %s of the checkpoint is not in %s: starting a new run", run_id, self.tracking_uri)
            return False
        self.run_id = run.info.run_id
        self.client.update_run(self.run_id, status="RUNNING")
        resumes = int(run.data.tags.get("easyrec.resumes", "0")) + 1
        self.client.set_tag(self.run_id, "easyrec.resumes", str(resumes))
        self.client.set_tag(self.run_id, f"easyrec.resume.{resumes}.overrides", " ".join(overrides))
        log.info("MLflow run %s continued (resume %d) at %s", self.run_id, resumes, self.tracking_uri)
        return True

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]
        operation = self.client.log_batch(self.run_id, metrics=batch, synchronous=not self.asynchronous)
        if operation is not None:
            self._pending.append((operation, batch))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.run_id is None:
            return
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self.run_id is None:
            return
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def finish(self, status: str) -> None:
        if self.run_id is None:
            return
        for operation, batch in self._pending:
            try:
                operation.wait()
            except Exception as error:  # the background send found the SQLite store locked: send it again
                if not is_locked(error):
                    raise
                self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
        self._pending.clear()
        self.client.set_terminated(self.run_id, status)
        log.info("MLflow run %s ended %s", self.run_id, status)
