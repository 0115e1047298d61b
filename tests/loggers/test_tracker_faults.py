"""A tracker that goes away: the run finishes and keeps its record (metrics.json, tracking-pending.jsonl), waits
for the tracker at most logger.timeout, and `easyrec sync` delivers the rest later, once. Parallel jobs creating
one SQLite store take turns."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from easyrec.commands.sync import sync
from easyrec.config import validate
from easyrec.errors import ConfigError, EasyrecError
from easyrec.loggers import MLflowLogger
from easyrec.loggers.courier import PENDING_FILE, SYNCED_FILE, Courier, read_journal
from easyrec.loggers.mlflow import deliver
from tests.conftest import QUICK, free_port, start_mlflow_server, stop_server

REPOSITORY = Path(__file__).resolve().parents[2]


def journal(path: Path) -> list[dict]:
    return [record for _, record in read_journal(path)]


# ---------------------------------------------------------------------- Courier


def test_a_courier_sends_in_order_and_waits_for_what_it_is_asked_to(tmp_path):
    sent = []
    courier = Courier(lambda record: sent.append(record["n"]) or record["n"] * 10, 30.0, tmp_path / "pending.jsonl")
    for n in range(5):
        courier.post({"op": "x", "n": n})
    assert courier.call({"op": "x", "n": 5}) == 50
    assert courier.flush()
    assert sent == [0, 1, 2, 3, 4, 5]
    assert courier.down is None and not (tmp_path / "pending.jsonl").exists()


def test_a_tracker_that_does_not_answer_is_waited_for_once_then_everything_is_journaled(tmp_path):
    release, calls = threading.Event(), []

    def hang(record):
        calls.append(record["n"])
        release.wait()  # a server that accepted the connection and never answers

    path = tmp_path / "pending.jsonl"
    courier = Courier(hang, 0.2, path, lambda: {"op": "tracker", "run_id": "abc"})
    courier.post({"op": "metrics", "n": 0})
    courier.post({"op": "metrics", "n": 1})
    assert courier.call({"op": "tags", "n": 2}) is None  # given up on
    assert courier.down == "no answer in 0.2 s"
    courier.post({"op": "end", "n": 3})
    assert not courier.flush()
    release.set()
    assert calls == [0]  # the tracker is not called again
    assert journal(path) == [
        {"op": "tracker", "run_id": "abc"},
        {"op": "metrics", "n": 0},
        {"op": "metrics", "n": 1},
        {"op": "tags", "n": 2},
        {"op": "end", "n": 3},
    ]
    assert courier.kept == {"metrics": 2, "tags": 1, "end": 1}


def test_a_tracker_that_fails_is_not_called_again(tmp_path):
    calls = []

    def fail(record):
        calls.append(record["n"])
        raise ConnectionError("connection refused\nmore details")

    path = tmp_path / "pending.jsonl"
    courier = Courier(fail, 30.0, path, lambda: {"op": "tracker"})
    courier.post({"op": "metrics", "n": 0})
    assert not courier.flush()
    courier.post({"op": "metrics", "n": 1})
    assert calls == [0]
    assert courier.down == "ConnectionError: connection refused"
    assert [record.get("n") for record in journal(path)] == [None, 0, 1]


# ---------------------------------------------------------------------- MLflowLogger and easyrec sync


def test_a_logger_whose_tracker_is_unreachable_keeps_everything_and_sync_delivers_it_once(
    tmp_path, mlflow_store, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)  # the store's artifacts go to ./mlruns
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- optimizer=adam\n")
    (run_dir / "train.log").write_text("hello\n")
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    logger = MLflowLogger(tracking_uri=nobody, experiment_name="tests", timeout=0.5)
    with caplog.at_level(logging.INFO, logger="easyrec"):
        logger.start({"seed": 0, "optimizer": {"lr": 0.1}}, ["optimizer=adam"], run_dir)
        logger.log_metrics({"train/loss": 0.7}, step=1)
        logger.log_metrics({"train/loss": 0.5, "eval/auc": 0.75}, step=2)
        logger.set_tags({"easyrec.best_step": "2"})
        logger.log_artifact(run_dir / "train.log")
        logger.finish("FINISHED")
    assert logger.run_id is None
    ours = [r for r in caplog.records if r.name.startswith("easyrec")]  # urllib3 says it retries: the CLI hides that
    [warning] = [r.getMessage() for r in ours if r.levelno >= logging.WARNING]
    assert f"MLflow at {nobody} did not take this run's records" in warning
    assert "2 sets of metrics" in warning and "its end (FINISHED)" in warning
    assert f"easyrec sync {run_dir}" in warning
    records = journal(run_dir / PENDING_FILE)
    assert [r["op"] for r in records] == ["tracker", "open", "metrics", "metrics", "tags", "artifact", "end"]
    assert records[0] == {"op": "tracker", "tracking_uri": nobody, "experiment": "tests", "run_id": None}

    assert sync(run_dir, tracking_uri=mlflow_store) == 6
    assert not (run_dir / PENDING_FILE).exists() and (run_dir / SYNCED_FILE).is_file()
    client = MlflowClient(mlflow_store)
    [run] = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "optimizer=adam"
    assert run.data.params == {"seed": "0", "optimizer.lr": "0.1"}
    assert run.data.tags["easyrec.best_step"] == "2"
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")) == [
        (1, 0.7),
        (2, 0.5),
    ]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"config", "hydra", "train.log"}
    assert sync(run_dir, tracking_uri=mlflow_store) == 0  # nothing left to send


def test_sync_resumes_where_it_stopped_without_sending_a_record_twice(tmp_path, mlflow_store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    nobody = f"http://127.0.0.1:{free_port()}"
    logger = MLflowLogger(tracking_uri=nobody, experiment_name="tests", timeout=0.5)
    logger.start({"seed": 0}, [], run_dir)
    logger.log_metrics({"train/loss": 0.7}, step=1)
    logger.log_metrics({"train/loss": 0.6}, step=2)
    logger.finish("KILLED")
    pending = run_dir / PENDING_FILE
    lines = pending.read_text().splitlines()
    # a first sync that stopped after the run and its first metrics were sent: it marked those lines sent
    client = MlflowClient(mlflow_store)
    run_id = deliver(client, None, json.loads(lines[1]), run_dir)
    deliver(client, run_id, json.loads(lines[2]), run_dir)
    marks = [{"op": "sent", "line": 2, "run_id": run_id}, {"op": "sent", "line": 3, "run_id": run_id}]
    pending.write_text("\n".join([*lines, *map(json.dumps, marks)]) + "\n")

    assert sync(run_dir, tracking_uri=mlflow_store) == 2  # the second metrics, the end
    [run] = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.run_id == run_id and run.info.status == "KILLED"
    assert sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")) == [(1, 0.7), (2, 0.6)]


def test_sync_refuses_a_journal_that_names_a_file_outside_the_run(tmp_path, mlflow_store):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    records = [
        {"op": "tracker", "tracking_uri": mlflow_store, "run_id": None},
        {"op": "open", "experiment": "tests", "run_name": "r", "tags": {}, "params": {}, "config": {}},
        {"op": "artifact", "path": "../../etc/passwd", "artifact_path": None},
    ]
    (run_dir / PENDING_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(EasyrecError, match=r"line 3: .*outside the run directory"):
        sync(run_dir)
    assert (run_dir / PENDING_FILE).is_file()  # kept, with the first record marked sent


def test_sync_errors_are_one_line(easyrec_main, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = easyrec_main("sync", tmp_path / "nowhere")
    assert (code, err.strip()) == (1, f"easyrec sync: error: {tmp_path / 'nowhere'}: no such run directory")
    (tmp_path / PENDING_FILE).write_text('{"op": "tracker", "tracking_uri": "sqlite:///x.db"}\nnot json\n')
    code, _, err = easyrec_main("sync", tmp_path)
    assert code == 1 and err.startswith(f"easyrec sync: error: {tmp_path / PENDING_FILE}, line 2: not JSON")
    assert len(err.strip().splitlines()) == 1
    code, _, err = easyrec_main("sync", tmp_path, "--timeout", "0")
    assert code == 2 and "--timeout" in err
    (tmp_path / PENDING_FILE).write_text(json.dumps({"op": "tracker", "tracking_uri": "sqlite:///gone.db"}) + "\n")
    code, _, err = easyrec_main("sync", tmp_path)
    assert code == 1 and "line 1: no MLflow store sqlite:///gone.db" in err
    assert not (tmp_path / "gone.db").exists()


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_logger_timeout_must_be_positive_and_finite(compose_train, value):
    with pytest.raises(ConfigError, match="logger.timeout"):
        validate(compose_train(f"logger.timeout={value}"))


# ---------------------------------------------------------------------- a real tracking server, killed


def start(directory: Path, port: int) -> subprocess.Popen:
    """A real ``mlflow server`` over ``directory/mlflow.db``, answering when this returns."""
    server, ready = start_mlflow_server(directory, port)
    ready()
    return server


@pytest.mark.slow
def test_a_run_whose_tracking_server_dies_finishes_and_sync_delivers_the_rest(tmp_path, mlflow_store, easyrec_main):
    port = free_port()
    server = start(tmp_path, port)
    try:
        # the train process kills the server itself at its step-4 evaluation: mid-run, after the run was opened
        fault = ["early_stopping=custom", "early_stopping.fn=tests.faults.kill_server", "~early_stopping.params"]
        fault += [f"+early_stopping.params={{at_step:4,pgid:{server.pid}}}", "trainer.eval_every_n_steps=4"]
        command = [sys.executable, "-m", "easyrec", "train", *QUICK, *fault, "trainer.max_steps=8"]
        command += [f"logger.tracking_uri=http://127.0.0.1:{port}", "hydra.run.dir=run"]
        # MLflow retries a refused connection for minutes, which logger.timeout (30 s) would cut: no retries here,
        # so the dead server is found at once (the wait itself is tested above)
        env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPOSITORY), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
        env.pop("HYDRA_FULL_ERROR", None)
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        stop_server(server)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.count("WARNING") == 1, done.stderr[-3000:]
    assert "did not take this run's records" in done.stderr and "easyrec sync" in done.stderr
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "metrics.json").read_text())["step"] == 8
    assert (run_dir / "checkpoints").is_dir()
    kept = journal(run_dir / PENDING_FILE)
    assert kept[0]["run_id"] is not None and kept[-1]["op"] == "end" and kept[-1]["status"] == "FINISHED"
    client = MlflowClient(mlflow_store)
    run = client.get_run(kept[0]["run_id"])
    assert run.info.status == "RUNNING"  # what the server had when it died

    server = start(tmp_path, port)  # the same store, the same address: the journal names it
    try:
        code, out, err = easyrec_main("sync", run_dir)
        assert code == 0, err
        assert "sent" in out
        code, out, err = easyrec_main("sync", run_dir)
        assert code == 0, err
        assert "nothing to send" in out
    finally:
        stop_server(server)
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["train/steps"] == 8
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/steps")] == [8]
    assert {m.step for m in client.get_metric_history(run.info.run_id, "eval/auc")} >= {4, 8}


# ---------------------------------------------------------------------- parallel jobs, one new SQLite store

OPEN_AND_LOG = """
import sys, time
from pathlib import Path
from easyrec.loggers import MLflowLogger
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
logger = MLflowLogger(experiment_name="race", asynchronous=False)
ready.touch()
while not go.exists():
    time.sleep(0.01)
logger.start({"seed": 0}, [], Path.cwd())
logger.log_metrics({"train/loss": 0.5}, step=1)
logger.finish("FINISHED")
"""


@pytest.mark.slow
def test_four_jobs_starting_at_once_in_an_empty_folder_share_one_new_store(tmp_path):
    go = tmp_path / "go"
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AND_LOG, str(tmp_path / f"ready-{i}"), str(go)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    while not all((tmp_path / f"ready-{i}").exists() for i in range(4)):
        assert all(job.poll() is None for job in jobs), [job.communicate() for job in jobs]
        time.sleep(0.05)
    go.touch()  # all four open sqlite:///mlflow.db, which does not exist yet, at once
    results = [job.communicate(timeout=300) for job in jobs]
    assert [job.returncode for job in jobs] == [0] * 4, [err[-2000:] for _, err in results]
    assert not any("did not take" in err or "Traceback" in err for _, err in results), results
    assert not (tmp_path / PENDING_FILE).exists()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(run.info.status for run in runs) == ["FINISHED"] * 4
