"""Every optimizer option trains DeepFM (Wide&Deep for wide_deep) on the synthetic data to a useful AUC."""

from __future__ import annotations

import pytest

from easyrec.run import train
from tests.conftest import options

# about 3 s per option; one torch thread: xdist runs two of these at once on two cores
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# What an option needs besides itself: the wide_deep optimizer steps the two parts of Wide&Deep.
NEEDS = {"wide_deep": ["model=wide_deep"]}
# Every option of conf/optimizer/: a new one is tested here as soon as its YAML exists.
OPTIONS = [[*NEEDS.get(option, []), f"optimizer={option}"] for option in options("optimizer")]
# 8-dim embeddings (default 16): a quarter less time, the dense optimizers updating whole tables every step; eval
# AUCs measured 0.672 (sparse_dense; 0.684 with 16) to 0.728, sgd 0.676 and rmsprop 0.675 as with 16
QUICK = [
    "data.num_rows=300000",
    "model.hidden_units=[64]",
    "model.embedding_dim=8",
    "trainer.max_steps=250",
    "logger=none",
]


def test_what_an_option_needs_is_for_an_option():
    assert set(NEEDS) <= set(options("optimizer"))


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o[-1])
def test_every_optimizer_option_trains(compose_train, tmp_path, option):
    cfg = compose_train(*option, *QUICK, "trainer.progress_bar=false")
    auc = train(cfg, tmp_path)
    assert auc > 0.65, option
