"""Distributed training end to end: real gloo workers on this CPU, started by ``easyrec train distributed=ddp``
(torch's elastic agent), by two launchers on loopback "machines", and by an outside ``torchrun``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from easyrec.checkpoints import load_checkpoint
from easyrec.saved_run import SavedRun
from tests.conftest import QUICK

pytestmark = pytest.mark.slow

# 5,400 train rows: 11 steps of 2 workers x 256 rows; 600 eval rows in 5 eval batches of 128
SMALL = [*QUICK, "data.eval_batch_size=128", "trainer.progress_bar=false"]
DDP = ["distributed=ddp", "distributed.nproc_per_node=2"]


def store(root: Path) -> str:
    return f"sqlite:///{root}/mlflow.db"


def runs(root: Path) -> list:
    client = MlflowClient(store(root))
    experiment = client.get_experiment_by_name("easyrec")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def history(root: Path, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in MlflowClient(store(root)).get_metric_history(run_id, key)}


def environment() -> dict[str, str]:
    """The subprocess environment: workers import tests.faults from the repository."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(Path(__file__).parents[2])}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_workers_match_one_with_twice_the_batch_and_resume_with_one_worker_accumulating(
    easyrec_main, tmp_path, stores
):
    """2 workers x 128 rows (sparse embedding gradients under DDP, gloo, with embedding and kernel regularization:
    per row and per step) train to a
    FINISHED run whose eval metrics are those of the whole eval split, with the losses and penalties of 1 worker x
    256 rows step by step; their checkpoint resumes with 1 worker accumulating 2 x 128 rows, and goes on alike."""
    common = [*SMALL, "model.sparse_embeddings=true", "optimizer=adagrad", "trainer.max_steps=6"]
    common += ["model.embedding_regularization=1e-3", "model.l2_regularization=1e-3"]
    common += ["trainer.log_every_n_steps=1", "trainer.checkpoint_every_n_steps=3"]
    two_dir, one_dir, resumed_dir = tmp_path / "two", tmp_path / "one", tmp_path / "resumed"
    stores(two_dir, one_dir, resumed_dir)
    two = ["data.batch_size=128", *DDP, f"logger.tracking_uri={store(two_dir)}", f"hydra.run.dir={two_dir}"]
    code, _, err = easyrec_main("train", *common, *two)
    assert code == 0, err
    [two_run] = runs(two_dir)
    assert two_run.info.status == "FINISHED" and two_run.data.params["distributed"] == "easyrec.distributed.DDP"
    assert two_run.data.metrics["train/steps"] == 6
    # one run directory: Hydra's files and train.log from the main worker, the other's log beside them
    files = sorted(p.name for p in two_dir.iterdir() if p.name != "mlflow.db")
    assert files == [".easyrec.lock", ".hydra", "checkpoints", "metrics.json", "rank-1.log", "train.log"]
    assert "training for 6 steps" in (two_dir / "rank-1.log").read_text()
    # the logged metrics are those of the whole eval split: one process evaluating the same weights agrees
    state = load_checkpoint(two_dir, "latest")
    alone = SavedRun.load(two_dir, which="latest").evaluate()
    assert alone == pytest.approx(state["metrics"], abs=1e-6)
    assert two_run.data.metrics["eval/auc"] == pytest.approx(alone["eval/auc"], abs=1e-6)

    one = ["data.batch_size=256", f"logger.tracking_uri={store(one_dir)}", f"hydra.run.dir={one_dir}"]
    code, _, err = easyrec_main("train", *common, *one)
    assert code == 0, err
    checkpoint = two_dir / "checkpoints" / "step-000000003.pt"
    resumed = ["data.batch_size=128", "distributed.accumulate_steps=2", f"trainer.resume={checkpoint}"]
    resumed += [f"logger.tracking_uri={store(resumed_dir)}", f"hydra.run.dir={resumed_dir}"]
    code, _, err = easyrec_main("train", *common, *resumed)
    assert code == 0, err
    [one_run], [resumed_run] = runs(one_dir), runs(resumed_dir)
    two_losses = history(two_dir, two_run.info.run_id, "train/loss")
    one_losses = history(one_dir, one_run.info.run_id, "train/loss")
    resumed_losses = history(resumed_dir, resumed_run.info.run_id, "train/loss")
    assert sorted(two_losses) == sorted(one_losses) == [1, 2, 3, 4, 5, 6]
    assert [two_losses[s] for s in range(1, 7)] == pytest.approx([one_losses[s] for s in range(1, 7)], rel=1e-5)
    two_penalties = history(two_dir, two_run.info.run_id, "train/regularization")
    one_penalties = history(one_dir, one_run.info.run_id, "train/regularization")
    assert [two_penalties[s] for s in range(1, 7)] == pytest.approx([one_penalties[s] for s in range(1, 7)], rel=1e-5)
    assert sorted(resumed_losses) == [4, 5, 6]
    assert [resumed_losses[s] for s in (4, 5, 6)] == pytest.approx([two_losses[s] for s in (4, 5, 6)], rel=1e-5)
    assert resumed_run.data.metrics["eval/auc"] == pytest.approx(two_run.data.metrics["eval/auc"], abs=1e-5)


def test_a_killed_worker_restarts_the_job_from_its_checkpoint_into_the_same_run(tmp_path, stores):
    """Worker 1 dies (SIGKILL) at step 8 of 11; with max_restarts=1 the agent restarts both workers, which resume
    from the step-4 checkpoint and finish: one MLflow run, FINISHED, all 11 steps."""
    stores(tmp_path)
    fault = ["early_stopping=custom", "early_stopping.fn=tests.faults.die_once"]
    fault += ["~early_stopping.params", "+early_stopping.params={at_step:8}"]
    command = [sys.executable, "-m", "easyrec", "train", *DDP, *SMALL, *fault, "distributed.max_restarts=1"]
    command += ["trainer.eval_every_n_steps=4", "trainer.checkpoint_every_n_steps=4"]
    command += [f"logger.tracking_uri={store(tmp_path)}", f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SIGKILL" in done.stderr  # the agent saw the worker die
    [run] = runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["train/steps"] == 11
    assert run.data.tags["easyrec.restarts"] == "1"
    assert "resumed from" in (tmp_path / "run" / "train.log").read_text()
    assert sorted(history(tmp_path, run.info.run_id, "eval/auc")) == [4, 8, 11]


def test_two_machines_on_loopback_train_one_job(tmp_path, stores):
    """Two launchers (``distributed.nnodes=2``), one worker each, meet at a c10d rendezvous and train one job."""
    stores(tmp_path)
    port = free_port()
    node = [
        *DDP[:1],
        "distributed.nproc_per_node=1",
        "distributed.nnodes=2",
        f"distributed.rdzv_endpoint=127.0.0.1:{port}",
    ]
    node += ["distributed.rdzv_id=loopback", *SMALL, f"logger.tracking_uri={store(tmp_path)}"]
    launchers = [
        subprocess.Popen(
            [sys.executable, "-m", "easyrec", "train", *node, f"hydra.run.dir={tmp_path / f'node{i}'}"],
            cwd=tmp_path,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [launcher.communicate(timeout=300)[0] for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    [run] = runs(tmp_path)  # one job, one run, opened by whichever worker became rank 0
    assert run.info.status == "FINISHED" and run.data.metrics["train/steps"] == 11
    main_dir = Path(run.data.tags["easyrec.output_dir"])
    other_dir = ({tmp_path / "node0", tmp_path / "node1"} - {main_dir}).pop()
    assert (main_dir / "checkpoints").is_dir() and (other_dir / "rank-1.log").is_file()
    assert not (other_dir / "checkpoints").exists()


def test_an_outside_torchrun_gives_one_run_directory_and_one_run_that_stops_early_on_every_worker(tmp_path, stores):
    """torchrun starts 2 workers that each run ``easyrec train``; the stop file (checked every 4 steps) ends the
    job at step 4 of 11 on both workers, as rank 0 decides."""
    stores(tmp_path)
    (tmp_path / "STOP").touch()
    stop = ["early_stopping=stop_file", f"early_stopping.path={tmp_path / 'STOP'}", "early_stopping.every_n_steps=4"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "easyrec"]
    command += ["train", "distributed=ddp", *SMALL, *stop, f"logger.tracking_uri={store(tmp_path)}"]
    done = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [run_dir] = (tmp_path / "outputs" / "torchrun").iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".easyrec.lock",  # the job holds its run directory: see easyrec.run_lock
        ".hydra",
        "checkpoints",
        "metrics.json",
        "rank-1.log",
        "train.log",
    ]
    [run] = runs(tmp_path)
    assert run.info.status == "FINISHED" and run.data.metrics["train/steps"] == 4
    assert run.data.tags["easyrec.output_dir"] == str(run_dir)
    assert run.data.tags["easyrec.stop_reason"].startswith("the stop file")
    assert "stopping early: the main worker stopped early" in (run_dir / "rank-1.log").read_text()


def test_bad_distributed_settings_fail_fast_with_one_line_naming_the_key(easyrec_main, tmp_path):
    code, _, err = easyrec_main(
        "train", "distributed=ddp", "distributed.nproc_per_node=0", f"hydra.run.dir={tmp_path / 'a'}"
    )
    assert code == 2 and "distributed.nproc_per_node=0" in err.strip().splitlines()[-1]
    started = time.monotonic()
    unreachable = ["distributed=ddp", "distributed.nnodes=2", "distributed.rdzv_endpoint=192.0.2.1:29400"]
    unreachable += ["distributed.rdzv_timeout=2", f"hydra.run.dir={tmp_path / 'b'}", "logger=none"]
    code, _, err = easyrec_main("train", *unreachable)
    assert code == 2, err
    assert "distributed.rdzv_endpoint=192.0.2.1:29400: the workers could not meet there within" in err
    assert time.monotonic() - started < 60  # no hang
    assert not (tmp_path / "b" / "checkpoints").exists()


def test_a_sweep_of_distributed_jobs_gives_each_job_its_workers_and_its_child_run(easyrec_main, tmp_path, stores):
    stores(tmp_path)
    sweep = ["-m", *DDP, "optimizer.lr=0.001,0.01", *SMALL, "trainer.max_steps=3"]
    sweep += [f"logger.tracking_uri={store(tmp_path)}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    code, _, err = easyrec_main("train", *sweep)
    assert code == 0, err
    children = [run for run in runs(tmp_path) if "mlflow.parentRunId" in run.data.tags]
    assert len(children) == 2 and {run.info.status for run in children} == {"FINISHED"}
    assert {run.data.params["optimizer.lr"] for run in children} == {"0.001", "0.01"}
    assert all(run.data.metrics["train/steps"] == 3 for run in children)
    for job in ("0", "1"):
        assert (tmp_path / "sweep" / job / "rank-1.log").is_file()
