"""WeightedLosses: several losses on one output with fixed, uncertainty or random weights."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from easyrec.losses import BinaryCrossEntropy, L2Loss, ListwiseRankLoss, PairwiseLogisticLoss, WeightedLosses
from easyrec.optim import attach_loss_parameters, build_optimizer

LOGITS = torch.tensor([0.3, -1.2, 2.0, 0.1, -0.4])
LABELS = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
SESSIONS = torch.tensor([7, 7, 7, 9, 9])


def test_fixed_is_the_weighted_sum_of_the_terms():
    bce, pairwise = BinaryCrossEntropy(), PairwiseLogisticLoss()
    loss = WeightedLosses({"bce": {"loss": bce, "weight": 1.0}, "pair": {"loss": pairwise, "weight": 0.25}})
    expected = bce(LOGITS, LABELS) + 0.25 * pairwise(LOGITS, LABELS, sessions=SESSIONS)
    torch.testing.assert_close(loss(LOGITS, LABELS, sessions=SESSIONS), expected)
    logged = loss.log_values()
    assert logged["train/loss/pair"] == pytest.approx(float(pairwise(LOGITS, LABELS, sessions=SESSIONS)))
    assert "train/loss_weight/bce" not in logged


def test_uncertainty_learns_a_weight_per_flagged_term_and_halves_l2():
    bce, l2 = BinaryCrossEntropy(), L2Loss()
    loss = WeightedLosses(
        {"bce": {"loss": bce, "learn_weight": True}, "l2": {"loss": l2, "learn_weight": True}}, strategy="uncertainty"
    )
    with torch.no_grad():
        loss.log_vars["bce"].fill_(0.5)
        loss.log_vars["l2"].fill_(-0.2)
    expected = math.exp(-0.5) * bce(LOGITS, LABELS) + 0.25 + 0.5 * math.exp(0.2) * l2(LOGITS, LABELS) + 0.5 * -0.2
    torch.testing.assert_close(loss(LOGITS, LABELS), expected)
    assert loss.log_values()["train/loss_weight/bce"] == pytest.approx(math.exp(-0.5))
    loss(LOGITS, LABELS).backward()
    assert loss.log_vars["bce"].grad is not None and loss.log_vars["l2"].grad is not None


def test_random_weights_sum_to_one_in_training_and_are_even_in_eval():
    torch.manual_seed(0)
    loss = WeightedLosses({"a": {"loss": BinaryCrossEntropy()}, "b": {"loss": L2Loss()}}, strategy="random")
    loss(LOGITS, LABELS)
    drawn = [loss.log_values()[f"train/loss_weight/{n}"] for n in "ab"]
    assert sum(drawn) == pytest.approx(1.0) and drawn[0] != pytest.approx(0.5)
    loss.eval()
    expected = 0.5 * BinaryCrossEntropy()(LOGITS, LABELS) + 0.5 * L2Loss()(LOGITS, LABELS)
    torch.testing.assert_close(loss(LOGITS, LABELS), expected)


def test_label_and_session_needs_come_from_the_terms():
    mixed = WeightedLosses({"rank": {"loss": ListwiseRankLoss()}, "bce": {"loss": BinaryCrossEntropy()}})
    assert mixed.label_values == (0.0, 1.0) and mixed.requires_sessions
    ranking = WeightedLosses({"pair": {"loss": PairwiseLogisticLoss()}})
    assert ranking.label_values is None and not ranking.requires_sessions


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"losses": {"a": {"loss": L2Loss()}}, "strategy": "mean"}, "strategy=mean: must be one of"),
        ({"losses": {}}, "losses: give at least one"),
        ({"losses": {"a": {"loss": L2Loss(), "learn_weight": True}}}, "losses.a.learn_weight: needs strategy=uncert"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WeightedLosses(**kwargs)


def test_learned_loss_weights_are_trained_with_the_model():
    model = torch.nn.Linear(3, 1)
    loss = WeightedLosses({"bce": {"loss": BinaryCrossEntropy(), "learn_weight": True}}, strategy="uncertainty")
    optimizer = build_optimizer(partial(torch.optim.SGD, lr=0.5), model)
    attach_loss_parameters(optimizer, loss)
    assert optimizer.param_groups[-1]["group"] == "loss"
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,)).float()
    loss(model(x).squeeze(1), y).backward()
    optimizer.step()
    assert loss.log_vars["bce"].item() != 0.0
