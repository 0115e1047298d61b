"""easyrec compare: a sweep's children or an experiment's runs, best first, with the params that differ; --plot."""

from __future__ import annotations

import io
import json

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from rich.console import Console

from easyrec.commands.compare import Columns, compare
from easyrec.loggers.mlflow import run_name_from
from tests.conftest import copy_mlflow_store

RUNS = {  # name: (optimizer.lr, eval/auc at steps 10 and 20, best/eval/auc)
    "#0 optimizer.lr=0.1": ("0.1", [0.60, 0.62], None),
    "#1 optimizer.lr=0.01": ("0.01", [0.65, 0.70], 0.71),
    "#2 optimizer.lr=0.001": ("0.001", [0.55, 0.58], None),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory, mlflow_template):
    """A store with a sweep's parent run, its three children, and a run of another experiment."""
    root = tmp_path_factory.mktemp("compare")
    uri = copy_mlflow_store(mlflow_template, root)
    client = MlflowClient(uri)
    experiment = client.create_experiment("easyrec", artifact_location=str(root / "mlruns"))
    parent = client.create_run(experiment, run_name="sweep-10-00-00", tags={"easyrec.sweep.dir": "outputs/x"})
    for name, (lr, aucs, best) in RUNS.items():
        run = client.create_run(experiment, run_name=name, tags={"mlflow.parentRunId": parent.info.run_id})
        params = {"optimizer.lr": lr, "seed": "42", "optimized_metric": "eval/auc", "trainer.monitor_mode": "max"}
        metrics = [Metric("eval/auc", auc, 0, step) for step, auc in zip((10, 20), aucs, strict=True)]
        metrics += [Metric("eval/logloss", 0.5, 0, 20)] + ([Metric("best/eval/auc", best, 0, 20)] if best else [])
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()], metrics=metrics)
        client.set_terminated(run.info.run_id)
    client.set_terminated(parent.info.run_id)
    return uri, parent.info.run_id


def test_a_sweeps_children_best_first_with_the_params_that_differ(store, capsys, tmp_path):
    uri, parent = store
    rows = compare(parent, uri, plot=tmp_path / "curves.png")
    assert [row["run"] for row in rows] == ["#1 optimizer.lr=0.01", "#0 optimizer.lr=0.1", "#2 optimizer.lr=0.001"]
    assert [row["params"] for row in rows] == [
        {"optimizer.lr": "0.01"},
        {"optimizer.lr": "0.1"},
        {"optimizer.lr": "0.001"},
    ]
    assert [row["metrics"]["eval/auc"] for row in rows] == [0.71, 0.62, 0.58]  # best/ when there is one
    table = capsys.readouterr().out
    assert "children of sweep-10-00-00" in table and "optimizer.lr" in table and "seed" not in table
    assert "0.71000" in table and "eval/logloss" in table
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_experiment_sorted_by_another_metric_leaves_the_parent_out(store, capsys):
    uri, _ = store
    rows = compare("easyrec", uri, metrics=["eval/auc"], sort="eval/auc")
    assert len(rows) == 3 and "sweep-10-00-00" not in capsys.readouterr().out


def test_the_command_line(store, easyrec_main):
    uri, parent = store
    code, out, _ = easyrec_main("compare", parent, "--tracking-uri", uri, "--metrics", "eval/auc")
    assert code == 0 and "#1 optimizer.lr=0.01" in out
    code, _, err = easyrec_main("compare", "nope", "--tracking-uri", uri)
    assert code == 1
    assert (
        err.strip() == "easyrec compare: error: nope: neither a run nor an experiment in this store; the "
        "experiments are: easyrec, Default"
    )
    code, _, err = easyrec_main("compare", "easyrec", "--tracking-uri", "sqlite:///missing.db")
    assert code == 1 and err.startswith("easyrec compare: error: --tracking-uri sqlite:///missing.db: no MLflow store")


# ---------------------------------------------------------------------- what a terminal shows

OPTIMIZERS = {  # option: params of its node
    "adam": {"optimizer": "torch.optim.Adam", "optimizer.lr": "0.001", "optimizer.betas": "[0.9, 0.999]"},
    "adagrad": {"optimizer": "torch.optim.Adagrad", "optimizer.lr": "0.1", "optimizer.initial_accumulator_value": "0"},
}
LOSSES = {
    "bce": {"loss": "easyrec.losses.BinaryCrossEntropy"},
    "focal": {"loss": "easyrec.losses.BinaryFocalLoss", "loss.gamma": "2.0"},
}
METRICS = ["eval/auc", "eval/logloss"]
BASE = {"seed": "42", "optimized_metric": "eval/auc", "trainer.monitor_mode": "max", "model": "easyrec.models.DeepFM"}
# Ten runs of an experiment started one by one, named by their overrides as easyrec names them (long), from before
# runs recorded their groups' options: their optimizer is known by its class only.
LONG = [
    f"data.num_rows={2000 + 1000 * i} data.batch_size=256 model.hidden_units=[32] model.embedding_dim={4 * i} "
    f"trainer.max_steps=4 trainer.progress_bar=False optimizer={'adagrad' if i % 2 else 'adam'}".split()
    for i in range(1, 11)
]


def add_run(client, experiment, name, params, metrics, tags):
    run = client.create_run(experiment, run_name=name, tags=tags)
    batch = [Metric(key, value, 0, 20) for key, value in metrics.items()]
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()], metrics=batch)
    client.set_terminated(run.info.run_id)


@pytest.fixture(scope="module")
def terminal_store(tmp_path_factory, mlflow_template):
    """A 2x2 grid over two groups (a parent and its children, as ``easyrec train -m optimizer=adam,adagrad
    loss=bce,focal`` records them) and experiment ``many``: the ten runs of ``LONG``."""
    root = tmp_path_factory.mktemp("terminal")
    uri = copy_mlflow_store(mlflow_template, root)
    client = MlflowClient(uri)
    grid = client.create_experiment("grid", artifact_location=str(root / "mlruns"))
    parent = client.create_run(grid, run_name="sweep-10-00-00", tags={"easyrec.sweep.dir": "outputs/x"}).info.run_id
    for job, (optimizer, loss) in enumerate([(o, loss) for o in OPTIMIZERS for loss in LOSSES]):
        name = f"#{job} optimizer={optimizer},loss={loss}"
        params = {**BASE, **OPTIMIZERS[optimizer], **LOSSES[loss], "logger.run_name": name}
        metrics = {"eval/auc": 0.7 + job / 100, "eval/logloss": 0.6 - job / 100, "eval/oracle_auc": 0.8401}
        choices = {"optimizer": optimizer, "loss": loss, "model": "deepfm", "data/features": "criteo"}
        tags = {"mlflow.parentRunId": parent, "easyrec.choices": json.dumps(choices)}
        tags["easyrec.overrides"] = f"optimizer={optimizer} loss={loss} data.num_rows=2000 trainer.max_steps=4"
        add_run(client, grid, name, params, metrics, tags)
    many = client.create_experiment("many", artifact_location=str(root / "mlruns"))
    for i, overrides in enumerate(LONG):
        params = {**BASE, **dict(o.split("=") for o in overrides if "optimizer" not in o)}
        params |= OPTIMIZERS[overrides[-1].split("=")[1]]
        metrics = {"eval/auc": 0.7 + i / 1000, "eval/logloss": 0.5 - i / 1000, "eval/oracle_auc": 0.8401}
        add_run(client, many, run_name_from(overrides), params, metrics, {"easyrec.overrides": " ".join(overrides)})
    return uri, parent


def render(width: int, *args, **kwargs) -> tuple[list, list[str]]:
    """compare(*args, **kwargs) printed on a terminal ``width`` columns wide: its rows and its lines."""
    console = Console(width=width, record=True, file=io.StringIO())
    rows = compare(*args, console=console, **kwargs)
    return rows, console.export_text().splitlines()


def table_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line[:1] in set("┏┃┡│└")]


@pytest.mark.parametrize("width", [80, 120])
def test_a_grid_over_groups_shows_their_options_and_folds_what_follows_from_them(terminal_store, width):
    uri, parent = terminal_store
    rows, lines = render(width, parent, uri)
    assert [row["choices"] for row in rows] == [
        {"optimizer": "adagrad", "loss": "focal"},
        {"optimizer": "adagrad", "loss": "bce"},
        {"optimizer": "adam", "loss": "focal"},
        {"optimizer": "adam", "loss": "bce"},
    ]
    assert [row["params"] for row in rows] == [{}] * 4  # every param that differs follows from a group's option
    text = "\n".join(lines)
    assert "torch.optim" not in text and "…" not in text
    assert lines[0] == f"children of sweep-10-00-00 ({parent}): 4 runs, best first by eval/auc"
    [header] = [line for line in table_lines(lines) if "eval/auc" in line]
    assert [cell.strip() for cell in header.strip("┃").split("┃")] == ["run", "optimizer", "loss", *METRICS]
    for row in rows:  # each run's row has its options and its metrics, in full
        [line] = [line for line in table_lines(lines) if f"│ {row['run'].split()[0]} " in line]
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        assert cells[1:] == [*row["choices"].values(), *(f"{row['metrics'][m]:.5f}" for m in METRICS)]
        assert row["run"] in {cells[0], *lines}  # in the table, or named above it
    assert all(len(line) <= width for line in table_lines(lines))
    assert "same in every run: status FINISHED, eval/oracle_auc 0.84010" in lines
    assert "set by the option of optimizer: optimizer.betas, optimizer.initial_accumulator_value, optimizer.lr" in lines
    assert "set by the option of loss: loss.gamma" in lines


@pytest.mark.parametrize("width", [80, 120])
def test_ten_runs_with_long_names_stay_readable(terminal_store, width):
    uri, _ = terminal_store
    rows, lines = render(width, "many", uri, metrics=METRICS)
    text = "\n".join(lines)
    assert "…" not in text and all(len(line) <= width for line in table_lines(lines))
    tables = table_lines(lines)
    assert {*METRICS} <= {cell.strip() for cell in tables[1].strip("┃").split("┃")}  # in the first table
    for rank, row in enumerate(rows, 1):  # named in full above the table, and found by their rank in it
        assert f"{rank:>2}  {row['run']}" in lines
        line = next(line for line in tables if line.startswith("│") and line.split("│")[1].strip() == str(rank))
        assert all(f"{row['metrics'][m]:.5f}" in line for m in METRICS)
    # set on the command line, so shown although the optimizer sets them; runs from before easyrec.choices show
    # their optimizer's class
    assert [row["params"] for row in rows][0] == {"data.num_rows": "12000", "model.embedding_dim": "40"}
    assert rows[0]["choices"] == {"optimizer": "Adam"} and "torch.optim" not in text


def test_the_command_line_at_80_columns(terminal_store, easyrec_main, monkeypatch):
    uri, _ = terminal_store
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = easyrec_main("compare", "many", "--tracking-uri", uri, "--metrics", *METRICS)
    assert code == 0 and "…" not in out
    assert f" 1  {run_name_from(LONG[-1])}" in out.splitlines() and "0.70900" in out


def run_row(choices, params, overridden):
    return {"choices": choices, "params": params, "overridden": overridden, "status": "FINISHED", "metrics": {}}


def test_a_param_follows_from_a_group_only_where_every_option_fixes_it():
    swept = ["optimizer", "loss", "optimizer.lr"]
    rows = [
        run_row(
            {"optimizer": "adam", "loss": "bce"}, {"optimizer.lr": "0.1", "optimizer.eps": "1e-8", "x": "1"}, swept
        ),
        run_row(
            {"optimizer": "adam", "loss": "focal"}, {"optimizer.lr": "0.01", "optimizer.eps": "1e-8", "x": "2"}, swept
        ),
        run_row({"optimizer": "sgd", "loss": "bce"}, {"optimizer.lr": "0.1", "x": "2"}, swept),
        run_row({"optimizer": "sgd", "loss": "focal"}, {"optimizer.lr": "0.01", "x": "1"}, swept),
    ]
    columns = Columns.of(rows, [])
    assert columns.groups == ["optimizer", "loss"]
    # optimizer.lr: swept on the command line (else it would follow from loss); x: set by the two groups together
    assert columns.params == ["optimizer.lr", "x"]
    assert columns.folded == {"optimizer": ["optimizer.eps"], "loss": []}


def test_a_param_that_two_groups_set_alike_goes_to_the_group_that_holds_it():
    rows = [
        run_row({"loss": "bce", "optimizer": "adam"}, {"optimizer.eps": "1e-8"}, ["loss", "optimizer"]),
        run_row({"loss": "focal", "optimizer": "sgd"}, {}, ["loss", "optimizer"]),
    ]
    assert Columns.of(rows, []).folded == {"loss": [], "optimizer": ["optimizer.eps"]}
