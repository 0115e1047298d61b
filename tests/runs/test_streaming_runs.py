"""Streamed training input end to end (issue 18): a run killed with SIGKILL mid-epoch resumes at its exact position,
and two DDP workers streaming uneven files train on every row once per epoch. The runs' model records the ids of
the rows it trains on (tests/trained_ids.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from easyrec.checkpoints import load_checkpoint

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).parents[2]
# the id is dense column 0, read with no transform or standardization (the defaults): exact in float32
STREAMED = [
    "data=parquet",
    "data.streaming=true",
    "data.shuffle_buffer=100",
    "data.batch_size=64",
    "data.eval_batch_size=256",
    "data.features.dense=[{names:[id,x]}]",
    "data.features.categorical=[{names:[c]}]",
    "model._target_=tests.trained_ids.IdRecordingDeepFM",
    "model.embedding_dim=4",
    "model.hidden_units=[8]",
    "trainer.progress_bar=false",
]


def write_dataset(root: Path, sizes: list[int], eval_rows: int = 200) -> int:
    """Parquet files of ``sizes`` rows in ``root/train/`` and one of ``eval_rows`` in ``root/eval/``, each row with
    a unique ``id`` (0, 1, ... over the training files); return the training rows."""
    rng = np.random.default_rng(0)
    first = 0
    for number, rows in enumerate([*sizes, eval_rows]):
        x = rng.normal(size=rows)
        table = pa.table(
            {
                "id": np.arange(first, first + rows),
                "x": x,
                "c": rng.choice(["a", "b", "c", "d"], rows),
                "label": (rng.random(rows) < 1 / (1 + np.exp(-2 * x))).astype(np.int64),
            }
        )
        folder = root / ("train" if number < len(sizes) else "eval")
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"part-{number:03d}.parquet")
        first += rows
    return sum(sizes)


def paths(root: Path) -> list[str]:
    return [f"data.train_path={root / 'train'}", f"data.eval_path={root / 'eval'}"]


def environment(**variables: str) -> dict[str, str]:
    """The runs' environment: they import tests.trained_ids from the repository."""
    inherited = {key: value for key, value in os.environ.items() if key not in ("HYDRA_FULL_ERROR", "STALL_AFTER")}
    return {**inherited, "COLUMNS": "200", "PYTHONPATH": str(REPOSITORY), **variables}


def trained(path: Path) -> list[list[int]]:
    """The ids of each training forward that ``path`` recorded, one list per line."""
    return [[int(v) for v in line.split()] for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition: Callable[[], bool], what: str, process: subprocess.Popen | None = None) -> None:
    """Poll ``condition`` until it holds (a generous 5 minutes at most on a busy machine); fail naming ``what``, or
    with the process's log when it ended first."""
    for _ in range(3000):
        if condition():
            return
        if process is not None and process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before {what}")
        time.sleep(0.1)
    pytest.fail(f"waited 5 minutes for {what}")


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the run's data loader workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def mlflow_runs(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("easyrec")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_a_run_killed_mid_epoch_resumes_at_its_exact_position(tmp_path, mlflow_store):
    """SIGKILL while step 11 of about 49 runs (one loader worker, a shuffle buffer of 100 rows, a checkpoint every
    step); ``trainer.resume=true`` then trains on exactly the rows that the checkpoint's 10 steps had not: the ids
    of run 1's first 10 steps and of run 2's steps are the dataset's ids, each once. The loader worker does not
    outlive the killed run, and the resumed run finishes the same MLflow run with ``train/rows`` over both
    attempts."""
    rows = write_dataset(tmp_path / "data", [700, 500, 900, 400, 600])  # 3,100 rows: 49 steps of 64
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "easyrec", "train", *STREAMED, *paths(tmp_path / "data")]
    command += ["data.num_workers=1", "trainer.max_epochs=1", "trainer.checkpoint_every_n_steps=1"]
    command += [f"hydra.run.dir={run_dir}"]
    first_ids, second_ids = tmp_path / "first.txt", tmp_path / "second.txt"
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=environment(TRAINED_IDS=str(first_ids), STALL_AFTER="10"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # whatever the test leaves is ended with the group
        )
    try:
        wait_for(lambda: len(trained(first_ids)) == 11, "the run reached step 11", first)
        loaders = children(first.pid)
        assert loaders, "no data loader process: data.num_workers=1 reads in a worker process"
        first.send_signal(signal.SIGKILL)
        first.wait()
        # torch's loader workers notice their parent is gone within seconds
        wait_for(lambda: not any(alive(pid) for pid in loaders), f"the loader processes {loaders} to end")
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    state = load_checkpoint(run_dir)
    assert (state["step"], state["epoch"]) == (10, 0) and state["position"] is not None
    assert state["rows"] == sum(len(step) for step in trained(first_ids)[:10])
    [killed] = mlflow_runs(tmp_path)
    assert killed.info.status == "RUNNING"  # SIGKILL gives the run no time to end it

    second = subprocess.run(
        [*command, "trainer.resume=true"],
        cwd=tmp_path,
        env=environment(TRAINED_IDS=str(second_ids)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    steps = trained(first_ids)[:10] + trained(second_ids)
    assert sorted(row for step in steps for row in step) == list(range(rows))
    assert json.loads((run_dir / "metrics.json").read_text())["train/rows"] == rows
    [run] = mlflow_runs(tmp_path)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.data.metrics["train/rows"] == rows


def test_two_ddp_workers_streaming_uneven_files_train_on_every_row_once_per_epoch(tmp_path, mlflow_store):
    """40 files of 20 to 167 rows, 2 workers streaming them for 2 epochs: every id is trained on twice (the ranks'
    pieces run out at different steps: the one that runs out first trains empty micro-batches, and nobody hangs),
    ``train/rows`` is the dataset's rows x 2, in one FINISHED run."""
    sizes = [20 + (37 * number) % 148 for number in range(40)]
    rows = write_dataset(tmp_path / "data", sizes)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "easyrec", "train", *STREAMED, *paths(tmp_path / "data")]
    command += ["distributed=ddp", "distributed.nproc_per_node=2", "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"]
    command += ["data.num_workers=0"]  # each rank reads in its training process (the resume test has a loader)
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env=environment(TRAINED_IDS=str(tmp_path / "ids-{rank}.txt")),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    forwards = [trained(tmp_path / f"ids-{rank}.txt") for rank in (0, 1)]
    assert sorted(row for steps in forwards for step in steps for row in step) == sorted(list(range(rows)) * 2)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/rows"] == 2 * rows and 0 <= metrics["data/wait_fraction"] <= 1
    assert "training for about " in (run_dir / "train.log").read_text()  # a stream's step count is an estimate
    # a rank trained fewer non-empty micro-batches than the run's steps: at the others its pieces had run out
    assert min(len(steps) for steps in forwards) < metrics["train/steps"]
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED" and run.data.metrics["train/rows"] == 2 * rows


def test_bad_input_met_in_a_loader_worker_fails_the_run_with_its_one_line(
    easyrec_main, tmp_path, mlflow_store, monkeypatch
):
    """A label the loss cannot take, in the second file: the loader worker that reads it stops the run, which ends
    FAILED with the one-line message (file, column, row) as its ``easyrec.error`` tag and on stderr, not the
    worker's traceback; the loader process ends with the run."""
    write_dataset(tmp_path / "data", [300, 300, 300])
    bad = tmp_path / "data" / "train" / "part-001.parquet"
    table = pq.read_table(bad)
    labels = table["label"].to_numpy().copy()
    labels[150] = 3
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels)), bad)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRAINED_IDS", str(tmp_path / "ids.txt"))
    before = set(children(os.getpid()))  # what earlier tests in this pytest worker left running (a server, ...)
    code, _, err = easyrec_main(
        "train", *STREAMED, *paths(tmp_path / "data"), "data.num_workers=1", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert code == 1
    line = err.strip().splitlines()[-1]
    message = line.removeprefix("easyrec train: error: ")
    assert message != line and str(bad) in message
    assert "column 'label', row 151: label 3 is not one of {0, 1} (required by loss BinaryCrossEntropy)" in message
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FAILED" and run.data.tags["easyrec.error"] == f"DataError: {message}"
    # the failed run let its loader process go at once (a sweep runs its next job in the same process)
    assert not [pid for pid in set(children(os.getpid())) - before if alive(pid)]
