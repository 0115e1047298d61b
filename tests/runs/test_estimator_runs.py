"""The estimator's options end to end: trainer.ema, keep_best_n, checkpoint_every_epoch and eval_max_rows in a real
run, and a checkpoint's averaged weights used by ``easyrec evaluate`` (and so predict and export)."""

from __future__ import annotations

import json

import pytest
import torch

from easyrec.checkpoints import load_checkpoint
from easyrec.errors import ConfigError
from easyrec.run import train
from easyrec.saved_run import SavedRun
from tests.conftest import QUICK

pytestmark = pytest.mark.slow
QUIET = ["logger=none", "trainer.progress_bar=false"]


def test_ema_best_n_and_epoch_checkpoints_in_a_run(compose_train, tmp_path):
    options = ["trainer.ema.decay=0.9", "trainer.keep_best_n=2", "trainer.checkpoint_every_epoch=true"]
    cfg = compose_train(*options, "trainer.max_epochs=2", "trainer.restore_best=false", *QUICK, *QUIET)
    train(cfg, tmp_path)  # 22 steps per epoch
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"eval/auc", "eval/raw/auc", "eval/raw/logloss"} <= set(metrics)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert names == ["best-000000022.pt", "best-000000044.pt", "best.pt", "step-000000022.pt", "step-000000044.pt"]
    # the latest step checkpoint evaluates with its averaged weights: the run's last eval/auc, not eval/raw/auc
    evaluated = SavedRun.load(tmp_path, which="latest").evaluate()
    assert evaluated["eval/auc"] == pytest.approx(metrics["eval/auc"], abs=1e-6)
    assert evaluated["eval/auc"] != pytest.approx(metrics["eval/raw/auc"], abs=1e-6)


def test_eval_max_rows_evaluates_fewer_rows(compose_train, tmp_path):
    cfg = compose_train("trainer.max_steps=5", "trainer.eval_max_rows=300", *QUICK, *QUIET)
    train(cfg, tmp_path)
    whole = SavedRun.load(tmp_path, which="latest").evaluate()  # the whole eval split: 600 rows
    assert load_checkpoint(tmp_path)["metrics"]["eval/auc"] != pytest.approx(whole["eval/auc"], abs=1e-6)


def test_fp16_on_the_cpu_is_refused_in_one_line(compose_train, tmp_path):
    cfg = compose_train("trainer.precision=fp16", "trainer.device=cpu", *QUICK, *QUIET)
    with pytest.raises(ConfigError, match="^trainer.precision=fp16: needs a CUDA GPU"):
        train(cfg, tmp_path)


def test_ema_under_ddp_every_worker_evaluates_the_same_averaged_weights(easyrec_main, tmp_path):
    """2 gloo workers each evaluate their share of the eval rows with their own average: the metrics they gather
    are those of one process evaluating the main worker's averaged weights, so the workers' averages agree."""
    run = tmp_path / "run"
    code, _, err = easyrec_main(
        "train",
        *QUICK,
        *QUIET,
        "data.eval_batch_size=128",
        "distributed=ddp",
        "distributed.nproc_per_node=2",
        "trainer.max_steps=4",
        "trainer.ema.decay=0.5",
        f"hydra.run.dir={run}",
    )
    assert code == 0, err
    metrics = load_checkpoint(run)["metrics"]
    alone = SavedRun.load(run, which="latest").evaluate()
    assert alone == pytest.approx({k: v for k, v in metrics.items() if "/raw/" not in k}, abs=1e-6)
    assert metrics["eval/auc"] != pytest.approx(metrics["eval/raw/auc"], abs=1e-6)


def test_ziln_return_log_pred_value_predicts_the_log_of_the_expected_value(compose_train, tmp_path):
    cfg = compose_train("experiment=ltv", "loss.return_log_pred_value=true", "trainer.max_steps=3", *QUICK, *QUIET)
    train(cfg, tmp_path)
    logged, plain = (
        SavedRun.load(tmp_path, [f"loss.return_log_pred_value={value}"], which="latest") for value in ("true", "false")
    )
    batch = next(iter(plain.data.eval_batches()))
    [log_value], [value] = logged.predict(batch), plain.predict(batch)
    assert torch.allclose(log_value.exp(), value, rtol=1e-5)
    # the run's regression metrics compare that log with the raw labels, as EasyRec's do
    assert logged.evaluate()["eval/rmse"] != pytest.approx(plain.evaluate()["eval/rmse"])
