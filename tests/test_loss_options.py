"""Every loss option trains DeepFM end to end on the synthetic click data."""

from __future__ import annotations

import pytest

from easyrec.run import train

pytestmark = pytest.mark.slow  # about 4 s per option

LOSSES = ["bce", "focal", "l2", "sigmoid_l2", "f1_reweighted", "pairwise_logistic", "pairwise_hinge", "pairwise_focal"]
QUICK = ["data.num_rows=200000", "model.hidden_units=[64]", "trainer.max_steps=150", "logger=none"]


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_option_trains(compose_train, tmp_path, loss):
    cfg = compose_train(f"loss={loss}", *QUICK, "trainer.progress_bar=false")
    assert train(cfg, tmp_path) > 0.65
