"""Faults around a run's files: a run directory in use, a full disk, a read-only folder, a damaged checkpoint."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from easyrec.errors import OutputError
from easyrec.run_lock import LOCK_FILE, hold_run_directory
from easyrec.user_errors import describe
from tests.conftest import QUICK

# a second process that holds the lock of the run directory argv[1] until it is killed
HOLDER = (
    "import sys, pathlib\n"
    "from easyrec.run_lock import hold_run_directory\n"
    "with hold_run_directory(pathlib.Path(sys.argv[1])):\n"
    "    print('locked', flush=True)\n"
    "    sys.stdin.read()\n"
)


def error_line(stderr: str) -> str:
    """The one error line on stderr (in this process, the run's log lines go there too), and no traceback."""
    lines = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def runs(directory: Path) -> list:
    client = MlflowClient(f"sqlite:///{directory}/mlflow.db")
    experiment = client.get_experiment_by_name("easyrec")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def test_a_run_directory_is_held_by_one_holder_at_a_time(tmp_path):
    run = tmp_path / "run"
    with hold_run_directory(run):
        assert (run / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        # flock locks open files, not processes: a second holder in this very process is refused as well
        with pytest.raises(OutputError, match=f"^{run}: in use by another easyrec run \\(pid {os.getpid()}\\)"):
            with hold_run_directory(run):
                pass
    assert (run / LOCK_FILE).read_text() == ""  # released, and no stale pid
    with hold_run_directory(run):
        pass


def test_a_file_that_cannot_be_written_is_described_by_its_path_and_cause():
    denied = PermissionError(1, "Operation not permitted", "/runs/a/train.log")
    try:
        try:
            raise denied
        except OSError as error:  # as Hydra's logging config wraps it
            raise ValueError("Unable to configure handler 'file'") from error
    except ValueError as wrapped:
        assert describe(wrapped) == "/runs/a/train.log: Operation not permitted"
    assert describe(RuntimeError("a bug")) is None


@pytest.fixture
def holder(tmp_path):
    """``(run directory, pid)``: a second process holding the lock of ``tmp_path/run``; SIGKILLed at the end."""
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline() == "locked\n"
    yield run, process
    process.kill()
    process.wait()


def test_a_killed_holder_leaves_no_stale_lock(holder):
    run, process = holder
    with pytest.raises(OutputError, match=f"pid {process.pid}"):
        with hold_run_directory(run):
            pass
    process.send_signal(signal.SIGKILL)  # no goodbye: the system releases the lock
    process.wait()
    with hold_run_directory(run):
        pass


@pytest.mark.slow
def test_a_second_run_in_a_directory_in_use_is_refused_in_one_line(
    easyrec_main, mlflow_store, tmp_path, monkeypatch, holder
):
    run, process = holder
    monkeypatch.chdir(tmp_path)
    code, _, err = easyrec_main("train", *QUICK, "trainer.max_steps=2", f"hydra.run.dir={run}")
    assert code == 1
    assert error_line(err) == (
        f"easyrec train: error: {run}: in use by another easyrec run (pid {process.pid}); wait for it to end, "
        "or give this run a directory of its own (hydra.run.dir=...)"
    )
    assert not (run / "checkpoints").exists() and not (run / "metrics.json").exists()
    assert runs(tmp_path) == []  # refused before a run was opened


@pytest.mark.slow
def test_a_full_disk_mid_checkpoint_is_one_line_keeps_the_last_good_one_and_fails_the_run(
    easyrec_main, mlflow_store, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    # the kernel's own ENOSPC: the second checkpoint is written into /dev/full
    (checkpoints / "step-000000010.pt.partial").symlink_to("/dev/full")
    args = [*QUICK, "trainer.max_steps=10", "trainer.checkpoint_every_n_steps=5", "hydra.run.dir=run"]
    code, _, err = easyrec_main("train", *args)
    assert code == 1
    line = f"cannot write {checkpoints / 'step-000000010.pt'}: No space left on device"
    assert error_line(err) == f"easyrec train: error: {line}"
    assert [p.name for p in checkpoints.iterdir()] == ["step-000000005.pt"]  # the .partial is gone
    from easyrec.checkpoints import load_checkpoint

    assert load_checkpoint(tmp_path / "run")["step"] == 5
    [failed] = runs(tmp_path)
    assert failed.info.status == "FAILED" and failed.data.tags["easyrec.error"] == f"OutputError: {line}"


@pytest.fixture
def immutable():
    """``immutable(path)``: make ``path`` unwritable even for root (``chattr +i``; skip where it is not
    supported, as chmod does not stop root); undone at the end."""
    made = []

    def make(path: Path) -> None:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not available here: {done.stderr.strip()}")
        made.append(path)

    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.slow
def test_a_read_only_run_directory_or_checkpoint_folder_is_one_line(
    easyrec_main, mlflow_store, tmp_path, monkeypatch, immutable
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "frozen").mkdir()
    immutable(tmp_path / "frozen")
    code, _, err = easyrec_main("train", *QUICK, "trainer.max_steps=2", "hydra.run.dir=frozen")
    assert code == 1
    assert error_line(err) == f"easyrec train: error: {tmp_path / 'frozen' / 'train.log'}: Operation not permitted"
    assert runs(tmp_path) == []
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    immutable(checkpoints)
    code, _, err = easyrec_main("train", *QUICK, "trainer.max_steps=2", "hydra.run.dir=run")
    line = f"cannot write {checkpoints / 'best.pt'}: Operation not permitted"
    assert code == 1 and error_line(err) == f"easyrec train: error: {line}"
    [failed] = runs(tmp_path)
    assert failed.info.status == "FAILED" and failed.data.tags["easyrec.error"] == f"OutputError: {line}"


@pytest.mark.slow
def test_resume_skips_a_truncated_latest_checkpoint_with_a_warning(compose_train, tmp_path, caplog):
    from easyrec.checkpoints import Checkpoints
    from easyrec.run import train

    small = [*QUICK, "logger=none", "trainer.progress_bar=false", "trainer.checkpoint_every_n_steps=5"]
    train(compose_train(*small, "trainer.max_steps=15"), tmp_path)
    latest = Checkpoints(tmp_path / "checkpoints").latest()
    assert latest.name == "step-000000015.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # a copy cut short, a disk that lost the end
    with caplog.at_level(logging.INFO):
        train(compose_train(*small, "trainer.max_steps=20", "trainer.resume=true"), tmp_path)
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith(f"skipping a damaged checkpoint: {latest}: not a readable checkpoint") for m in messages)
    assert f"resumed from {tmp_path / 'checkpoints' / 'step-000000010.pt'} at step 10" in messages
    assert Checkpoints(tmp_path / "checkpoints").latest().name == "step-000000020.pt"


def test_a_restarted_worker_resumes_from_the_newest_readable_checkpoint(tmp_path):
    from easyrec.checkpoints import FORMAT, Checkpoints
    from easyrec.errors import CheckpointError
    from easyrec.resume import resume_state

    checkpoints = Checkpoints(tmp_path / "checkpoints")
    for step in (5, 10):
        checkpoints.save({"format": FORMAT, "step": step}, step)
    latest = checkpoints.latest()
    latest.write_bytes(latest.read_bytes()[:-100])  # damaged after it was written (a disk error, a copy cut short)
    assert resume_state("auto", tmp_path)["step"] == 5
    checkpoints.step_files()[0].write_bytes(b"")
    # nothing readable left: an error, never a silent start from step 0 over the run's files
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        resume_state("auto", tmp_path)
