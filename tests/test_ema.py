"""trainer.ema: the average of the dense weights, by hand; its swap, state, names and refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from easyrec.distributed import SingleProcess
from easyrec.ema import EMASettings, WeightAverage, average_of, averaged_weights, raw_name
from easyrec.errors import ConfigError


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(3, 1)
        self.linear = nn.Linear(1, 1, bias=False)


def set_weights(model: Tiny, value: float) -> None:
    with torch.no_grad():
        model.linear.weight.fill_(value)
        model.table.weight.fill_(10 * value)


def test_the_average_of_the_dense_weights_by_hand():
    model = Tiny()
    average = WeightAverage(model, decay=0.5)
    assert average.names == ["linear.weight"]  # the embedding table is not averaged
    for value in (1.0, 3.0, 5.0):  # a = w at the first step, then a ← ½·a + ½·w: 1, 2, 3.5
        set_weights(model, value)
        average.update()
    with average.swapped_in():
        assert model.linear.weight.item() == 3.5
        assert model.table.weight[0].item() == 50.0  # raw
    assert model.linear.weight.item() == 5.0  # the raw weights are back
    state = average.state_dict()
    assert state["weights"]["linear.weight"].item() == 3.5 and int(state["n_averaged"]) == 3


def test_a_restored_average_goes_on_as_the_original():
    model, other = Tiny(), Tiny()
    average, restored = WeightAverage(model, decay=0.9), WeightAverage(other, decay=0.9)
    for value in (1.0, 2.0):
        set_weights(model, value)
        average.update()
    restored.load_state_dict(average.state_dict())
    set_weights(model, 4.0)
    set_weights(other, 4.0)
    average.update()
    restored.update()
    # 1 -> 0.9·1 + 0.1·2 = 1.1 -> 0.9·1.1 + 0.1·4 = 1.39
    assert restored.state_dict()["weights"]["linear.weight"].item() == pytest.approx(1.39)
    weights = [a.state_dict()["weights"]["linear.weight"] for a in (restored, average)]
    assert torch.equal(*weights)


def test_the_averages_of_another_model_are_refused():
    class Other(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(1, 1, bias=False)

    with pytest.raises(ValueError, match="not this model's dense parameters"):
        WeightAverage(Tiny(), 0.9).load_state_dict(WeightAverage(Other(), 0.9).state_dict())


def test_evaluated_gives_the_averaged_metrics_and_the_raw_ones_under_raw():
    model = Tiny()
    average = WeightAverage(model, decay=0.5)
    for value in (1.0, 3.0):
        set_weights(model, value)
        average.update()
    metrics = average.evaluated(lambda: {"eval/w": model.linear.weight.item(), "eval/ctr/w": 0.0})
    assert metrics == {"eval/w": 2.0, "eval/ctr/w": 0.0, "eval/raw/w": 3.0, "eval/raw/ctr/w": 0.0}


def test_raw_names():
    assert raw_name("eval/auc") == "eval/raw/auc"
    assert raw_name("eval/ctr/auc") == "eval/raw/ctr/auc"


def test_a_checkpoints_served_weights_are_the_averaged_ones_once_there_are_some():
    model = {"linear.weight": torch.tensor([5.0]), "table.weight": torch.tensor([50.0])}
    averaged = {"weights": {"linear.weight": torch.tensor([3.5])}, "n_averaged": torch.tensor(3)}
    assert averaged_weights({"model": model, "ema": averaged})["linear.weight"].item() == 3.5
    assert averaged_weights({"model": model, "ema": averaged})["table.weight"].item() == 50.0
    assert averaged_weights({"model": model, "ema": {**averaged, "n_averaged": torch.tensor(0)}}) == model
    assert averaged_weights({"model": model}) == model  # no ema, or best.pt (already averaged)


def test_settings_and_refusals():
    assert average_of(Tiny(), None, SingleProcess()) is None
    assert average_of(Tiny(), {"decay": None}, SingleProcess()) is None
    assert isinstance(average_of(Tiny(), {"decay": 0.99}, SingleProcess()), WeightAverage)
    with pytest.raises(ValueError, match=r"^decay=1.0: must be in \(0, 1\)$"):
        EMASettings(decay=1.0)

    class Sharded(SingleProcess):
        sharded = True

    with pytest.raises(ConfigError, match=r"^trainer.ema.decay=0.99: not with distributed=model_parallel"):
        average_of(Tiny(), {"decay": 0.99}, Sharded())


def test_model_parallel_refuses_the_average_in_one_line_before_any_worker_starts(easyrec_main, tmp_path):
    pytest.importorskip("torchrec")
    code, _, err = easyrec_main(
        "train",
        "distributed=model_parallel",
        "optimizer=row_wise_adagrad",
        "trainer.ema.decay=0.99",
        "logger=none",
        f"hydra.run.dir={tmp_path}",
    )
    assert code == 2 and "starting" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("easyrec train: error: trainer.ema.decay=0.99: not with distributed=model_parallel")
