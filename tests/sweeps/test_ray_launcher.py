"""``hydra/launcher=ray``: sweeps and Optuna searches on a real Ray cluster on loopback (a head started with
``ray start --head``, and a second node that dies mid-job), tracked by a real ``mlflow server``; the refusals that
come before any job; the launcher's parts."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import QUICK, copy_mlflow_store, free_port, start_mlflow_server, stop_server

ray = pytest.importorskip("ray", reason="the ray extra (pip install 'easyrec[ray]') is part of the test install")

from hydra_plugins.easyrec_launcher.ray_launcher import check_cluster, prunes, task_options  # noqa: E402

# Small enough that a job takes a few seconds in a Ray worker.
SWEEP = [*QUICK, "data.num_rows=2000", "trainer.max_steps=4", "trainer.progress_bar=false", "trainer.num_threads=1"]
RAY = Path(sys.executable).parent / "ray"


# ---------------------------------------------------------------------- a cluster on loopback


def start_node(temp_dir: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    """``ray start ARGS --block`` in a session of its own (its raylet and workers go with it); returns when the node
    is up."""
    log = temp_dir / f"node-{time.monotonic_ns()}.log"
    node = subprocess.Popen(
        [str(RAY), "start", "--block", "--disable-usage-stats", f"--temp-dir={temp_dir}", *args],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    for _ in range(240):
        if "block forever" in log.read_text():
            return node
        assert node.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
    kill_node(node)
    pytest.fail(f"ray start did not bring the node up in 2 minutes: {log.read_text()[-3000:]}")


def kill_node(node: subprocess.Popen) -> None:
    """SIGKILL to a node started by :func:`start_node` and every process of it: a machine that went down."""
    try:
        os.killpg(node.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    node.wait(timeout=30)


def processes_of(node: subprocess.Popen) -> dict[int, str]:
    """pid -> command line of every process of the node's session (its raylet, its workers)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == node.pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return found


@pytest.fixture(scope="module")
def cluster(mlflow_template: Path) -> Iterator[dict]:
    """A Ray head on 127.0.0.1 with 2 CPUs (token authentication on, as a shared cluster should have it) and an
    ``mlflow server``: ``{"address", "client" (its Ray Client address), "env", "tracking_uri", "head", "temp_dir"}``."""
    # a short path: Ray's unix sockets live under it, and a socket's path has at most 107 characters
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "COLUMNS": "200"}
    env.pop("HYDRA_FULL_ERROR", None)
    port, client_port = free_port(), free_port()
    head = start_node(
        temp_dir,
        env,
        "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--include-dashboard=false",
        # the fixed default ports, free ones instead: two clusters of two test workers must not collide
        f"--ray-client-server-port={client_port}",
        f"--dashboard-agent-listen-port={free_port()}",
    )
    copy_mlflow_store(mlflow_template, temp_dir / "tracking")
    server, ready = start_mlflow_server(temp_dir / "tracking", free_port())
    try:
        tracking_uri = ready()
        yield {
            "address": f"127.0.0.1:{port}",
            "client": f"ray://127.0.0.1:{client_port}",
            "env": env,
            "tracking_uri": tracking_uri,
            "head": head,
            "temp_dir": temp_dir,
        }
    finally:
        stop_server(server)
        kill_node(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def launch(cluster: dict, cwd: Path, *args: str, address: str | None = None) -> subprocess.Popen:
    """``easyrec train -m ARGS`` on the cluster (at ``address``, by default its GCS address), started in ``cwd``;
    stdout and stderr in ``cwd/easyrec.log``."""
    address = address or cluster["address"]
    return subprocess.Popen(
        [sys.executable, "-m", "easyrec", "train", "-m", "hydra/launcher=ray"]
        + [f"hydra.launcher.ray.init.address={address}", f"logger.tracking_uri={cluster['tracking_uri']}"]
        + list(args),
        cwd=cwd,
        env=cluster["env"],
        stdout=(cwd / "easyrec.log").open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(job: subprocess.Popen, cwd: Path, watch: subprocess.Popen | None = None) -> tuple[str, dict[int, str]]:
    """Wait for ``job`` (5 minutes at most); its log, and every process of node ``watch`` seen while it ran (a
    worker ends with the launcher that used it, so it is looked for while the jobs run)."""
    seen: dict[int, str] = {}
    deadline = time.monotonic() + 300
    while job.poll() is None and time.monotonic() < deadline:
        for pid, line in (processes_of(watch) if watch is not None else {}).items():
            if line.startswith("ray::") or pid not in seen:  # a worker's title, not an exiting one's empty line
                seen[pid] = line
        time.sleep(0.2)
    job.wait(timeout=1)
    return (cwd / "easyrec.log").read_text(), seen


def sweep_runs(cluster: dict, experiment: str) -> tuple[list, list]:
    """The parent runs and the child runs of ``experiment`` on the cluster's tracking server."""
    client = MlflowClient(cluster["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    parents = [run for run in runs if "easyrec.sweep.dir" in run.data.tags]
    return parents, [run for run in runs if run not in parents]


# ---------------------------------------------------------------------- on the cluster


@pytest.mark.slow
def test_a_grid_runs_in_ray_workers_and_fails_its_impossible_points_only(cluster, tmp_path):
    grid = ["logger.experiment_name=grid", "logger.log_checkpoint=best", "seed=1,2,3", "optimizer.lr=1e-3,-1"]
    job = launch(cluster, tmp_path, *grid, *SWEEP)
    log, head = finish(job, tmp_path, watch=cluster["head"])
    assert job.returncode == 1, log[-3000:]
    assert (
        log.strip().splitlines()[-1].startswith("easyrec train: error: 3 of 6 jobs failed: #1 (seed=1 optimizer.lr=-1)")
    )
    [parent], children = sweep_runs(cluster, "grid")
    assert parent.data.tags["easyrec.sweep.launcher"].endswith("easyrec_launcher.ray_launcher.RayLauncher")
    assert parent.info.status == "FINISHED" and parent.data.tags["easyrec.sweep.failed"] == "3"
    assert len(children) == 6
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parent.info.run_id}
    for run in children:
        if run.data.params["optimizer.lr"] == "-1":
            assert run.info.status == "FAILED"
            assert run.data.tags["easyrec.error"] == "ConfigError: optimizer.lr=-1.0: must be > 0"
        else:
            assert run.info.status == "FINISHED" and run.data.metrics["eval/auc"] > 0
            # the model came back to the tracking server, wherever the job ran
            client = MlflowClient(cluster["tracking_uri"])
            assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.pt"]
    # the jobs ran in the cluster's worker processes: not the launcher, each a process the head's raylet started
    pids = {int(run.data.tags["easyrec.pid"]) for run in children}
    assert job.pid not in pids
    reported = {int(line.split("in Ray worker ")[1].split()[0]) for line in log.splitlines() if "in Ray worker" in line}
    assert pids == reported
    assert all(head.get(pid, "").startswith("ray::") for pid in pids), {pid: head.get(pid) for pid in pids}


@pytest.mark.slow
def test_a_sweep_through_ray_client_runs_on_the_cluster(cluster, tmp_path):
    job = launch(cluster, tmp_path, "logger.experiment_name=client", "seed=1,2", *SWEEP, address=cluster["client"])
    log, _ = finish(job, tmp_path)
    assert job.returncode == 0, log[-3000:]
    [parent], children = sweep_runs(cluster, "client")
    assert sorted(run.info.status for run in children) == ["FINISHED", "FINISHED"]
    assert job.pid not in {int(run.data.tags["easyrec.pid"]) for run in children}


@pytest.mark.slow
def test_a_job_whose_node_dies_ends_failed_with_the_reason_and_the_sweep_goes_on(cluster, tmp_path):
    node = start_node(cluster["temp_dir"], cluster["env"], f"--address={cluster['address']}", "--num-cpus=1")
    # 3 jobs of one CPU on 3 CPUs: one of them runs on the second node; long enough to be killed mid-way
    long = ["data.num_rows=20000", "trainer.max_epochs=10", "trainer.progress_bar=false", "trainer.num_threads=1"]
    quick = [option for option in QUICK if not option.startswith("data.num_rows")]
    job = launch(cluster, tmp_path, "logger.experiment_name=node", "seed=1,2,3", *quick, *long)
    client = MlflowClient(cluster["tracking_uri"])
    victim = None
    try:
        for _ in range(240):  # until a job's run is open and its process is one of the second node's
            experiment = client.get_experiment_by_name("node")
            runs = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") if experiment else []
            pids = [int(run.data.tags["easyrec.pid"]) for run in runs if "easyrec.pid" in run.data.tags]
            victim = next((pid for pid in pids if pid in processes_of(node)), None)
            if victim is not None or job.poll() is not None:
                break
            time.sleep(0.5)
        assert victim, f"no job reached the second node: {(tmp_path / 'easyrec.log').read_text()[-3000:]}"
    finally:
        kill_node(node)
    log, _ = finish(job, tmp_path)
    assert job.returncode == 1, log[-3000:]
    last = log.strip().splitlines()[-1]
    assert last.startswith("easyrec train: error: 1 of 3 jobs failed: #") and "lost on the Ray cluster" in last
    [parent], children = sweep_runs(cluster, "node")
    [lost] = [run for run in children if run.info.status == "FAILED"]
    assert int(lost.data.tags["easyrec.pid"]) == victim  # the job that ran on the node that died
    assert lost.data.tags["easyrec.error"].startswith("lost on the Ray cluster: ")
    assert sorted(run.info.status for run in children) == ["FAILED", "FINISHED", "FINISHED"]
    assert parent.info.status == "FINISHED" and parent.data.tags["easyrec.sweep.failed"] == "1"


@pytest.mark.slow
def test_ctrl_c_cancels_the_jobs_on_the_cluster_and_ends_their_runs_killed(cluster, tmp_path):
    long = ["data.num_rows=20000", "trainer.max_epochs=20", "trainer.progress_bar=false", "trainer.num_threads=1"]
    quick = [option for option in QUICK if not option.startswith("data.num_rows")]
    job = launch(cluster, tmp_path, "logger.experiment_name=stopped", "seed=1,2,3", *quick, *long)
    client = MlflowClient(cluster["tracking_uri"])
    for _ in range(240):  # until two jobs train (2 CPUs: the third waits)
        experiment = client.get_experiment_by_name("stopped")
        runs = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") if experiment else []
        if len([run for run in runs if "easyrec.sweep.dir" not in run.data.tags]) == 2 or job.poll() is not None:
            break
        time.sleep(0.5)
    job.send_signal(signal.SIGINT)
    log, _ = finish(job, tmp_path)
    assert job.returncode == 130, log[-3000:]
    assert "cancelled 3 jobs on the cluster" in log
    [parent], children = sweep_runs(cluster, "stopped")
    assert parent.info.status == "KILLED"
    assert [run.info.status for run in children] == ["KILLED", "KILLED"]
    assert {run.data.tags["easyrec.error"] for run in children} == {"cancelled: the sweep was interrupted"}
    time.sleep(3)
    assert not [line for line in processes_of(cluster["head"]).values() if "run_in_worker" in line]


@pytest.mark.slow
def test_an_optuna_search_runs_two_trials_at_a_time_prunes_through_a_study_server_and_resumes(cluster, tmp_path):
    import optuna

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "easyrec", "study-server", "--port", str(port)],
        cwd=tmp_path,
        stdout=(tmp_path / "study-server.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    search = [
        "hparams_search=optuna",
        "logger.experiment_name=search",
        f"hydra.sweeper.storage=grpc://127.0.0.1:{port}",
    ]
    search += ["hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "trainer.eval_every_n_steps=1", *SWEEP]
    try:
        for attempt in (1, 2):  # the second command resumes the study: 4 more trials
            job = launch(cluster, tmp_path, *search)
            log, _ = finish(job, tmp_path)
            assert job.returncode == 0, log[-3000:]
            assert f"{4 * (attempt - 1)} trials so far, adding 4" in log
    finally:
        stop_server(server)
    study = optuna.load_study(study_name="deepfm", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [trial.number for trial in study.trials] == list(range(8))
    assert all(trial.state.name in ("COMPLETE", "PRUNED") for trial in study.trials)
    parents, children = sweep_runs(cluster, "search")
    assert len(parents) == 2 and len(children) == 8
    assert job.pid not in {int(run.data.tags["easyrec.pid"]) for run in children}
    # two at a time: the two trials of each batch ran at once
    by_trial = {int(run.info.run_name.split()[0][1:]): run.info for run in children}
    for first in range(0, 8, 2):
        one, two = by_trial[first], by_trial[first + 1]
        assert one.start_time < two.end_time and two.start_time < one.end_time


# ---------------------------------------------------------------------- refused before any job


@pytest.mark.slow
def test_a_cluster_with_a_local_tracking_store_or_study_file_is_refused_in_one_line(easyrec_cli, tmp_path):
    cluster = ["-m", "hydra/launcher=ray", "hydra.launcher.ray.init.address=10.0.0.1:6379", "seed=1,2"]
    done = easyrec_cli("train", *cluster)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "easyrec train: error: logger.tracking_uri=sqlite:///mlflow.db: a local store that the jobs on other nodes of "
        "the Ray cluster (hydra.launcher.ray.init.address=10.0.0.1:6379) cannot reach; start a tracking server "
        "(mlflow server --host 0.0.0.0 --backend-store-uri ...) and give logger.tracking_uri=http://HOST:5000"
    ]
    done = easyrec_cli("train", "hparams_search=optuna", *cluster[1:3], "logger.tracking_uri=http://10.0.0.1:5000")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("easyrec train: error: hydra.sweeper.storage=sqlite:///optuna.db: a local file that ")
    assert "easyrec study-server" in line
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()


# ---------------------------------------------------------------------- parts


def test_each_job_asks_for_its_trainer_threads_unless_the_task_options_say_otherwise():
    remote = OmegaConf.create({"num_cpus": None, "max_retries": 0})
    job = OmegaConf.create({"trainer": {"num_threads": 4}})
    assert task_options(remote, job) == {"num_cpus": 4, "max_retries": 0}
    assert task_options(remote, OmegaConf.create({"trainer": {"num_threads": None}}))["num_cpus"] == 1
    remote.num_cpus = 2
    assert task_options(remote, job)["num_cpus"] == 2


def test_a_search_prunes_when_a_rule_of_its_early_stopping_reports_to_the_trial():
    prune = {"_target_": "easyrec.early_stopping.PruneTrial", "monitor": "eval/auc"}
    assert prunes(OmegaConf.create(prune))
    assert prunes(OmegaConf.create({"_target_": "easyrec.early_stopping.AnyOf", "rules": {"a": prune}}))
    assert not prunes(OmegaConf.create({"_target_": "easyrec.early_stopping.StopOnPlateau"}))
    assert not prunes(None)


def test_a_private_cluster_takes_any_store_and_a_bad_study_server_url_is_refused(monkeypatch):
    from easyrec.early_stopping.prune_trial import study_storage
    from easyrec.errors import ConfigError

    connected = []
    monkeypatch.setattr(
        "hydra_plugins.easyrec_launcher.ray_launcher.connect", lambda init: connected.append(init) or ray
    )
    launcher = {"ray": {"init": {"address": None}, "remote": {"num_cpus": None}}}
    config = OmegaConf.create({"hydra": {"launcher": launcher}, "logger": {"tracking_uri": "sqlite:///m.db"}})
    check_cluster(config)  # a private cluster runs on this machine only
    assert len(connected) == 1
    # a task option Ray does not take is refused before the sweep, not when its first job is submitted
    config.hydra.launcher.ray.remote.num_cpu = 2
    with pytest.raises(ConfigError, match=r"^hydra.launcher.ray.remote: Invalid option keyword num_cpu for remote"):
        check_cluster(config)
    with pytest.raises(ConfigError, match="a study server's URL is grpc://HOST:PORT"):
        study_storage("grpc://no-port")
    with pytest.raises(ConfigError, match="no study server answers in 0.5 s"):
        study_storage(f"grpc://127.0.0.1:{free_port()}", timeout=0.5)


def test_without_the_ray_extra_the_launcher_names_it(monkeypatch):
    from easyrec.errors import ConfigError
    from hydra_plugins.easyrec_launcher.ray_launcher import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"^hydra/launcher=ray: ray is not installed: pip install 'easyrec\[ray\]'$"):
        require_ray()
