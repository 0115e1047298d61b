"""hparams_search=optuna: the search space, a study that a second command resumes, pruning, bad input."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_module
from mlflow import MlflowClient

from easyrec.config import validate
from easyrec.errors import ConfigError
from easyrec.sweeps.search_space import SearchSpace
from hydra_plugins.easyrec_sweeper.optuna_sweeper import SPACE_ATTR, check_study
from tests.conftest import QUICK, compose_config

TRIALS = [
    *QUICK,
    "data.num_rows=2000",
    "trainer.max_steps=6",
    "trainer.eval_every_n_steps=3",
    "trainer.progress_bar=false",
    "trainer.num_threads=1",
]
# Prunes every trial at its first evaluation: no AUC of these runs reaches 0.99.
CERTAIN_PRUNING = [
    "~early_stopping.pruner",
    "+early_stopping.pruner={_target_: optuna.pruners.ThresholdPruner, lower: 0.99}",
]


def study(root: Path) -> optuna.Study:
    return optuna.load_study(study_name="deepfm", storage=f"sqlite:///{root / 'optuna.db'}")


# ---------------------------------------------------------------------- the search space


def test_the_shipped_search_composes_with_its_sweeper_and_pruning_rule():
    with initialize_config_module(config_module="easyrec.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.easyrec_sweeper.optuna_sweeper.OptunaSweeper"
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.early_stopping._target_ == "easyrec.early_stopping.PruneTrial"
    space = SearchSpace(dict(cfg.hydra.sweeper.params))
    assert space.keys() == ["optimizer.lr", "model.embedding_dim", "model.dropout"]
    validate(compose_config("hparams_search=optuna"))


def test_a_trial_samples_every_key():
    space = SearchSpace(
        {
            "optimizer": {"type": "categorical", "choices": ["adam", "adagrad"]},
            "model": {"embedding_dim": {"type": "int", "low": 4, "high": 16, "step": 4}},
            "optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        }
    )
    trial = optuna.create_study().ask()
    overrides = dict(o.split("=") for o in space.overrides(trial))
    assert overrides["optimizer"] in ("adam", "adagrad")
    assert int(overrides["model.embedding_dim"]) in (4, 8, 12, 16)
    assert 1e-4 <= float(overrides["optimizer.lr"]) <= 1e-2
    assert space.corner_overrides() == [
        ["optimizer=adam", "model.embedding_dim=4", "optimizer.lr=0.0001"],
        ["optimizer=adagrad", "model.embedding_dim=16", "optimizer.lr=0.01"],
    ]


@pytest.mark.parametrize(
    "params,message",
    [
        ({"optimizer.lr": {"type": "float", "low": 0.1, "high": 0.01}}, "optimizer.lr: low=0.1 > high=0.01"),
        ({"optimizer.lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "optimizer.lr: low=0 must be > 0"),
        ({"optimizer.lr": {"type": "uniform", "low": 0, "high": 1}}, "optimizer.lr.type=uniform: must be one of"),
        ({"optimizer.lr": {"type": "float", "low": 0, "hi": 1}}, "optimizer.lr: unknown key hi for type float"),
        ({"optimizer": {"type": "categorical", "choices": []}}, "optimizer.choices: give a non-empty list"),
        ({"model.embedding_dim": {"type": "int", "low": 4.5, "high": 8}}, "model.embedding_dim: low=4.5 and high=8"),
        ({}, "hydra.sweeper.params: empty"),
    ],
)
def test_an_invalid_search_space_names_the_key(params, message):
    with pytest.raises(ConfigError) as error:
        SearchSpace(params)
    assert message in str(error.value)
    assert str(error.value).startswith("hydra.sweeper.params")


def test_a_study_of_another_space_or_direction_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = SearchSpace({"optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-2}})
    other = SearchSpace({"optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2}})
    check_study(storage, "s", space, "maximize")  # no study yet
    optuna.create_study(study_name="s", storage=storage, direction="maximize").set_user_attr(
        SPACE_ATTR, space.to_json()
    )
    check_study(storage, "s", space, "maximize")
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.study_name=s: .* searches another space \(differs in opt"):
        check_study(storage, "s", other, "maximize")
    with pytest.raises(ConfigError, match="is to maximize, this search would minimize"):
        check_study(storage, "s", space, "minimize")


# ---------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_study_is_pruned_then_resumed_by_a_second_command(easyrec_main, tmp_path, monkeypatch, mlflow_store):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = easyrec_main(
        "train", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *CERTAIN_PRUNING, *TRIALS
    )
    assert code == 0, stderr
    assert [t.state.name for t in study(tmp_path).trials] == ["PRUNED", "PRUNED"]
    # the second command: the same study, median pruning that needs finished trials first
    code, stdout, stderr = easyrec_main("train", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *TRIALS)
    assert code == 0, stderr
    trials = study(tmp_path).trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED", "COMPLETE", "COMPLETE"]
    assert [t.intermediate_values for t in trials[:2]] == [{3: t.intermediate_values[3]} for t in trials[:2]]
    assert all(set(t.params) == {"optimizer.lr", "model.embedding_dim", "model.dropout"} for t in trials)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("easyrec").experiment_id])
    parents = [run for run in runs if "easyrec.sweep.dir" in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(parents) == 2 and len(children) == 4
    # the search ends naming its best trial and the command to compare its trials
    second = max(parents, key=lambda run: run.info.start_time)
    best = second.data.tags["easyrec.sweep.best_run_name"]
    assert f"best of 2 jobs: {best} (eval/auc " in stdout and best.startswith(("#2 ", "#3 "))
    assert stdout.rstrip().endswith(f"compare the runs: easyrec compare {second.info.run_id}")
    pruned = [run for run in children if run.data.tags.get("easyrec.stop_reason", "").startswith("pruned by Optuna")]
    assert len(pruned) == 2
    assert all(run.data.metrics["train/steps"] == 3 for run in pruned)
    # children are numbered as their trials, across the two commands
    assert sorted(run.info.run_name.split(" ")[0] for run in children) == ["#0", "#1", "#2", "#3"]
    assert all(run.data.tags["easyrec.sweep.study_name"] == "deepfm" for run in parents)
    results = sorted(tmp_path.rglob("optimization_results.yaml"))
    assert len(results) == 2 and "best_params" in results[1].read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides,message",
    [
        (["hydra.sweeper.params.optimizer.lr.low=0.1"], "hydra.sweeper.params.optimizer.lr: low=0.1 > high=0.01"),
        (
            ["+hydra.sweeper.params.optimizer.lrr={type: float, low: 0.1, high: 0.2}"],
            "hydra.sweeper.params.optimizer.lrr: no such key or config group in the config",
        ),
        (["optimizer.lr=0.1,0.2"], "optimizer.lr=0.1,0.2: a sweep on the command line; an Optuna search takes keys"),
        (["hydra.sweeper.params.model.dropout.high=0.5"], "hydra.sweeper.study_name=deepfm: the study in sqlite:///"),
        (["hydra.sweeper.n_jobs=0"], "hydra.sweeper.n_jobs=0: must be an integer >= 1"),
    ],
)
def test_bad_searches_start_nothing(easyrec_main, tmp_path, monkeypatch, overrides, message):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with initialize_config_module(config_module="easyrec.conf", version_base="1.3"):
        params = compose(config_name="train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    shipped = SearchSpace(dict(params.hydra.sweeper.params))
    optuna.create_study(study_name="deepfm", storage=storage, direction="maximize").set_user_attr(
        SPACE_ATTR, shipped.to_json()
    )
    code, _, stderr = easyrec_main("train", "hparams_search=optuna", *overrides, *TRIALS)
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"easyrec train: error: {message}"), lines
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "outputs").exists()
    assert study(tmp_path).trials == []
