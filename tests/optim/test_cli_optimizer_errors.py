"""Bad optimizer groups and gradient options through ``easyrec train`` (its entry point, in this process): one error
line, no traceback.

Errors found while building the optimizer (after the run opened) end the MLflow run FAILED; a bad value in a
group's optimizer is refused by config validation before any run opens. The other config-validation errors
are unit-tested with compose_train in test_grouped_optimizer.py and test_gradients.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import QUICK

pytestmark = pytest.mark.slow


def runs(directory: Path) -> list:
    if not (directory / "mlflow.db").exists():
        return []
    client = MlflowClient(f"sqlite:///{directory}/mlflow.db")
    experiment = client.get_experiment_by_name("easyrec")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def error_line(stderr: str) -> str:
    """The one error line (the run's log lines go to stderr too) and it is the last line."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("easyrec") and "error:" in line]
    assert len(errors) == 1, stderr
    assert stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            ["optimizer=sparse_dense", "optimizer.groups.embeddings.params=re:nomatch"],
            "optimizer.groups.embeddings.params=re:nomatch: matches no trainable parameter",
        ),
        (
            ["optimizer=sparse_dense", "optimizer.groups.dense.params=re:."],
            "optimizer.groups: parameter embedding.table.weight is claimed by group 'embeddings' and group 'dense'",
        ),
        (
            ["model.sparse_embeddings=true", "optimizer=adam"],
            "optimizer: Adam cannot take the sparse gradients of the embedding tables; use sgd, adagrad, "
            "row_wise_adagrad, lazy_adam or ftrl for them, or model.sparse_embeddings=false",
        ),
        (['gradients.freeze=["nomatch"]'], "gradients.freeze: 'nomatch' matches no parameter of DeepFM"),
    ],
    ids=["matches-nothing", "claimed-twice", "sparse-adam", "freeze-no-match"],
)
def test_errors_while_building_are_one_line_and_fail_the_run(
    easyrec_main, mlflow_store, tmp_path, monkeypatch, args, expected
):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = easyrec_main("train", *QUICK, *args)
    assert code == 2
    assert error_line(stderr) == f"easyrec train: error: {expected}"
    [run] = runs(tmp_path)
    assert run.info.status == "FAILED"
    assert run.data.tags["easyrec.error"] == f"ConfigError: {expected}"


def test_a_bad_value_inside_a_group_is_refused_before_any_run(easyrec_main, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = easyrec_main(
        "train", *QUICK, "optimizer=sparse_dense", "optimizer.groups.embeddings.optimizer.lr=-1"
    )
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == ["easyrec train: error: optimizer.groups.embeddings.optimizer.lr=-1.0: must be > 0"]
    assert runs(tmp_path) == []
