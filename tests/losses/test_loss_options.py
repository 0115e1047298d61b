"""Every loss option trains DeepFM end to end on the synthetic click data."""

from __future__ import annotations

import pytest

from easyrec.errors import ConfigError
from easyrec.run import train
from tests.conftest import options

# about 2 s per option; one torch thread: xdist runs two of these at once on two cores
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# The loss options that need sessions (trained below) or their task's own labels and model (test_task_options.py).
ON_SESSIONS = ["jrc", "listwise_distill", "listwise_rank"]
ON_THEIR_TASK = ["circle", "in_batch_softmax", "infonce", "multi_similarity", "softmax_negative_mining"]
ON_THEIR_TASK += ["kl_distill", "kl_divergence", "multi_task", "order_calibrate", "softmax_ce", "ziln"]
ON_THEIR_TASK += ["soft_bce", "soft_ce"]
# Every other option of conf/loss/ trains on the click labels: a new one is tested here as soon as its YAML exists.
LOSSES = [loss for loss in options("loss") if loss not in ON_SESSIONS + ON_THEIR_TASK]
# 8-dim embeddings: eval AUCs 0.71-0.73 on every option here (pairwise_focal: 0.7249; 0.7254 with the default 16),
# and Adam's dense update of the embedding tables, most of a step's time, halves
QUICK = [
    "data.num_rows=200000",
    "model.hidden_units=[64]",
    "model.embedding_dim=8",
    "trainer.max_steps=150",
    "logger=none",
]


def test_every_loss_option_trains_in_a_test():
    from hydra import compose, initialize_config_module

    from tests.runs.test_task_options import CASES

    with initialize_config_module(config_module="easyrec.conf", version_base="1.3"):
        chosen = [
            compose("train", overrides, return_hydra_config=True).hydra.runtime.choices.loss for overrides, *_ in CASES
        ]
    assert set(ON_THEIR_TASK) <= set(chosen)
    assert sorted(LOSSES + ON_SESSIONS + ON_THEIR_TASK) == options("loss")  # no stale name in the lists above


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_option_trains(compose_train, tmp_path, loss):
    cfg = compose_train(f"loss={loss}", *QUICK, "trainer.progress_bar=false")
    assert train(cfg, tmp_path) > 0.65


def test_listwise_rank_trains_on_sessions_and_reports_gauc(compose_train, tmp_path):
    cfg = compose_train("loss=listwise_rank", "data.features.session=session", "optimized_metric=eval/gauc", *QUICK)
    assert train(cfg, tmp_path) > 0.65


@pytest.mark.parametrize("strategy", ["fixed", "uncertainty"])
def test_jrc_trains_two_logits_on_sessions(compose_train, tmp_path, strategy):
    overrides = ["loss=jrc", f"loss.strategy={strategy}", "data.features.session=session"]
    assert train(compose_train(*overrides, *QUICK), tmp_path) > 0.65


def test_listwise_distill_runs_on_sessions(compose_train, tmp_path):
    # Click labels are not teacher ranks, so this checks the wiring, not the quality: the eval AUC measured (0.5189)
    cfg = compose_train("loss=listwise_distill", "data.features.session=session", "trainer.max_steps=20", *QUICK[:3])
    assert train(cfg, tmp_path) == pytest.approx(0.5189, abs=0.01)


@pytest.mark.parametrize("loss", ["listwise_rank", "listwise_distill", "jrc"])
def test_a_session_loss_without_a_session_column_is_a_config_error(compose_train, tmp_path, loss):
    with pytest.raises(ConfigError, match="works on sessions: name the session column with data.features.session"):
        train(compose_train(f"loss={loss}", *QUICK), tmp_path)


def test_uncertainty_weighting_logs_each_loss_and_its_learned_weight(
    compose_train, mlflow_store, tmp_path, monkeypatch
):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow keeps artifacts under ./mlruns
    uri = mlflow_store
    overrides = ["loss=bce_pairwise", "loss.strategy=uncertainty", "loss.losses.bce.learn_weight=true"]
    cfg = compose_train(*overrides, *QUICK[:4], f"logger.tracking_uri={uri}", "trainer.log_every_n_steps=25")
    train(cfg, tmp_path)
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("easyrec").experiment_id])
    assert {"train/loss/bce", "train/loss/pairwise", "train/loss_weight/bce"} <= set(run.data.metrics)
    weights = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss_weight/bce")]
    assert len(weights) == 6 and weights[-1] != pytest.approx(1.0)  # e^-u moved away from its start
