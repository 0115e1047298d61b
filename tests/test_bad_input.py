"""Bad input that used to get through: non-finite options and data values, out-of-range seeds, an eval split whose
AUC cannot exist, a model larger than the machine's memory, bf16 on a device without native bf16."""

from __future__ import annotations

import pytest

from easyrec.config import validate
from easyrec.errors import ConfigError
from easyrec.optim import LazyAdam


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optimizer.lr=inf"], "optimizer.lr=inf: must be finite in float32"),
        (["optimizer.lr=1e308"], "optimizer.lr=1e+308: must be finite in float32"),
        (["optimizer.lr=nan"], "optimizer.lr=nan: must be finite in float32"),
        (["loss=focal", "loss.gamma=-inf"], "loss.gamma=-inf: must be finite in float32"),
        # a user's own component (no schema) is checked too, at any depth
        (["+model.extra={a:[1.0,inf]}"], "model.extra.a.1=inf: must be finite in float32"),
        (["seed=-1"], "seed=-1: must be in [0, 4294967295]"),
        (["seed=10000000000000000000"], "seed=10000000000000000000: must be in [0, 4294967295]"),
        (["data.seed=4294967296"], "data.seed=4294967296: must be in [0, 4294967295]"),
    ],
)
def test_non_finite_options_and_bad_seeds_are_refused(compose_train, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_train(*overrides))
    assert str(error.value).startswith(message)


def test_largest_seed_and_float32_sized_values_pass(compose_train):
    validate(compose_train("seed=4294967295", "optimizer.lr=3e38"))


def test_optimizers_refuse_an_lr_float32_cannot_hold():
    import torch

    params = [torch.nn.Parameter(torch.zeros(2))]
    for lr in (float("inf"), 1e308):
        with pytest.raises(ValueError, match="must be > 0 and finite in float32"):
            LazyAdam(params, lr=lr)


def test_data_refuses_a_negative_seed():
    from easyrec.data import SyntheticCTRData
    from tests.conftest import CRITEO_FEATURES

    with pytest.raises(ConfigError, match=r"data.seed=-1: must be in \[0, 4294967295\]"):
        SyntheticCTRData(CRITEO_FEATURES, num_rows=200, seed=-1)
