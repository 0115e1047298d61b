"""Killed and resumed runs of the real ``easyrec train``: SIGKILL, SIGTERM, and a changed config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from easyrec.checkpoints import Checkpoints, load_checkpoint
from easyrec.errors import CheckpointError, ConfigError
from easyrec.run import train
from tests.conftest import copy_mlflow_store

pytestmark = pytest.mark.slow

# 72 steps: long enough to be killed after the first checkpoints and to resume across an epoch, short enough for CI
ARGS = [
    "data.num_rows=10000",
    "data.batch_size=256",
    "model.hidden_units=[64]",
    "model.embedding_dim=8",
    "model.dropout=0.1",
    "trainer.max_epochs=2",
    "trainer.eval_every_n_steps=25",
    "trainer.checkpoint_every_n_steps=10",
    "trainer.progress_bar=false",
    # one thread: the comparisons below are exact, and a loaded machine (pytest-xdist) must not change how
    # the matrix products split their sums
    "trainer.num_threads=1",
]


def start(directory: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable, "-m", "easyrec", "train", *ARGS, f"hydra.run.dir={run_dir}", *extra]
    return subprocess.Popen(
        command, cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    return output


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen, timeout: float = 120) -> Path:
    checkpoints = Checkpoints(run_dir / "checkpoints")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = checkpoints.latest()
        if latest is not None:
            return latest
        assert process.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def runs(directory: Path) -> list:
    client = MlflowClient(f"sqlite:///{directory}/mlflow.db")
    experiment = client.get_experiment_by_name("easyrec")
    return client.search_runs([experiment.experiment_id], order_by=["start_time"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mlflow_template) -> dict[str, float]:
    directory = tmp_path_factory.mktemp("whole")
    copy_mlflow_store(mlflow_template, directory)
    output = finish(start(directory, directory / "run"))
    state = load_checkpoint(directory / "run")
    assert state["step"] == 72, output  # 2 epochs of 36 batches
    return state["metrics"]


def test_sigkill_then_resume_gives_the_uninterrupted_result(mlflow_store, tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    process = start(tmp_path, run_dir)
    wait_for_checkpoint(run_dir, process)
    process.kill()  # SIGKILL: no handler, no goodbye
    finish(process)
    killed_at = load_checkpoint(run_dir)["step"]
    assert 10 <= killed_at < 72
    output = finish(start(tmp_path, run_dir, "trainer.resume=true"))
    assert f"resumed from {run_dir}/checkpoints/step-{killed_at:09d}.pt at step {killed_at}" in output, output
    final = load_checkpoint(run_dir)
    assert final["step"] == 72 and final["metrics"] == uninterrupted
    [run] = runs(tmp_path)  # one MLflow run, continued
    assert run.info.status == "FINISHED" and run.data.tags["easyrec.resumes"] == "1"
    assert run.data.metrics["eval/auc"] == pytest.approx(uninterrupted["eval/auc"])


def test_sigterm_saves_a_checkpoint_ends_the_run_killed_and_resumes(mlflow_store, tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    process = start(tmp_path, run_dir)
    wait_for_checkpoint(run_dir, process)
    process.send_signal(signal.SIGTERM)
    output = finish(process)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "SIGTERM received: stopping after this step" in output and "easyrec: interrupted by SIGTERM" in output
    stopped = load_checkpoint(run_dir)
    assert f"SIGTERM: stopped at step {stopped['step']}; resume with trainer.resume=true" in output
    [run] = runs(tmp_path)
    assert run.info.status == "KILLED"
    resumed = start(tmp_path, run_dir, "trainer.resume=true")
    output = finish(resumed)
    assert resumed.returncode == 0, output
    assert load_checkpoint(run_dir)["metrics"] == uninterrupted
    [run] = runs(tmp_path)
    assert run.info.status == "FINISHED"


def test_a_resume_with_a_changed_model_is_refused_and_writes_nothing(
    compose_train, mlflow_store, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    small = ["data.num_rows=6000", "model.embedding_dim=8", "trainer.progress_bar=false"]
    train(compose_train(*small), tmp_path / "run")
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    with pytest.raises(ConfigError) as info:
        train(compose_train(*small, "trainer.resume=true", "model.embedding_dim=16"), tmp_path / "run")
    message = str(info.value)
    assert message.startswith("trainer.resume: this config differs from the checkpoint's")
    assert "model.embedding_dim (8 -> 16)" in message and "use trainer.init_from=" in message
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before
    assert [run.info.status for run in runs(tmp_path)] == ["FINISHED"]  # no second run was opened


def test_resume_without_a_checkpoint_is_a_clear_error(compose_train, tmp_path):
    with pytest.raises(CheckpointError, match="trainer.resume=true: .* has no checkpoint to resume"):
        train(compose_train("logger=none", "trainer.resume=true"), tmp_path)
