"""easyrec compare: a sweep's children or an experiment's runs, best first, with the params that differ; --plot."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from easyrec.commands.compare import compare
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
