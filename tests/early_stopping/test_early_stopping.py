"""StopOnPlateau and NeverStop."""

from __future__ import annotations

import math

import pytest

from easyrec.early_stopping import EarlyStopping, NeverStop, StopOnPlateau
from easyrec.errors import ConfigError


def feed(rule: EarlyStopping, values: list[float], monitor: str = "eval/auc") -> list[bool]:
    """``should_stop`` after each value, at steps 100, 200, ..."""
    return [rule.should_stop({monitor: v, "eval/other": 0.0}, step=100 * (i + 1)) for i, v in enumerate(values)]


def test_max_mode_stops_after_patience_evaluations_without_improvement():
    rule = StopOnPlateau(monitor="eval/auc", mode="max", patience=2)
    assert feed(rule, [0.70, 0.72, 0.71, 0.72]) == [False, False, False, True]
    assert rule.best == 0.72 and rule.best_step == 200
    assert rule.bad_evaluations == 2


def test_min_mode():
    rule = StopOnPlateau(monitor="eval/logloss", mode="min", patience=2)
    assert feed(rule, [0.50, 0.45, 0.46, 0.44, 0.44, 0.45], monitor="eval/logloss") == [
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    assert rule.best == 0.44 and rule.best_step == 400


def test_an_improvement_resets_the_count():
    rule = StopOnPlateau(mode="max", patience=3)
    assert feed(rule, [0.5, 0.4, 0.4, 0.6, 0.5, 0.5]) == [False] * 6
    assert rule.bad_evaluations == 2 and rule.best == 0.6
    assert feed(rule, [0.5]) == [True]


@pytest.mark.parametrize(
    "mode, values, expected_best",
    [
        ("max", [0.70, 0.705, 0.709], 0.70),  # +0.009 is not more than min_delta 0.01
        ("max", [0.70, 0.711], 0.711),
        ("min", [0.50, 0.495, 0.491], 0.50),
        ("min", [0.50, 0.489], 0.489),
    ],
)
def test_min_delta(mode, values, expected_best):
    rule = StopOnPlateau(mode=mode, patience=10, min_delta=0.01)
    feed(rule, values)
    assert rule.best == expected_best
    assert rule.bad_evaluations == (0 if expected_best == values[-1] else len(values) - 1)


def test_equal_value_is_not_an_improvement():
    rule = StopOnPlateau(mode="max", patience=1)
    assert feed(rule, [0.7, 0.7]) == [False, True]


def test_nan_counts_as_no_improvement():
    rule = StopOnPlateau(mode="min", patience=2)
    assert feed(rule, [0.5, math.nan, math.nan]) == [False, False, True]
    assert rule.best == 0.5


def test_nan_from_the_first_evaluation_stops_with_a_reason():
    rule = StopOnPlateau(monitor="eval/logloss", mode="min", patience=1)
    assert feed(rule, [math.nan], monitor="eval/logloss") == [True]
    assert rule.reason == "eval/logloss has not improved for 1 evaluation (no finite value yet)"
    assert rule.best is None


def test_reason_text():
    rule = StopOnPlateau(monitor="eval/auc", mode="max", patience=2)
    assert rule.reason is None
    feed(rule, [0.7123456789, 0.7, 0.7])
    assert rule.reason == "eval/auc has not improved for 2 evaluations (best 0.712346 at step 100)"


def test_state_dict_round_trip_resumes_the_count():
    rule = StopOnPlateau(mode="max", patience=3)
    feed(rule, [0.6, 0.7, 0.65, 0.66])
    state = rule.state_dict()
    assert state == {"best": 0.7, "best_step": 200, "bad_evaluations": 2}

    resumed = StopOnPlateau(mode="max", patience=3)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    assert feed(resumed, [0.69]) == [True]
    assert resumed.reason.endswith("(best 0.7 at step 200)")


def test_check_metrics_lists_the_metrics_that_exist():
    rule = StopOnPlateau(monitor="eval/accuracy")
    rule.check_metrics(["eval/accuracy"])
    with pytest.raises(ConfigError) as error:
        rule.check_metrics(["eval/logloss", "eval/auc"])
    assert str(error.value) == (
        "early_stopping.monitor=eval/accuracy: no such metric; the metrics are: eval/auc, eval/logloss"
    )


def test_should_stop_checks_the_monitored_metric_is_there():
    with pytest.raises(ConfigError, match="eval/auc"):
        StopOnPlateau(monitor="eval/auc").should_stop({"eval/logloss": 0.5}, step=1)


@pytest.mark.parametrize("kwargs, key", [({"mode": "maximum"}, "mode"), ({"patience": 0}, "patience")])
def test_bad_arguments(kwargs, key):
    with pytest.raises(ValueError, match=f"^{key}="):
        StopOnPlateau(**kwargs)


def test_never_stop():
    rule = NeverStop()
    rule.check_metrics([])  # needs no metric
    assert feed(rule, [0.5, 0.4, math.nan, 0.3] * 5) == [False] * 20
    assert rule.reason is None
    assert rule.state_dict() == {}
    rule.load_state_dict({})


# ------------------------------------------------------------------ patience counted in steps, min_steps


def feed_at(rule: EarlyStopping, pairs: list[tuple[int, float]], monitor: str = "eval/auc") -> list[bool]:
    """``should_stop`` for each ``(step, value)``."""
    return [rule.should_stop({monitor: v}, step=s) for s, v in pairs]


def test_patience_defaults_to_three_evaluations():
    rule = StopOnPlateau()
    assert rule.patience == 3 and rule.max_steps_without_improvement is None
    assert feed(rule, [0.7, 0.6, 0.6, 0.6]) == [False, False, False, True]


def test_max_steps_without_improvement_stops_as_soon_as_step_minus_best_step_reaches_it():
    rule = StopOnPlateau(patience=None, max_steps_without_improvement=200)
    # best 0.72 at step 200; 300 - 200 = 100, 350 - 200 = 150, 400 - 200 = 200 >= 200
    pairs = [(100, 0.70), (200, 0.72), (300, 0.71), (350, 0.72), (400, 0.60), (500, 0.9)]
    assert feed_at(rule, pairs[:5]) == [False, False, False, False, True]
    assert rule.reason == "eval/auc has not improved for 200 steps (best 0.72 at step 200)"
    assert rule.patience is None


def test_max_steps_without_improvement_is_reset_by_an_improvement_and_may_be_overshot():
    rule = StopOnPlateau(
        monitor="eval/logloss", mode="min", patience=None, max_steps_without_improvement=250, min_delta=0.01
    )
    # 0.495 is within min_delta of 0.5: no improvement; 0.48 is one at step 300.
    pairs = [(100, 0.5), (200, 0.495), (300, 0.48), (500, 0.49), (600, 0.49)]
    assert feed_at(rule, pairs, monitor="eval/logloss") == [False, False, False, False, True]
    assert rule.reason == "eval/logloss has not improved for 300 steps (best 0.48 at step 300)"


def test_max_steps_without_improvement_counts_from_the_first_evaluation_when_all_are_nan():
    rule = StopOnPlateau(patience=None, max_steps_without_improvement=100)
    assert feed_at(rule, [(50, math.nan), (100, math.nan), (150, math.nan)]) == [False, False, True]
    assert rule.reason == "eval/auc has not improved for 100 steps (no finite value yet)"


@pytest.mark.parametrize("counting", [{"patience": 1}, {"patience": None, "max_steps_without_improvement": 100}])
def test_min_steps_ignores_earlier_evaluations(counting):
    pairs = [(100, 0.9), (200, 0.5), (300, 0.5)]
    assert feed_at(StopOnPlateau(**counting), pairs) == [False, True, True]
    rule = StopOnPlateau(min_steps=200, **counting)
    # The 0.9 at step 100 does not count: the best is 0.5 at step 200, not improved at 300.
    assert feed_at(rule, pairs) == [False, False, True]
    assert rule.best == 0.5 and rule.best_step == 200


def test_min_steps_evaluations_do_not_count_towards_patience():
    rule = StopOnPlateau(patience=2, min_steps=300)
    assert feed(rule, [0.5, 0.4, 0.6, 0.6, 0.6]) == [False, False, False, False, True]


def test_state_dict_round_trip_in_steps():
    pairs = [(100, 0.70), (200, 0.72), (300, 0.71), (400, 0.70), (500, 0.69)]
    rule = StopOnPlateau(patience=None, max_steps_without_improvement=300)
    assert feed_at(rule, pairs) == [False, False, False, False, True]
    first = StopOnPlateau(patience=None, max_steps_without_improvement=300)
    feed_at(first, pairs[:3])
    resumed = StopOnPlateau(patience=None, max_steps_without_improvement=300)
    resumed.load_state_dict(first.state_dict())
    assert feed_at(resumed, pairs[3:]) == [False, True]
    assert resumed.reason == rule.reason


def test_patience_and_max_steps_are_exclusive():
    with pytest.raises(ValueError) as error:
        StopOnPlateau(patience=3, max_steps_without_improvement=1000)
    assert str(error.value) == (
        "patience=3 and max_steps_without_improvement=1000: set only one (patience=null to count steps)"
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"patience": None, "max_steps_without_improvement": 0}, "max_steps_without_improvement=0: must be > 0"),
        ({"min_delta": -0.1}, "min_delta=-0.1: must be >= 0"),
        ({"min_steps": -1}, "min_steps=-1: must be >= 0"),
        ({"patience": "x"}, "patience: Value 'x' of type 'str' could not be converted to Integer"),
        (
            {"patience": None},
            "patience=null and max_steps_without_improvement=null: set one of them",
        ),
    ],
)
def test_more_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as error:
        StopOnPlateau(**kwargs)
    assert str(error.value) == message


def test_names_and_after_step():
    assert StopOnPlateau().name == "patience" and NeverStop().name == "none"
    assert StopOnPlateau().after_step(1, {"train/loss": math.nan}) is False
    assert NeverStop().after_step(1, None) is False
