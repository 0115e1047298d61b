"""Sweeps (``easyrec train -m``): a parent MLflow run with nested children, failing jobs, parallel jobs on SQLite."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from easyrec.loggers.retry import LockRetryingClient, is_locked, retry_locked
from easyrec.sweeps.jobs import SWEPT_KEYS_ENV, sweep_run_name
from tests.conftest import QUICK

# Small enough that a job takes about a second in the sweep's process.
SWEEP = [*QUICK, "data.num_rows=2000", "trainer.max_steps=4", "trainer.progress_bar=false", "trainer.num_threads=1"]


def all_runs(root: Path) -> tuple[object, list[object]]:
    """The parent run and the child runs of the one sweep in ``root``'s store."""
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("easyrec").experiment_id])
    [parent] = [run for run in runs if "easyrec.sweep.dir" in run.data.tags]
    children = [run for run in runs if run is not parent]
    assert all(run.data.tags["mlflow.parentRunId"] == parent.info.run_id for run in children)
    return parent, children


def final_auc(run) -> float:
    return run.data.metrics.get("best/eval/auc", run.data.metrics["eval/auc"])


# ---------------------------------------------------------------------- units


def test_sweep_run_names_show_the_swept_values(monkeypatch):
    monkeypatch.setenv(SWEPT_KEYS_ENV, "optimizer,optimizer.lr")
    overrides = ["data.num_rows=6000", "optimizer=adam", "optimizer.lr=0.1", "optimizer.lr=0.000123456"]
    assert sweep_run_name(overrides, 3) == "#3 optimizer=adam,optimizer.lr=0.0001235"


def test_locked_calls_are_retried_and_other_errors_raised():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "done"

    assert retry_locked(flaky) == "done" and len(calls) == 3
    with pytest.raises(ValueError):
        retry_locked(lambda: (_ for _ in ()).throw(ValueError("bad")))
    assert is_locked(RuntimeError("x")) is False


@pytest.mark.slow
def test_a_store_locked_by_another_process_loses_no_write(tmp_path):
    """A writer holding SQLite's lock longer than its 5 s busy timeout: MLflow raises "database is locked", the
    retrying client waits it out."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = LockRetryingClient(MlflowClient(uri))
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    locked = threading.Event()

    def hold_lock():
        connection = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(6)
        connection.execute("COMMIT")
        connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    locked.wait()
    client.log_metric(run_id, "eval/auc", 0.7, step=1)
    holder.join()
    assert [m.value for m in MlflowClient(uri).get_metric_history(run_id, "eval/auc")] == [0.7]


# ---------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_2x2_sweep_nests_four_children_under_one_parent_with_the_best_child(
    easyrec_main, tmp_path, monkeypatch, mlflow_store
):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = easyrec_main("train", "-m", "optimizer=adam,adagrad", "loss=bce,focal", *SWEEP)
    assert code == 0, stderr
    parent, children = all_runs(tmp_path)
    assert len(children) == 4
    assert {run.info.status for run in children} == {"FINISHED"}
    assert parent.info.status == "FINISHED"
    pairs = {(run.data.params["optimizer"], run.data.params["loss"]) for run in children}
    assert pairs == {
        ("torch.optim.Adam", "easyrec.losses.BinaryCrossEntropy"),
        ("torch.optim.Adam", "easyrec.losses.BinaryFocalLoss"),
        ("torch.optim.Adagrad", "easyrec.losses.BinaryCrossEntropy"),
        ("torch.optim.Adagrad", "easyrec.losses.BinaryFocalLoss"),
    }
    names = {run.info.run_name for run in children}
    assert names == {
        "#0 optimizer=adam,loss=bce",
        "#1 optimizer=adam,loss=focal",
        "#2 optimizer=adagrad,loss=bce",
        "#3 optimizer=adagrad,loss=focal",
    }
    assert all("optimizer=" in run.data.tags["easyrec.overrides"] for run in children)
    best = max(children, key=final_auc)
    tags = parent.data.tags
    assert tags["easyrec.sweep.best_run_id"] == best.info.run_id
    assert tags["easyrec.sweep.best_run_name"] == best.info.run_name
    assert (tags["easyrec.sweep.jobs"], tags["easyrec.sweep.failed"]) == ("4", "0")
    assert tags["easyrec.sweep.overrides"].startswith("optimizer=adam,adagrad loss=bce,focal")
    assert tags["easyrec.sweep.sweeper"].endswith("BasicSweeper")
    assert parent.data.metrics["best/eval/auc"] == pytest.approx(final_auc(best))
    # the sweep ends naming its best child and the command to compare the children
    assert f"best of 4 jobs: {best.info.run_name} (eval/auc {final_auc(best):.5f}) in " in stdout
    assert stdout.rstrip().endswith(f"compare the runs: easyrec compare {parent.info.run_id}")
    # which shows each child's options, as the runs recorded them
    code, table, _ = easyrec_main("compare", parent.info.run_id)
    assert code == 0 and "torch.optim" not in table
    for run in children:
        assert json.loads(run.data.tags["easyrec.choices"])["optimizer"] in run.info.run_name
        assert run.info.run_name in table


@pytest.mark.slow
def test_one_failing_point_fails_its_child_only_and_the_exit_code(easyrec_main, tmp_path, monkeypatch, mlflow_store):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = easyrec_main("train", "-m", "optimizer.lr=0.01,-1,0.1", *SWEEP)
    assert code == 1
    lines = [line for line in stderr.splitlines() if line.startswith("easyrec train: error:")]
    assert lines == ["easyrec train: error: 1 of 3 jobs failed: #1 (optimizer.lr=-1): optimizer.lr=-1.0: must be > 0"]
    parent, children = all_runs(tmp_path)
    status = {run.data.params["optimizer.lr"]: run.info.status for run in children}
    assert status == {"0.01": "FINISHED", "-1": "FAILED", "0.1": "FINISHED"}
    [failed] = [run for run in children if run.info.status == "FAILED"]
    assert failed.data.tags["easyrec.error"] == "ConfigError: optimizer.lr=-1.0: must be > 0"
    assert parent.info.status == "FINISHED"
    assert (parent.data.tags["easyrec.sweep.jobs"], parent.data.tags["easyrec.sweep.failed"]) == ("3", "1")
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "outputs").rglob("sweep_job.json"))]
    assert [r["status"] for r in sorted(results, key=lambda r: r["job"])] == ["FINISHED", "FAILED", "FINISHED"]


@pytest.mark.slow
def test_a_job_failing_after_its_run_opened_has_that_one_run(easyrec_main, tmp_path, monkeypatch, mlflow_store):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = easyrec_main("train", "-m", "optimized_metric=eval/auc,eval/nope", *SWEEP)
    assert code == 1
    assert "1 of 2 jobs failed: #1 (optimized_metric=eval/nope): trainer.monitor=eval/nope: no such metric" in stderr
    _, children = all_runs(tmp_path)  # train() ended the failed job's run; no second run was made for it
    assert sorted(run.info.status for run in children) == ["FAILED", "FINISHED"]
    [failed] = [run for run in children if run.info.status == "FAILED"]
    assert failed.data.tags["easyrec.error"].startswith("ConfigError: trainer.monitor=eval/nope: no such metric")


@pytest.mark.slow
@pytest.mark.parametrize(
    "sweep,message",
    [
        (["optimizer.lrr=0.1,0.2"], "optimizer.lrr: no such key (to add a new key, write +optimizer.lrr=...)"),
        (["optimizer=adam,nope"], "unknown option 'nope' for 'optimizer'; choose one of: adagrad, adam,"),
    ],
)
def test_a_sweep_that_cannot_compose_starts_nothing(easyrec_main, tmp_path, monkeypatch, sweep, message):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = easyrec_main("train", "-m", *sweep, *SWEEP)
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"easyrec train: error: {message}")
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_parallel_jobs_on_one_sqlite_store_lose_no_run_or_metric(easyrec_cli, tmp_path, mlflow_store):
    # 8 steps (an epoch of 1800 rows), each logged, an evaluation every 2
    every_step = ["trainer.max_steps=8", "trainer.log_every_n_steps=1", "trainer.eval_every_n_steps=2"]
    done = easyrec_cli(
        "train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2,3", *SWEEP, *every_step
    )
    assert done.returncode == 0, done.stderr[-3000:]
    parent, children = all_runs(tmp_path)
    assert parent.data.tags["easyrec.sweep.launcher"].endswith("JoblibLauncher")
    assert sorted(run.data.params["seed"] for run in children) == ["1", "2", "3"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for run in children:
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(steps) == list(range(1, 9))
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "eval/auc")) == [2, 4, 6, 8]
