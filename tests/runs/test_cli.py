"""The ``easyrec`` command, run in an empty directory as a user runs it: in a subprocess where the process matters
(the entry point, exit codes and one-line errors on stderr, Ctrl-C), in this process (``easyrec_main``, the same
``main``) for the training runs, which would otherwise pay torch's and MLflow's imports again each time."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from easyrec.data import generate_clicks
from tests.conftest import QUICK, options

pytestmark = pytest.mark.slow

OPTIMIZERS = (
    "adagrad, adam, adamw, ftrl, lamb, lazy_adam, momentum, momentumw, rmsprop, row_wise_adagrad, sgd, sparse_dense, "
    "wide_deep"
)


def runs(directory: Path) -> list:
    if not (directory / "mlflow.db").exists():
        return []  # as MlflowClient would find, without creating the store (a second of migrations)
    client = MlflowClient(f"sqlite:///{directory}/mlflow.db")
    experiment = client.get_experiment_by_name("easyrec")
    return [] if experiment is None else client.search_runs([experiment.experiment_id], order_by=["start_time"])


def only_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# How to write a table in the format of each data option that reads files (every one of conf/data/ but synthetic).
WRITERS = {"csv": pv.write_csv, "parquet": pq.write_table}
FILE_FORMATS = [option for option in options("data") if option != "synthetic"]


def write_synthetic_files(directory: Path, fmt: str) -> tuple[Path, Path]:
    table, _ = generate_clicks(6000, seed=3)
    train, test = table.slice(0, 5000), table.slice(5000)
    paths = directory / f"train.{fmt}", directory / f"eval.{fmt}"
    for part, path in zip((train, test), paths, strict=True):
        WRITERS[fmt](part, path)
    return paths


@pytest.fixture
def easyrec_here(easyrec_main, mlflow_store, tmp_path, monkeypatch):
    """``easyrec ARGS`` in this process, run from ``tmp_path`` as ``easyrec_cli`` runs it: ``(code, out, err)``. The
    default MLflow store, ``tmp_path/mlflow.db``, starts as an empty copy (see ``mlflow_template``)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    return easyrec_main


def test_top_level_help_lists_the_commands(easyrec_cli):
    done = easyrec_cli("--help")
    assert done.returncode == 0
    assert "train" in done.stdout and "usage: easyrec" in done.stdout
    unknown = easyrec_cli("fly")
    assert unknown.returncode == 2
    assert (
        only_line(unknown.stderr)
        == "easyrec: unknown command 'fly'; choose one of: train, evaluate, predict, export, generate, compare, "
        "study-server, sync"
    )


def test_train_help_and_cfg_job(easyrec_cli, tmp_path):
    helped = easyrec_cli("train", "--help")
    assert helped.returncode == 0
    assert f"optimizer: {OPTIMIZERS}" in helped.stdout
    assert "lr_schedule: constant, cosine, exponential_decay, manual_step, polynomial, transformer" in helped.stdout
    shown = easyrec_cli("train", "--cfg", "job", "optimizer=sgd", "optimizer.lr=0.5")
    assert shown.returncode == 0
    assert "_target_: torch.optim.SGD" in shown.stdout and "lr: 0.5" in shown.stdout
    assert not (tmp_path / "mlflow.db").exists()


def test_train_end_to_end_lands_a_finished_mlflow_run(easyrec_here, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")  # narrower than the paths: logs outside a terminal are never wrapped
    code, out, err = easyrec_here("train", *QUICK, "trainer.max_epochs=2")
    assert code == 0, err
    assert "eval/auc" in out and "eval/oracle_auc" in out  # the metrics table
    [run] = runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert len(run.data.params) >= 20
    assert run.data.params["optimizer.lr"] == "0.001" and run.data.params["optimizer"] == "torch.optim.Adam"
    assert not any(key.endswith(("_target_", "_partial_")) for key in run.data.params)
    for metric in ("eval/auc", "eval/logloss", "eval/oracle_auc", "eval/oracle_logloss", "train/loss", "train/lr"):
        assert metric in run.data.metrics, metric
    assert 0.5 < run.data.metrics["eval/auc"] <= run.data.metrics["eval/oracle_auc"] + 0.02
    assert run.data.tags["easyrec.overrides"] == " ".join([*QUICK, "trainer.max_epochs=2"])
    assert run.info.run_name.startswith("data.num_rows=6000,")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "hydra", "train.log"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "config")} == {"config/resolved.yaml"}
    assert "hydra/overrides.yaml" in {a.path for a in client.list_artifacts(run.info.run_id, "hydra")}
    history = client.get_metric_history(run.info.run_id, "eval/auc")
    assert [m.step for m in history] == [22, 44]  # evaluated after each epoch of ceil(5400 / 256) steps
    output_dir = Path(run.data.tags["easyrec.output_dir"])
    assert list((output_dir / "checkpoints").glob("step-*.pt"))
    assert (output_dir / "train.log").read_text().count("eval/auc") >= 2
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert f" INFO    MLflow run {run.info.run_id} in experiment 'easyrec' at {uri}" in err.splitlines()[0]
    assert "easyrec: 44 steps, 2 epochs" in out
    *_, directory, ui, compare = out.splitlines()  # the run ends saying where it is and how to look at it
    assert directory == f"run directory: {output_dir}"
    assert ui == f"to look at it: mlflow ui --backend-store-uri {uri}"
    assert compare == f"{'':14} easyrec compare easyrec"  # the default store, here
    code, out, err = easyrec_here(*shlex.split(compare)[1:])
    assert code == 0, err
    assert "experiment easyrec" in out  # the table of its runs


def test_optimizer_and_loss_options_in_a_git_checkout(easyrec_here, tmp_path):
    for command in (
        ["init", "-q"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
    ):
        subprocess.run(["git", *command], cwd=tmp_path, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    code, _, err = easyrec_here("train", *QUICK, "optimizer=adagrad", "loss=focal", "loss.gamma=1.5")
    assert code == 0, err
    [run] = runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer"] == "torch.optim.Adagrad" and run.data.params["loss.gamma"] == "1.5"
    assert run.data.tags["git.commit"] == commit == run.data.tags["mlflow.source.git.commit"]


def test_user_options_from_config_dir(easyrec_here, tmp_path):
    mine = tmp_path / "my-conf" / "optimizer"
    mine.mkdir(parents=True)
    (mine / "fast_adam.yaml").write_text("_target_: torch.optim.Adam\n_partial_: true\nlr: 0.02\n")
    code, _, err = easyrec_here(
        "train", "--config-dir", "my-conf", "optimizer=fast_adam", *QUICK, "trainer.max_steps=3"
    )
    assert code == 0, err
    [run] = runs(tmp_path)
    assert run.data.params["optimizer.lr"] == "0.02"
    (mine / "bad_adam.yaml").write_text("_target_: torch.optim.Adam\n_partial_: true\nlr: -0.02\n")
    code, _, err = easyrec_here("train", "--config-dir", "my-conf", "optimizer=bad_adam", *QUICK)
    assert code == 2
    assert only_line(err) == "easyrec train: error: optimizer.lr=-0.02: must be > 0"


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_train_from_files(easyrec_here, tmp_path, fmt):
    train, test = write_synthetic_files(tmp_path, fmt)
    code, _, err = easyrec_here(
        "train",
        f"data={fmt}",
        f"data.train_path={train.name}",
        f"data.eval_path={test.name}",
        *QUICK[1:],
        "trainer.max_epochs=3",
    )
    assert code == 0, err
    [run] = runs(tmp_path)
    assert run.info.status == "FINISHED" and run.data.metrics["eval/auc"] > 0.5
    assert "eval/oracle_auc" not in run.data.metrics


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            ["optimizer=nope"],
            "easyrec train: error: unknown option 'nope' for 'optimizer'; choose one of: " + OPTIMIZERS,
        ),
        (["optimizer.lr=-1"], "easyrec train: error: optimizer.lr=-1.0: must be > 0"),
        (["loss=focal", "loss.gamma=-2"], "easyrec train: error: loss.gamma=-2.0: must be >= 0"),
        (["data.batch_size=0"], "easyrec train: error: data.batch_size=0: must be > 0"),
        (
            ["optimizer.lr=fast"],
            "easyrec train: error: optimizer.lr: Value 'fast' of type 'str' could not be converted",
        ),
        (
            ["trainer.max_epoch=2"],
            "easyrec train: error: trainer.max_epoch: no such key (to add a new key, write +trainer.max_epoch=...)",
        ),
    ],
)
def test_config_errors_are_one_line_and_open_no_run(easyrec_here, tmp_path, args, expected):
    # in this process: a real process's exit code and stderr are tested in test_bad_input (the same code path)
    code, _, err = easyrec_here("train", *args)
    assert code == 2
    assert only_line(err).startswith(expected)
    assert runs(tmp_path) == []


def test_a_missing_file_or_column_is_one_line_and_opens_no_run(easyrec_here, tmp_path):
    train, test = write_synthetic_files(tmp_path, "csv")
    header, *rows = test.read_text().splitlines()
    (tmp_path / "no_c26.csv").write_text("\n".join([header.replace('"C26"', '"C27"'), *rows]) + "\n")
    columns = header.replace('"', "").replace(",", ", ").replace("C26", "C27")
    data = ["data=csv", f"data.train_path={train.name}", *QUICK[1:]]
    for eval_path, message in [
        ("nope.csv", f"nope.csv: file not found (relative paths are taken from {tmp_path})"),
        ("no_c26.csv", f"no_c26.csv: column 'C26' not found; the columns are: {columns}"),
    ]:
        code, _, err = easyrec_here("train", *data, f"data.eval_path={eval_path}")
        assert code == 1
        assert only_line(err) == f"easyrec train: error: {message}"
    assert runs(tmp_path) == [] and not list((tmp_path / "outputs").glob("*/*/checkpoints"))


def test_bad_data_is_one_line_and_the_run_ends_failed(easyrec_here, tmp_path):
    train, test = write_synthetic_files(tmp_path, "csv")
    lines = train.read_text().splitlines()
    cells, label = lines[5].split(","), lines[0].replace('"', "").split(",").index("label")
    lines[5] = ",".join([*cells[:label], "2", *cells[label + 1 :]])  # data row 5: label 2
    train.write_text("\n".join(lines) + "\n")
    code, _, err = easyrec_here(
        "train", "data=csv", f"data.train_path={train.name}", f"data.eval_path={test.name}", *QUICK[1:]
    )
    assert code == 1
    message = [line for line in err.splitlines() if "error:" in line]
    assert message == [
        "easyrec train: error: train.csv: column 'label', row 5: label 2 is not one of {0, 1} "
        "(required by loss BinaryCrossEntropy)"
    ]
    assert "Traceback" not in err
    [run] = runs(tmp_path)
    assert run.info.status == "FAILED"
    assert "row 5" in run.data.tags["easyrec.error"]


def test_ctrl_c_ends_the_run_killed(mlflow_store, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "easyrec", "train", "data.num_rows=100000", "trainer.max_epochs=50"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in process.stdout:
        if "training for" in line:
            break
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130
    [run] = runs(tmp_path)
    assert run.info.status == "KILLED"
