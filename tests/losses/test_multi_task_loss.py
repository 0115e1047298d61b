"""MultiTaskLoss: one loss per task, each on its own output columns and label column."""

from __future__ import annotations

import math

import pytest
import torch

from easyrec.losses import (
    BinaryCrossEntropy,
    KLDivergenceLoss,
    L2Loss,
    ListwiseRankLoss,
    MultiTaskLoss,
    OrderCalibrateLoss,
    ZILNLoss,
)

torch.manual_seed(0)
OUTPUTS = torch.randn(6, 5)
LABELS = torch.tensor(
    [[1.0, 1.0, 3.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 8.0]]
)
COLUMNS = ["click", "buy", "value"]
WEIGHTS = torch.tensor([1.0, 2.0, 0.0, 1.0, 1.0, 0.5])


def three_tasks(**kwargs) -> MultiTaskLoss:
    return MultiTaskLoss(
        {
            "ctr": {"loss": BinaryCrossEntropy(), "label": "click"},
            "cvr": {"loss": BinaryCrossEntropy(), "label": "buy", "weight": 0.5},
            "ltv": {"loss": ZILNLoss(), "label": "value", "weight": 0.1},
        },
        label_columns=COLUMNS,
        **kwargs,
    )


def test_fixed_weights_each_task_on_its_columns_and_label():
    loss = three_tasks()
    assert loss.num_outputs == 5 and loss.task_outputs == (1, 1, 3)
    bce, ziln = BinaryCrossEntropy(), ZILNLoss()
    expected = (
        bce(OUTPUTS[:, 0], LABELS[:, 0], WEIGHTS)
        + 0.5 * bce(OUTPUTS[:, 1], LABELS[:, 1], WEIGHTS)
        + 0.1 * ziln(OUTPUTS[:, 2:5], LABELS[:, 2], WEIGHTS)
    )
    torch.testing.assert_close(loss(OUTPUTS, LABELS, WEIGHTS), expected)
    logged = loss.log_values()
    assert logged["train/loss/cvr"] == pytest.approx(float(bce(OUTPUTS[:, 1], LABELS[:, 1], WEIGHTS)))
    assert set(logged) == {"train/loss/ctr", "train/loss/cvr", "train/loss/ltv"}


def test_a_task_can_share_another_tasks_output_for_distillation():
    loss = MultiTaskLoss(
        {
            "ctr": {"loss": BinaryCrossEntropy(), "label": "click"},
            "distill": {"loss": KLDivergenceLoss(), "label": "teacher", "output": "ctr"},
        },
        label_columns=["click", "teacher"],
    )
    assert loss.num_outputs == 1 and loss.task_outputs == (1,)
    logits, labels = torch.randn(5), torch.tensor([[1, 0.9], [0, 0.2], [1, 0.6], [0, 0.1], [0, 0.4]])
    expected = BinaryCrossEntropy()(logits, labels[:, 0]) + KLDivergenceLoss()(logits, labels[:, 1])
    torch.testing.assert_close(loss(logits, labels), expected)
    assert [h.columns for h in loss.heads()] == [(0, 1), (0, 1)]


def test_uncertainty_learns_a_weight_per_flagged_task_and_halves_l2():
    loss = MultiTaskLoss(
        {
            "ctr": {"loss": BinaryCrossEntropy(), "label": "click", "learn_weight": True},
            "value": {"loss": L2Loss(), "label": "value", "learn_weight": True},
        },
        label_columns=COLUMNS,
        strategy="uncertainty",
    )
    with torch.no_grad():
        loss.weighting.log_vars["ctr"].fill_(0.4)
        loss.weighting.log_vars["value"].fill_(-0.3)
    outputs = OUTPUTS[:, :2]
    bce, l2 = BinaryCrossEntropy()(outputs[:, 0], LABELS[:, 0]), L2Loss()(outputs[:, 1], LABELS[:, 2])
    expected = math.exp(-0.4) * bce + 0.2 + 0.5 * math.exp(0.3) * l2 - 0.15
    total = loss(outputs, LABELS)
    torch.testing.assert_close(total, expected)
    assert loss.log_values()["train/loss_weight/ctr"] == pytest.approx(math.exp(-0.4))
    total.backward()
    assert all(p.grad is not None for p in loss.weighting.log_vars.values())


def test_random_weights_sum_to_one_in_training():
    torch.manual_seed(1)
    loss = three_tasks(strategy="random")
    loss(OUTPUTS, LABELS)
    drawn = [loss.log_values()[f"train/loss_weight/{n}"] for n in ("ctr", "cvr", "ltv")]
    assert sum(drawn) == pytest.approx(1.0)


def test_order_calibration_penalises_a_task_predicted_above_its_upper_task():
    loss = MultiTaskLoss(
        {
            "ctr": {"loss": BinaryCrossEntropy(), "label": "click"},
            "ctcvr": {"loss": BinaryCrossEntropy(), "label": "buy"},
        },
        label_columns=COLUMNS,
        order_calibrate={"ctcvr": ["ctr"]},
        order_calibrate_weight=2.0,
    )
    outputs = torch.tensor([[0.5, 1.5], [1.0, -2.0], [-1.0, 0.0], [2.0, 2.0], [0.0, -1.0], [-3.0, 1.0]])
    plain = BinaryCrossEntropy()(outputs[:, 0], LABELS[:, 0]) + BinaryCrossEntropy()(outputs[:, 1], LABELS[:, 1])
    calibration = OrderCalibrateLoss()(torch.sigmoid(outputs[:, 1]), torch.sigmoid(outputs[:, 0])[:, None])
    assert float(calibration) > 0
    torch.testing.assert_close(loss(outputs, LABELS), plain + 2.0 * calibration)
    assert loss.log_values()["train/loss/order_calibrate"] == pytest.approx(float(calibration))


def test_session_losses_get_the_sessions():
    loss = MultiTaskLoss(
        {"ctr": {"loss": BinaryCrossEntropy(), "label": "click"}, "rank": {"loss": ListwiseRankLoss(), "label": "buy"}},
        label_columns=COLUMNS,
    )
    assert loss.requires_sessions
    sessions = torch.tensor([1, 1, 1, 2, 2, 2])
    expected = BinaryCrossEntropy()(OUTPUTS[:, 0], LABELS[:, 0]) + ListwiseRankLoss()(
        OUTPUTS[:, 1], LABELS[:, 1], sessions=sessions
    )
    torch.testing.assert_close(loss(OUTPUTS[:, :2], LABELS, sessions=sessions), expected)


def test_label_rules_name_each_tasks_column():
    rules = three_tasks().label_rules()
    assert [(r.column, r.values, r.value_range, r.required_by) for r in rules] == [
        ("click", (0.0, 1.0), None, "task ctr: BinaryCrossEntropy"),
        ("buy", (0.0, 1.0), None, "task cvr: BinaryCrossEntropy"),
        ("value", None, (0.0, math.inf), "task ltv: ZILNLoss"),
    ]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            {"tasks": {"ctr": {"loss": BinaryCrossEntropy(), "label": "clik"}}},
            "tasks.ctr.label=clik: not a label column",
        ),
        (
            {"tasks": {"a": {"loss": BinaryCrossEntropy()}, "b": {"loss": L2Loss(), "output": "c"}}},
            "tasks.b.output=c: no such task with its own output",
        ),
        (
            {"tasks": {"a": {"loss": BinaryCrossEntropy(), "learn_weight": True}}},
            "tasks.a.learn_weight: needs strategy=uncertainty",
        ),
        ({"tasks": {"a": {"loss": BinaryCrossEntropy()}}, "order_calibrate": {"a": ["x"]}}, "'x' is not a task"),
        ({"tasks": {}}, "tasks: give at least one"),
        (
            {"tasks": {"cvr": {"loss": BinaryCrossEntropy(), "task_space_indicator": "clicked"}}},
            "tasks.cvr.task_space_indicator=clicked: not a label column",
        ),
        (
            {"tasks": {"cvr": {"loss": BinaryCrossEntropy(), "out_task_space_weight": 0.0}}},
            "out_task_space_weight=0.0: has no effect without a task_space_indicator",
        ),
        (
            {
                "tasks": {
                    "cvr": {"loss": BinaryCrossEntropy(), "task_space_indicator": "click", "in_task_space_weight": -1}
                }
            },
            "in_task_space_weight=-1: must be >= 0",
        ),
    ],
)
def test_bad_task_lists_are_refused_naming_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiTaskLoss(label_columns=COLUMNS, **kwargs)


# ------------------------------------------------------------------ task spaces and per-task sample weights
LN2 = math.log(2.0)
# logits 0, 0, ln 3 on both tasks: BCE is ln 2 at z = 0 (either label) and ln(1 + 3) = 2 ln 2 at z = ln 3, y = 0
SPACE_OUTPUTS = torch.tensor([[0.0, 0.0], [0.0, 0.0], [math.log(3.0), math.log(3.0)]])
SPACE_LABELS = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])  # click, buy
SPACE_WEIGHTS = torch.tensor([1.0, 3.0, 0.5])


def ctr_and_cvr(**cvr) -> MultiTaskLoss:
    return MultiTaskLoss(
        {
            "ctr": {"loss": BinaryCrossEntropy(), "label": "click"},
            "cvr": {"loss": BinaryCrossEntropy(), "label": "buy", **cvr},
        },
        label_columns=["click", "buy"],
    )


@pytest.mark.parametrize(
    "cvr,weights,expected",
    [
        # rows 0 and 2 clicked: (ln 2 + 2 ln 2) / 2 rows of non-zero weight
        ({"task_space_indicator": "click", "out_task_space_weight": 0.0}, None, 1.5 * LN2),
        # times the sample weights 1 and 0.5: (ln 2 + 0.5·2 ln 2) / 2
        ({"task_space_indicator": "click", "out_task_space_weight": 0.0}, SPACE_WEIGHTS, LN2),
        # weights 2, 0.5, 2: (2 ln 2 + 0.5 ln 2 + 2·2 ln 2) / 3
        (
            {"task_space_indicator": "click", "in_task_space_weight": 2.0, "out_task_space_weight": 0.5},
            None,
            6.5 * LN2 / 3,
        ),
        # the sample weights 1, 3, 0.5: (ln 2 + 3 ln 2 + 0.5·2 ln 2) / 3
        ({}, SPACE_WEIGHTS, 5 * LN2 / 3),
        # without them: (ln 2 + ln 2 + 2 ln 2) / 3
        ({"use_sample_weight": False}, SPACE_WEIGHTS, 4 * LN2 / 3),
        (
            {"use_sample_weight": False, "task_space_indicator": "click", "out_task_space_weight": 0.0},
            SPACE_WEIGHTS,
            1.5 * LN2,
        ),
        # EasyRec's defaults (1 in, 1 out): an indicator alone changes nothing
        ({"task_space_indicator": "click"}, SPACE_WEIGHTS, 5 * LN2 / 3),
    ],
)
def test_a_tasks_rows_are_weighted_by_its_task_space_and_its_use_of_sample_weights(cvr, weights, expected):
    loss = ctr_and_cvr(**cvr)
    total = loss(SPACE_OUTPUTS, SPACE_LABELS, weights)
    logged = loss.log_values()
    assert logged["train/loss/cvr"] == pytest.approx(expected, rel=1e-6)
    # the other task keeps the sample weights or the plain mean; its row 2 (y = 1) costs ln 4 − ln 3
    ln4_3 = math.log(4 / 3)
    ctr = (4 * LN2 + 0.5 * ln4_3) / 3 if weights is not None else (2 * LN2 + ln4_3) / 3
    assert logged["train/loss/ctr"] == pytest.approx(ctr, rel=1e-6)
    assert float(total) == pytest.approx(ctr + expected, rel=1e-6)


def test_a_task_whose_space_is_empty_in_a_batch_adds_zero():
    loss = ctr_and_cvr(task_space_indicator="click", out_task_space_weight=0.0)
    loss(SPACE_OUTPUTS, torch.zeros(3, 2), None)
    assert loss.log_values()["train/loss/cvr"] == 0.0
