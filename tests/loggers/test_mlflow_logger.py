"""flatten_params, run_name_from and MLflowLogger against a throwaway SQLite tracking store."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from easyrec import __version__
from easyrec.loggers import MLflowLogger
from easyrec.loggers.mlflow import MAX_KEY, MAX_PARAM_VALUE, MAX_RUN_NAME, flatten_params, run_name_from

CONFIG = {
    "seed": 0,
    "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001, "betas": [0.9, 0.999]},
    "model": {"_target_": "easyrec.models.DeepFM", "hidden_units": [64, 32], "dropout": 0.0},
    "data": {
        "features": {
            "dense": [{"names": ["I1", "I2"], "transform": "log1p"}],
            "categorical": [{"names": ["C1"], "num_buckets": None}],
        }
    },
}

# ---------------------------------------------------------------------- flatten_params


def test_flatten_params():
    assert flatten_params(CONFIG) == {
        "seed": "0",
        "optimizer": "torch.optim.Adam",
        "optimizer.lr": "0.001",
        "optimizer.betas": "[0.9, 0.999]",
        "model": "easyrec.models.DeepFM",
        "model.hidden_units": "[64, 32]",
        "model.dropout": "0.0",
        "data.features.dense.0.names": "['I1', 'I2']",
        "data.features.dense.0.transform": "log1p",
        "data.features.categorical.0.names": "['C1']",
        "data.features.categorical.0.num_buckets": "None",
    }


def test_flatten_params_drops_every_hydra_key():
    node = {"_target_": "a.B", "_partial_": True, "_convert_": "all", "_recursive_": False, "x": 1}
    assert flatten_params({"node": node}) == {"node": "a.B", "node.x": "1"}


def test_flatten_params_truncates_long_keys_and_values():
    params = flatten_params({"k" * 300: "v" * 7000})
    [(key, value)] = params.items()
    assert key == "k" * MAX_KEY
    assert value == "v" * MAX_PARAM_VALUE


# ---------------------------------------------------------------------- run_name_from


def test_run_name_from_overrides():
    overrides = ["optimizer=adagrad", "hydra.run.dir=out", "loss=focal", "logger.experiment_name=x"]
    assert run_name_from(overrides) == "optimizer=adagrad,loss=focal"
    assert run_name_from([]) == "defaults"
    assert run_name_from(["hydra.verbose=true"]) == "defaults"
    assert len(run_name_from([f"model.hidden_units=[{i}]" for i in range(200)])) == MAX_RUN_NAME


# ---------------------------------------------------------------------- MLflowLogger


@pytest.fixture
def new_store(tmp_path, monkeypatch) -> str:
    """A tracking URI in ``tmp_path``, which is also the working directory (MLflow puts artifacts in ./mlruns); the
    store does not exist yet: the logger creates it."""
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture
def store(mlflow_store, new_store) -> str:
    """The same, made an empty store in advance: a copy, not MLflow's seconds of creating its tables."""
    return new_store


def start_logger(store: str, output_dir: Path, asynchronous: bool = False, **kwargs) -> MLflowLogger:
    logger = MLflowLogger(tracking_uri=store, experiment_name="tests", asynchronous=asynchronous, **kwargs)
    logger.start(CONFIG, ["optimizer=adam", "hydra.run.dir=out"], output_dir)
    return logger


def history(logger: MLflowLogger, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in logger.client.get_metric_history(logger.run_id, key))


def test_a_finished_run_has_params_metrics_tags_and_artifacts(new_store, tmp_path):
    store = new_store
    output_dir = tmp_path / "outputs" / "run"
    (output_dir / ".hydra").mkdir(parents=True)
    (output_dir / ".hydra" / "overrides.yaml").write_text("- optimizer=adam\n")
    choices = {"optimizer": "adam", "data/features": "criteo", "experiment": None, "hydra/launcher": "basic"}
    (output_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    (output_dir / "train.log").write_text("hello\n")

    logger = start_logger(store, output_dir)
    logger.log_metrics({"train/loss": 0.7, "train/lr": 1e-3}, step=50)
    logger.log_metrics({"train/loss": 0.5, "train/lr": 1e-3}, step=100)
    logger.log_metrics({"eval/auc": 0.75}, step=100)
    logger.log_artifact(output_dir / "train.log")
    logger.set_tags({"easyrec.stop_reason": "plateau"})
    logger.finish("FINISHED")

    run = logger.client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "optimizer=adam"
    assert run.info.experiment_id == logger.client.get_experiment_by_name("tests").experiment_id
    assert run.data.params == flatten_params(CONFIG)
    assert run.data.metrics == {"train/loss": 0.5, "train/lr": 1e-3, "eval/auc": 0.75}
    assert history(logger, "train/loss") == [(50, 0.7), (100, 0.5)]
    assert history(logger, "eval/auc") == [(100, 0.75)]
    tags = run.data.tags
    assert tags["easyrec.overrides"] == "optimizer=adam hydra.run.dir=out"
    assert tags["easyrec.version"] == __version__
    assert tags["easyrec.output_dir"] == str(output_dir)
    assert tags["easyrec.stop_reason"] == "plateau"
    assert json.loads(tags["easyrec.choices"]) == {"optimizer": "adam", "data/features": "criteo"}  # Hydra's left out

    artifacts = {a.path for a in logger.client.list_artifacts(logger.run_id)}
    assert artifacts == {"config", "hydra", "train.log"}
    hydra_files = [a.path for a in logger.client.list_artifacts(logger.run_id, "hydra")]
    assert hydra_files == ["hydra/hydra.yaml", "hydra/overrides.yaml"]
    config_file = logger.client.download_artifacts(logger.run_id, "config/resolved.yaml", str(tmp_path))
    assert yaml.safe_load(Path(config_file).read_text()) == CONFIG
    assert (tmp_path / "mlruns").is_dir()  # artifacts went to the working directory, i.e. tmp_path


@pytest.mark.parametrize(("kind", "sent"), [("best", "best.pt"), ("latest", "step-000000020.pt"), ("none", None)])
def test_log_checkpoint_sends_the_runs_checkpoint_of_that_kind_at_the_end(store, tmp_path, kind, sent):
    output_dir = tmp_path / "run"
    (output_dir / "checkpoints").mkdir(parents=True)
    for name in ("step-000000010.pt", "step-000000020.pt", "best.pt"):
        (output_dir / "checkpoints" / name).write_bytes(name.encode())
    logger = start_logger(store, output_dir, log_checkpoint=kind)
    logger.finish("FINISHED")
    sent_files = [a.path for a in logger.client.list_artifacts(logger.run_id, "checkpoints")]
    assert sent_files == ([f"checkpoints/{sent}"] if sent else [])
    host = socket.gethostname()
    assert logger.client.get_run(logger.run_id).data.tags["easyrec.host"] == host  # where the directory is


def test_a_run_without_hydras_files_has_no_choices_tag(store, tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "hydra.yaml").write_text("hydra: [not, a, mapping\n")
    logger = start_logger(store, tmp_path)
    assert "easyrec.choices" not in logger.client.get_run(logger.run_id).data.tags


def test_a_second_run_reuses_the_experiment(store, tmp_path):
    first = start_logger(store, tmp_path, run_name="first")
    first.finish("FINISHED")
    second = start_logger(store, tmp_path, run_name="second")
    second.finish("FINISHED")
    runs = second.client.search_runs([second.client.get_experiment_by_name("tests").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["first", "second"]


@pytest.mark.parametrize("status", ["FAILED", "KILLED"])
def test_finish_sets_the_status(store, tmp_path, status):
    logger = start_logger(store, tmp_path)
    logger.log_metrics({"train/loss": 0.7}, step=1)
    logger.finish(status)
    run = logger.client.get_run(logger.run_id)
    assert run.info.status == status
    assert run.info.end_time is not None
    assert history(logger, "train/loss") == [(1, 0.7)]


def test_asynchronous_metrics_are_all_there_after_finish(store, tmp_path):
    logger = start_logger(store, tmp_path, asynchronous=True)
    for step in range(1, 31):
        logger.log_metrics({"train/loss": 1.0 / step, "train/lr": 0.01}, step)
    logger.finish("FINISHED")
    assert history(logger, "train/loss") == [(step, pytest.approx(1.0 / step)) for step in range(1, 31)]
    assert len(history(logger, "train/lr")) == 30
    assert logger.client.get_run(logger.run_id).info.status == "FINISHED"


def test_a_logger_that_never_started_ignores_the_rest(tmp_path):
    logger = MLflowLogger(tracking_uri="sqlite:///unused.db")
    logger.log_artifact(tmp_path)
    logger.set_tags({"a": "b"})
    logger.finish("FAILED")
    assert logger.run_id is None and logger.client is None


def test_local_store_uris_are_made_absolute_where_the_run_starts(tmp_path, monkeypatch):
    from easyrec.loggers.mlflow import absolute_uri

    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert absolute_uri(f"sqlite:///{tmp_path}/x.db") == f"sqlite:///{tmp_path}/x.db"
    assert absolute_uri("./mlruns") == f"{tmp_path}/mlruns"
    assert absolute_uri("http://mlflow.internal:5000") == "http://mlflow.internal:5000"


def test_view_commands_name_the_store_unless_it_is_the_default_one_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = f"sqlite:///{tmp_path}/mlflow.db"
    other = f"sqlite:///{tmp_path}/my store.db"
    assert MLflowLogger(default).view_commands() == [
        f"mlflow ui --backend-store-uri {default}",
        "easyrec compare easyrec",
    ]
    assert MLflowLogger(other, parent_run_id="3f2c").view_commands() == [
        f"mlflow ui --backend-store-uri '{other}'",
        f"easyrec compare 3f2c --tracking-uri '{other}'",
    ]
    assert MLflowLogger("http://127.0.0.1:5000", experiment_name="ctr").view_commands() == [
        "open http://127.0.0.1:5000 (MLflow's UI)",
        "easyrec compare ctr --tracking-uri http://127.0.0.1:5000",
    ]
