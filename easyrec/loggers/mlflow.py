"""MLflow tracking: one MLflow run per ``easyrec train`` job."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from easyrec import __version__
from easyrec.config.arguments import Positive, checked
from easyrec.errors import first_line
from easyrec.loggers.base import Logger
from easyrec.loggers.courier import PENDING_FILE, Courier, TrackerDown, within
from easyrec.loggers.retry import LockRetryingClient

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
    tracking_uri: str,
    run_id: str,
    metrics: Mapping[str, float],
    step: int,
    tags: Mapping[str, str],
    timeout: float = 30.0,
) -> str | None:
    """Add ``metrics`` (at ``step``) and ``tags`` to an existing run, whatever its status, which stays as it is
    (``easyrec evaluate`` on a finished run). Returns None, or why nothing was logged: the store or the run is not
    there (a local store is never created here), or the tracker did not answer within ``timeout`` seconds."""
    store = local_store(tracking_uri)
    if store is not None and not store.exists():
        return f"no MLflow store {tracking_uri} here (in {Path.cwd()}); give it with logger.tracking_uri=..."
    tracking_uri = absolute_uri(tracking_uri)

    def send() -> str | None:
        client = open_client(tracking_uri)
        try:
            client.get_run(run_id)
        except Exception as error:  # not in this store
            return f"MLflow run {run_id} not found in {tracking_uri} ({first_line(error)})"
        timestamp = int(time.time() * 1000)
        deliver(client, run_id, {"op": "metrics", "metrics": metrics, "step": step, "timestamp": timestamp}, Path())
        if tags:
            deliver(client, run_id, {"op": "tags", "tags": tags}, Path())
        return None

    try:
        return within(timeout, send)
    except TrackerDown as error:
        return f"MLflow at {tracking_uri} did not answer ({error})"


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
    MLflow's own INFO lines (database migrations) and usage telemetry are off unless asked for.

    Processes of this machine that open one SQLite store at the same moment take turns (a lock file in the temporary
    directory, named after the store): MLflow creates a new store's tables, and two doing it at once fail
    ("duplicate column name")."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    tracking_uri = absolute_uri(tracking_uri)
    if not tracking_uri.startswith("sqlite:"):
        return LockRetryingClient(MlflowClient(tracking_uri))
    from filelock import FileLock

    name = hashlib.sha256(str(local_store(tracking_uri)).encode()).hexdigest()[:16]
    # mode 0o666: another user's job may open the same store after this one
    with FileLock(Path(tempfile.gettempdir()) / f"easyrec-mlflow-{name}.lock", mode=0o666):
        return LockRetryingClient(MlflowClient(tracking_uri))  # the client opens (and creates) the store


def open_run(client: Any, record: Mapping[str, Any], root: Path) -> str:
    """The id of the run an ``open`` record asks for: the run ``record["resume"]["run_id"]`` continued (status
    RUNNING again, the resume recorded as tags) when the store has it, else a new run with the record's params,
    config (``config/resolved.yaml``) and Hydra files (``root/.hydra``, when ``record["hydra"]``)."""
    resume = record.get("resume")
    if resume:
        from mlflow.exceptions import MlflowException

        run_id = resume["run_id"]
        try:
            run = client.get_run(run_id)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            log.warning("MLflow run %s of the checkpoint is not in its store: starting a new run", run_id)
        else:
            client.update_run(run_id, status="RUNNING")
            resumes = int(run.data.tags.get("easyrec.resumes", "0")) + 1
            client.set_tag(run_id, "easyrec.resumes", str(resumes))
            client.set_tag(run_id, f"easyrec.resume.{resumes}.overrides", resume["overrides"])
            log.info("MLflow run %s continued (resume %d)", run_id, resumes)
            return run_id
    from mlflow.entities import Param

    experiment = experiment_id(client, record["experiment"])
    run_id = client.create_run(experiment, run_name=record["run_name"], tags=record["tags"]).info.run_id
    client.log_batch(run_id, params=[Param(str(k), str(v)) for k, v in record["params"].items()])
    client.log_dict(run_id, record["config"], "config/resolved.yaml")
    if record.get("hydra") and (root / ".hydra").is_dir():
        client.log_artifacts(run_id, str(root / ".hydra"), "hydra")
    return run_id


def deliver(
    client: Any, run_id: str | None, record: Mapping[str, Any], root: Path, confined: bool = False
) -> str | None:
    """Send one record of :class:`MLflowLogger` (live, or replayed from a journal by ``easyrec sync``) to the run
    ``run_id``; returns the run's id (an ``open`` record opens it).

    Every record but ``open`` can be sent again without adding anything: tags and artifacts are set, not appended,
    and an SQL store (SQLite, a server's database) keeps a metric once per key, step, timestamp and value.
    ``root``: the run directory that an artifact's path is relative to; ``confined``: the path must stay inside it
    (a journal read from a file names no other file to upload).
    """
    from mlflow.entities import Metric, RunTag

    op = record["op"]
    if op == "open":
        return open_run(client, record, root)
    if run_id is None:
        raise ValueError(f"a '{op}' record before the run was opened")
    if op == "metrics":
        timestamp, step = int(record["timestamp"]), int(record["step"])
        batch = [Metric(str(key), float(value), timestamp, step) for key, value in record["metrics"].items()]
        client.log_batch(run_id, metrics=batch)
    elif op == "tags":
        client.log_batch(run_id, tags=[RunTag(str(k), str(v)) for k, v in record["tags"].items()])
    elif op == "artifact":
        path = (root / record["path"]).resolve()
        if confined and not path.is_relative_to(root.resolve()):
            raise ValueError(f"artifact {record['path']}: outside the run directory {root}")
        if path.is_dir():
            client.log_artifacts(run_id, str(path), record.get("artifact_path"))
        elif path.is_file():
            client.log_artifact(run_id, str(path), record.get("artifact_path"))
    elif op == "running":
        client.update_run(run_id, status="RUNNING")
    elif op == "end":
        client.set_terminated(run_id, str(record["status"]), end_time=int(record["end_time"]))
    else:
        raise ValueError(f"unknown record '{op}'")
    return run_id


class MLflowLogger(Logger):
    """Logs params, metrics, tags and artifacts of one run to an MLflow tracking store.

    Args:
        tracking_uri: ``sqlite:///mlflow.db`` (a file in the launch directory), ``http://host:5000``, ...
        experiment_name: created on first use.
        run_name: None builds one from the command-line overrides.
        asynchronous: send metrics, tags and artifacts from a background thread (flushed in :meth:`finish`)
            instead of waiting for each.
        parent_run_id: nest the run under this one (a sweep's parent run: ``mlflow.parentRunId``).
        timeout: seconds to wait for the tracker, > 0: for :meth:`start`'s records, for each record when not
            asynchronous, and for :meth:`finish`'s flush.
        log_checkpoint: ``best`` or ``latest``: at the end, the run's checkpoint of that kind (as
            :func:`~easyrec.checkpoints.find_checkpoint` picks it, with its shards directory) goes to the tracker
            too, under ``checkpoints/``: the model of a job whose run directory is on a machine you cannot reach (a
            node of a Ray cluster); ``none``: checkpoints stay in the run directory only.

    The run's tags: its command-line overrides (``easyrec.overrides``), the option of each config group
    (``easyrec.choices``, JSON), the version, the output directory with the host and process that wrote it, and
    the git commit.

    Calls that an SQLite store refuses because another process holds its lock are retried, so parallel jobs on
    one ``mlflow.db`` lose no run, param or metric. A tracker that does not answer in ``timeout`` seconds, or fails,
    is not called again by this run: what it did not take is kept in the run directory's ``tracking-pending.jsonl``
    (``easyrec sync <run dir>`` sends it later), and :meth:`finish` says so in one warning.
    """

    @checked
    def __init__(
        self,
        tracking_uri: str = DEFAULT_TRACKING_URI,
        experiment_name: str = "easyrec",
        run_name: str | None = None,
        asynchronous: bool = True,
        parent_run_id: str | None = None,
        timeout: Positive = 30.0,
        log_checkpoint: Literal["none", "best", "latest"] = "none",
    ) -> None:
        self.tracking_uri, self.experiment_name, self.run_name = tracking_uri, experiment_name, run_name
        self.asynchronous, self.parent_run_id, self.timeout = asynchronous, parent_run_id, timeout
        self.log_checkpoint = log_checkpoint
        self.client = None
        self.run_id: str | None = None
        self.output_dir: Path | None = None
        self.courier: Courier | None = None

    def start(
        self, config: Mapping[str, Any], overrides: Sequence[str], output_dir: Path, run_id: str | None = None
    ) -> None:
        self._connect(output_dir)
        tags = {
            "easyrec.overrides": " ".join(overrides),
            "easyrec.version": __version__,
            "easyrec.output_dir": str(output_dir),
            "easyrec.host": socket.gethostname(),  # where the output directory is (a node of a cluster)
            "easyrec.pid": str(os.getpid()),
            **git_tags(Path.cwd()),
        }
        choices = group_choices(output_dir / ".hydra")
        if choices:  # what `easyrec compare` shows for a swept group: its option, not its classes' params
            tags["easyrec.choices"] = json.dumps(choices)
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        opening = {
            "op": "open",
            "experiment": self.experiment_name,
            "run_name": self.run_name or run_name_from(overrides),
            "tags": tags,
            "params": flatten_params(config),
            "config": dict(config),
            "hydra": (output_dir / ".hydra").is_dir(),
        }
        if run_id is not None:  # a resumed run: continue it, when the store has it
            opening["resume"] = {"run_id": run_id, "overrides": " ".join(overrides)}
        if self.courier.call(opening) is not None:
            log.info("MLflow run %s in experiment '%s' at %s", self.run_id, self.experiment_name, self.tracking_uri)

    def attach(self, run_id: str, output_dir: Path | None = None) -> None:
        self.run_id = run_id
        self._connect(output_dir or Path.cwd())
        self._send({"op": "running"})  # again, after the workers were restarted

    def _connect(self, output_dir: Path) -> None:
        self.tracking_uri = absolute_uri(self.tracking_uri)
        self.client = open_client(self.tracking_uri)
        self.output_dir = output_dir
        header = {"op": "tracker", "tracking_uri": self.tracking_uri, "experiment": self.experiment_name}
        self.courier = Courier(
            self._deliver, self.timeout, output_dir / PENDING_FILE, lambda: {**header, "run_id": self.run_id}
        )

    def _deliver(self, record: dict[str, Any]) -> str | None:
        """Send ``record`` (in the courier's thread); the run's id."""
        self.run_id = deliver(self.client, self.run_id, record, self.output_dir)
        return self.run_id

    def _send(self, record: dict[str, Any]) -> None:
        if self.courier is None:  # never started
            return
        if self.asynchronous:
            self.courier.post(record)
        else:
            self.courier.call(record)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        timestamp = int(time.time() * 1000)
        self._send(
            {
                "op": "metrics",
                "metrics": {k: float(v) for k, v in metrics.items()},
                "step": step,
                "timestamp": timestamp,
            }
        )

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.output_dir is not None and path.is_relative_to(self.output_dir):
            path = path.relative_to(self.output_dir)  # the journal stays valid when the run directory moves
        self._send({"op": "artifact", "path": str(path), "artifact_path": artifact_path})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._send({"op": "tags", "tags": dict(tags)})

    def finish(self, status: str) -> None:
        if self.courier is None:
            return
        if self.log_checkpoint != "none":
            self._send_checkpoint()
        self.courier.post({"op": "end", "status": status, "end_time": int(time.time() * 1000)})
        if self.courier.flush():
            log.info("MLflow run %s ended %s", self.run_id, status)
            return
        kept = ", ".join(describe_kept(self.courier.kept, status))
        log.warning(
            "MLflow at %s did not take this run's records (%s): %s kept in %s; send them with `easyrec sync %s`",
            self.tracking_uri,
            self.courier.down,
            kept,
            self.courier.journal,
            self.output_dir,
        )

    def _send_checkpoint(self) -> None:
        """Log the run's ``log_checkpoint`` checkpoint (and its shards) under ``checkpoints/``, if it wrote one."""
        from easyrec.checkpoints import find_checkpoint
        from easyrec.errors import CheckpointError
        from easyrec.sharded_checkpoints import shards_directory

        try:
            path = find_checkpoint(self.output_dir, self.log_checkpoint)
        except CheckpointError:  # a run that ended before its first checkpoint
            return
        self.log_artifact(path, "checkpoints")
        if shards_directory(path).is_dir():
            self.log_artifact(shards_directory(path), f"checkpoints/{shards_directory(path).name}")

    def view_commands(self) -> list[str]:
        """MLflow's UI on the store, and ``easyrec compare`` on the experiment's runs (a sweep's: its parent's)."""
        uri = self.tracking_uri
        local = local_store(uri) is not None
        ui = shlex.join(["mlflow", "ui", "--backend-store-uri", uri]) if local else f"open {uri} (MLflow's UI)"
        store = [] if uri == absolute_uri(DEFAULT_TRACKING_URI) else ["--tracking-uri", uri]  # as a sweep's last line
        return [ui, shlex.join(["easyrec", "compare", self.parent_run_id or self.experiment_name, *store])]


def describe_kept(kept: Mapping[str, int], status: str) -> list[str]:
    """What a journal holds, in words: ``["12 sets of metrics", "its end (FINISHED)"]``."""
    words = {
        "open": "the run itself (params, config)",
        "running": "its RUNNING status",
        "end": f"its end ({status})",
        "metrics": "set{s} of metrics",
        "tags": "set{s} of tags",
        "artifact": "artifact{s}",
    }
    return [
        f"{count} {words[op].format(s='' if count == 1 else 's')}" if "{s}" in words[op] else words[op]
        for op, count in kept.items()
    ]
