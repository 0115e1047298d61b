"""Every early-stopping option ends a real run where it should, FINISHED, with the reason on the MLflow run."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from easyrec.checkpoints import load_checkpoint
from easyrec.run import train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_store")]  # tmp_path/mlflow.db: an empty store

# 22 steps an epoch; evaluations and logs every 5 steps; at most 110 steps
SMALL = [
    "data.num_rows=6000",
    "data.batch_size=256",
    "model.hidden_units=[32]",
    "model.embedding_dim=4",
    "trainer.max_epochs=5",
    "trainer.eval_every_n_steps=5",
    "trainer.log_every_n_steps=5",
    "trainer.progress_bar=false",
]


def run(compose_train, tmp_path, monkeypatch, *overrides: str):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    train(compose_train(*SMALL, f"logger.tracking_uri={uri}", *overrides), tmp_path / "run")
    client = MlflowClient(uri)
    [mlflow_run] = client.search_runs([client.get_experiment_by_name("easyrec").experiment_id])
    return mlflow_run, load_checkpoint(tmp_path / "run")


def test_stop_file_ends_the_run_at_its_next_check(compose_train, tmp_path, monkeypatch):
    (tmp_path / "STOP").touch()
    overrides = ["early_stopping=stop_file", f"early_stopping.path={tmp_path}/STOP", "early_stopping.every_n_steps=4"]
    mlflow_run, state = run(compose_train, tmp_path, monkeypatch, *overrides)
    assert state["step"] == 4
    assert mlflow_run.info.status == "FINISHED"
    assert f"{tmp_path}/STOP" in mlflow_run.data.tags["easyrec.stop_reason"]


def test_deadline_ends_the_run_finished_with_a_reason(compose_train, tmp_path, monkeypatch):
    mlflow_run, state = run(
        compose_train,
        tmp_path,
        monkeypatch,
        "early_stopping=deadline",
        "early_stopping.after=null",
        "early_stopping.at=1700000000",  # 2023: long past
    )
    assert state["step"] == 1
    assert mlflow_run.info.status == "FINISHED" and "deadline" in mlflow_run.data.tags["easyrec.stop_reason"]


def test_threshold_stops_at_the_first_evaluation_past_it(compose_train, tmp_path, monkeypatch):
    overrides = ["early_stopping=threshold", "early_stopping.threshold=0.55"]
    mlflow_run, state = run(compose_train, tmp_path, monkeypatch, *overrides)
    history = state["history"]
    first = min(step for step, m in history.items() if m["eval/auc"] >= 0.55)
    assert state["step"] == first == max(history)
    assert "0.55" in mlflow_run.data.tags["easyrec.stop_reason"]


def test_patience_stops_after_evaluations_without_improvement(compose_train, tmp_path, monkeypatch):
    overrides = ["early_stopping=patience", "early_stopping.patience=2", "optimizer.lr=0.05"]
    mlflow_run, state = run(compose_train, tmp_path, monkeypatch, *overrides)
    history = state["history"]
    steps = sorted(history)
    best = max(steps, key=lambda s: history[s]["eval/auc"])
    assert steps[-1] == best + 10 < 110  # two evaluations (5 steps apart) after the best one
    assert mlflow_run.data.tags["easyrec.best_step"] == str(best)
    assert mlflow_run.data.metrics["best/eval/auc"] == pytest.approx(history[best]["eval/auc"])


def test_patience_on_eval_loss_stops_a_pairwise_run_on_the_objective_it_trains(compose_train, tmp_path, monkeypatch):
    # the run: loss=pairwise_logistic data.features.session=session early_stopping.monitor=eval/loss
    overrides = [
        "loss=pairwise_logistic",
        "data.features.session=session",
        "early_stopping=patience",
        "early_stopping.monitor=eval/loss",
        "early_stopping.mode=min",
        "early_stopping.patience=1",
        "optimizer.lr=0.05",
        "trainer.monitor=eval/loss",
        "trainer.monitor_mode=min",
    ]
    mlflow_run, state = run(compose_train, tmp_path, monkeypatch, *overrides)
    history = state["history"]
    steps = sorted(history)
    best = min(steps, key=lambda s: history[s]["eval/loss"])
    assert steps[-1] == best + 5 < 110  # one evaluation without a lower eval/loss, then the stop
    assert history[steps[-1]]["eval/loss"] >= history[best]["eval/loss"]
    assert "eval/loss" in mlflow_run.data.tags["easyrec.stop_reason"]
    assert mlflow_run.data.metrics["best/eval/loss"] == pytest.approx(history[best]["eval/loss"])


def test_divergence_stops_on_a_loss_above_the_limit(compose_train, tmp_path, monkeypatch):
    overrides = ["early_stopping=divergence", "early_stopping.max_loss=0.01"]
    mlflow_run, state = run(compose_train, tmp_path, monkeypatch, *overrides)
    assert state["step"] == 5  # the first logging window
    assert "train/loss" in mlflow_run.data.tags["easyrec.stop_reason"]


def test_a_custom_function_stops_when_it_says_so(compose_train, tmp_path, monkeypatch):
    overrides = ["early_stopping=custom", "early_stopping.params.threshold=0.5"]
    mlflow_run, state = run(compose_train, tmp_path, monkeypatch, *overrides)
    history = state["history"]
    assert state["step"] == min(step for step, m in history.items() if m["eval/auc"] > 0.5) == max(history)
    assert mlflow_run.info.status == "FINISHED" and "eval/auc" in mlflow_run.data.tags["easyrec.stop_reason"]


def test_several_rules_name_the_one_that_stopped(compose_train, tmp_path, monkeypatch):
    (tmp_path / "STOP").touch()
    overrides = ["early_stopping=several", f"early_stopping.rules.stop_file.path={tmp_path}/STOP"]
    mlflow_run, state = run(compose_train, tmp_path, monkeypatch, *overrides)
    assert state["step"] == 10
    assert mlflow_run.data.tags["easyrec.stop_reason"].startswith("stop_file: ")


def test_a_monitor_that_does_not_exist_lists_the_metrics(compose_train, tmp_path):
    from easyrec.errors import ConfigError

    with pytest.raises(ConfigError, match="early_stopping.monitor=eval/aux: no such metric; the metrics are: eval/auc"):
        train(
            compose_train(*SMALL, "early_stopping=patience", "early_stopping.monitor=eval/aux", "logger=none"), tmp_path
        )
