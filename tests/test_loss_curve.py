"""The pinned loss curve: any change to data order, initialization or the training step shows up here.

``easyrec train`` runs in this process on a tiny fixed config, and its first 20 ``train/loss`` values (logged every
step) and its final ``eval/auc`` must equal the numbers stored below, as torchtune's recipe tests do. A change that
is meant to change the numbers updates them in the same commit and says why.
"""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

TINY = [
    "data.num_rows=2000",
    "data.batch_size=64",
    "model.hidden_units=[16]",
    "model.embedding_dim=4",
    "trainer.max_steps=20",
    "trainer.log_every_n_steps=1",
    "trainer.num_threads=1",
    "trainer.progress_bar=false",
    "trainer.device=cpu",
    "trainer.precision=fp32",  # auto would take bf16 on a CPU with AMX
    "seed=7",
    "data.seed=7",
]

# fmt: off
LOSSES = [
    0.6498174667358398, 0.6346728801727295, 0.6444770097732544, 0.5821103453636169, 0.644710898399353,
    0.6052320003509521, 0.6636550426483154, 0.6675722599029541, 0.6641214489936829, 0.6286269426345825,
    0.6133708953857422, 0.6581056714057922, 0.5480036735534668, 0.6105974316596985, 0.6465247869491577,
    0.6884369254112244, 0.619674563407898, 0.6156399846076965, 0.577772319316864, 0.5326920747756958,
]
# fmt: on
EVAL_AUC = 0.4458160083160083  # after 20 steps of 64 rows the model has learnt nothing yet: pinned, not judged


def test_first_twenty_losses_and_the_eval_auc_are_the_pinned_ones(easyrec_main, mlflow_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = easyrec_main("train", *TINY)
    assert code == 0, err
    client = MlflowClient(mlflow_store)
    [run] = client.search_runs([client.get_experiment_by_name("easyrec").experiment_id])
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert [step for step, _ in history] == list(range(1, 21))
    # float32 sums may differ in the last bits between CPUs (AVX2 / AVX-512 kernels): tolerances as torchtune's
    torch.testing.assert_close([loss for _, loss in history], LOSSES, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(run.data.metrics["eval/auc"], EVAL_AUC, rtol=1e-4, atol=1e-4)
