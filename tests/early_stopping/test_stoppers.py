"""The early-stopping rules beyond patience: threshold, divergence, stop file, deadline, custom, several at once."""

from __future__ import annotations

import datetime as dt
import io
import math
import os
import sys

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from easyrec.early_stopping import (
    AnyOf,
    CustomStop,
    EarlyStopping,
    NeverStop,
    PruneTrial,
    StopAtDeadline,
    StopAtThreshold,
    StopOnDivergence,
    StopOnFile,
    StopOnPlateau,
)
from easyrec.early_stopping.deadline import deadline_problem, parse_after, parse_at
from easyrec.early_stopping.examples import metric_above
from easyrec.errors import ConfigError
from tests.conftest import options

# An event is ("eval", step, metrics) for should_stop or ("step", step, train-or-None) for after_step.
Event = tuple[str, int, dict | None]


def run(rule: EarlyStopping, events: list[Event]) -> int | None:
    """Feed ``events`` in order; the index of the one that stopped training, or None."""
    for i, (kind, step, values) in enumerate(events):
        stop = rule.should_stop(values, step) if kind == "eval" else rule.after_step(step, values)
        if stop:
            return i
    return None


def checkpointed(state: dict) -> dict:
    """``state`` after torch.save and torch.load(weights_only=True), as a resumed run reads it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_resume_stops_where_uninterrupted_does(make_rule, events: list[Event]) -> int:
    """A rule restored after any prefix of ``events`` stops at the same event, with the same reason."""
    uninterrupted = make_rule()
    stopped_at = run(uninterrupted, events)
    assert stopped_at is not None
    for split in range(stopped_at + 1):
        first = make_rule()
        assert run(first, events[:split]) is None
        resumed = make_rule()
        resumed.load_state_dict(checkpointed(first.state_dict()))
        assert repr(resumed.state_dict()) == repr(first.state_dict())  # repr: NaN == NaN
        rest = run(resumed, events[split:])
        assert rest is not None and split + rest == stopped_at, split
        assert resumed.reason == uninterrupted.reason
    return stopped_at


def evals(values: list[float], metric: str = "eval/auc", every: int = 100) -> list[Event]:
    return [("eval", every * (i + 1), {metric: v, "eval/other": 0.0}) for i, v in enumerate(values)]


def logs(losses: list[float], every: int = 50) -> list[Event]:
    return [("step", every * (i + 1), {"train/loss": v, "train/grad_norm": 1.0}) for i, v in enumerate(losses)]


# ------------------------------------------------------------------ threshold


def test_threshold_max_stops_at_the_first_evaluation_reaching_it():
    rule = StopAtThreshold(threshold=0.8)
    assert run(rule, evals([0.7, 0.79, 0.8, 0.9])) == 2  # >=: equal reaches it
    assert rule.reason == "eval/auc 0.8 >= threshold 0.8 at step 300"


def test_threshold_min_mode():
    rule = StopAtThreshold(threshold=0.45, monitor="eval/logloss", mode="min")
    assert run(rule, evals([0.5, 0.46, 0.44], metric="eval/logloss")) == 2
    assert rule.reason == "eval/logloss 0.44 <= threshold 0.45 at step 300"


def test_threshold_ignores_evaluations_before_min_steps_and_nan():
    rule = StopAtThreshold(threshold=0.8, min_steps=300)
    assert run(rule, evals([0.9, 0.95, math.nan, 0.85])) == 3
    assert run(StopAtThreshold(threshold=0.5, mode="min", monitor="eval/auc"), evals([math.nan] * 3)) is None


def test_threshold_state_and_name():
    rule = StopAtThreshold(threshold=0.8)
    assert rule.name == "threshold" and rule.state_dict() == {}
    assert_resume_stops_where_uninterrupted_does(lambda: StopAtThreshold(threshold=0.8), evals([0.7, 0.75, 0.81]))


# ------------------------------------------------------------------ divergence


def test_divergence_on_a_non_finite_loss():
    for bad in (math.nan, math.inf):
        rule = StopOnDivergence()
        assert run(rule, logs([0.7, 0.6, bad])) == 2
        assert rule.reason == f"train/loss is {bad} at step 150"


def test_divergence_ratio_only_after_the_warmup_windows():
    rule = StopOnDivergence(max_ratio=10, warmup_logs=3)
    # Window 3 (5.0 > 10 x 0.4) is still warm-up; window 4 (4.1 > 4.0) is not.
    assert run(rule, logs([1.0, 0.4, 5.0, 4.1])) == 3
    assert rule.reason == "train/loss 4.1 at step 200 is more than 10x the lowest so far, 0.4 at step 100"
    assert run(StopOnDivergence(max_ratio=10, warmup_logs=3), logs([1.0, 0.4, 5.0, 4.0, 3.9])) is None


def test_divergence_max_loss_and_no_ratio():
    rule = StopOnDivergence(max_ratio=None, max_loss=2.0, warmup_logs=0)
    assert run(rule, logs([0.1, 1.9, 2.0, 2.01])) == 3
    assert rule.reason == "train/loss 2.01 > max_loss 2 at step 200"


def test_divergence_skips_the_ratio_while_the_lowest_loss_is_not_positive():
    rule = StopOnDivergence(max_ratio=2, warmup_logs=0)
    assert run(rule, logs([-0.5, 0.0, 3.0, 5.0])) is None


def test_divergence_does_nothing_between_logging_steps_and_ignores_eval_without_monitor():
    rule = StopOnDivergence(warmup_logs=0)
    assert [rule.after_step(s, None) for s in range(1, 50)] == [False] * 49
    assert rule.windows == 0
    assert rule.should_stop({"eval/auc": math.nan}, 100) is False
    rule.check_metrics([])


def test_divergence_on_a_non_finite_monitored_eval_metric():
    rule = StopOnDivergence(monitor="eval/logloss")
    rule.check_metrics(["eval/logloss"])
    assert run(rule, evals([0.5, math.inf], metric="eval/logloss")) == 1
    assert rule.reason == "eval/logloss is inf at step 200"
    with pytest.raises(
        ConfigError, match="^early_stopping.monitor=eval/aux: no such metric; the metrics are: eval/auc"
    ):
        StopOnDivergence(monitor="eval/aux").check_metrics(["eval/auc"])


def test_divergence_names_the_training_metrics_when_the_loss_is_missing():
    with pytest.raises(ConfigError) as error:
        StopOnDivergence(loss_metric="train/los").after_step(50, {"train/loss": 1.0, "train/lr": 0.1})
    assert str(error.value) == (
        "early_stopping.loss_metric=train/los: no such training metric; the training metrics are: train/loss, train/lr"
    )


def test_divergence_resume():
    events = logs([2.0, 1.0, 0.5, 0.3, 0.35, 2.9, 3.1])
    stopped_at = assert_resume_stops_where_uninterrupted_does(lambda: StopOnDivergence(max_ratio=10), events)
    assert stopped_at == 6


# ------------------------------------------------------------------ stop file


def test_stop_file_is_checked_every_n_steps(tmp_path, monkeypatch):
    path = tmp_path / "STOP"
    rule = StopOnFile(path, every_n_steps=5)
    checks = []
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: checks.append(p) or real_exists(p))
    for step in range(1, 8):
        assert rule.after_step(step, None) is False
    path.touch()  # appears between the checks at step 5 and step 10
    assert [rule.after_step(step, {"train/loss": 1.0}) for step in range(8, 11)] == [False, False, True]
    assert checks == [str(path), str(path)]  # steps 5 and 10 only
    assert rule.reason == f"the stop file {path} exists (seen at step 10)"
    assert rule.name == "stop_file" and rule.state_dict() == {}


def test_stop_file_already_there_stops_at_the_first_check(tmp_path):
    (tmp_path / "STOP").touch()
    rule = StopOnFile(str(tmp_path / "STOP"))
    assert [rule.after_step(step, None) for step in range(1, 11)] == [False] * 9 + [True]
    assert rule.should_stop({"eval/auc": 0.5}, 10) is False


# ------------------------------------------------------------------ deadline


class Clock:
    """A stand-in for time.time()."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_deadline_at_in_the_past_stops_at_the_first_step(monkeypatch):
    monkeypatch.setattr("easyrec.early_stopping.deadline.time.time", Clock(2_000_000_000.0))
    rule = StopAtDeadline(at="2025-01-31 18:00:00")
    assert rule.after_step(1, None) is True
    assert rule.reason == "the deadline 2025-01-31 18:00:00 has passed (step 1)"


def test_deadline_at_is_checked_every_step(monkeypatch):
    at = dt.datetime(2030, 6, 1, 12, 0, 0).timestamp()
    clock = Clock(at - 3)
    monkeypatch.setattr("easyrec.early_stopping.deadline.time.time", clock)
    rule = StopAtDeadline(at="20300601 12:00:00")
    stops = []
    for step in range(1, 6):
        stops.append(rule.after_step(step, None))
        clock.now += 1
    assert stops == [False, False, False, True, True]


def test_deadline_after_counts_from_the_first_step(monkeypatch):
    clock = Clock(1_700_000_000.0)
    monkeypatch.setattr("easyrec.early_stopping.deadline.time.time", clock)
    rule = StopAtDeadline(after="1h30m")
    assert rule.after_step(1, None) is False
    assert rule.start == 1_700_000_000.0
    clock.now += 5399
    assert rule.after_step(2, None) is False
    clock.now += 1
    assert rule.after_step(3, None) is True
    assert rule.reason == "the time limit after=1h30m is up (1h30m00s since training began, step 3)"


def test_deadline_at_or_after_whichever_comes_first(monkeypatch):
    clock = Clock(1_700_000_000.0)
    monkeypatch.setattr("easyrec.early_stopping.deadline.time.time", clock)
    rule = StopAtDeadline(at=1_700_000_100, after=3600)
    rule.after_step(1, None)
    clock.now += 100
    assert rule.after_step(2, None) is True and rule.reason.startswith("the deadline ")


def test_deadline_resume_keeps_the_original_start(monkeypatch):
    clock = Clock(1_700_000_000.0)
    monkeypatch.setattr("easyrec.early_stopping.deadline.time.time", clock)
    first = StopAtDeadline(after="2h")
    first.after_step(1, None)
    clock.now += 3600
    first.after_step(2, None)
    state = checkpointed(first.state_dict())
    assert state == {"start": 1_700_000_000.0}
    clock.now += 1800  # the run was down for half an hour
    resumed = StopAtDeadline(after="2h")
    resumed.load_state_dict(state)
    assert resumed.after_step(3, None) is False
    clock.now += 1800
    assert resumed.after_step(4, None) is True


@pytest.mark.parametrize(
    "at, expected",
    [
        ("2025-01-31 18:00:00", dt.datetime(2025, 1, 31, 18).timestamp()),
        ("20250131 18:00:00", dt.datetime(2025, 1, 31, 18).timestamp()),
        (1767225600, 1767225600.0),
        ("1767225600", 1767225600.0),
        (dt.datetime(2025, 1, 31, 18), dt.datetime(2025, 1, 31, 18).timestamp()),
    ],
)
def test_parse_at(at, expected):
    assert parse_at(at) == expected


@pytest.mark.parametrize(
    "after, seconds",
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("1.5h", 5400), (45, 45), ("45", 45)],
)
def test_parse_after(after, seconds):
    assert parse_after(after) == seconds


@pytest.mark.parametrize("at", ["2025/01/31 18:00", "31-01-2025 18:00:00", 90, "tomorrow", True, "176722560"])
def test_bad_at(at):
    with pytest.raises(ValueError) as error:
        StopAtDeadline(at=at)
    assert str(error.value) == (
        f"at={at!r}: must be 'YYYY-mm-dd HH:MM:SS' or 'YYYYmmdd HH:MM:SS' (local time) or a 10-digit epoch"
    )


@pytest.mark.parametrize("after", ["soon", "", "0s", -5, 0, "1x", "30 minutes", True, "h"])
def test_bad_after(after):
    with pytest.raises(ValueError) as error:
        StopAtDeadline(after=after)
    assert str(error.value).startswith(f"after={after!r}: must be a duration such as '90s', '30m'")


def test_deadline_needs_at_or_after():
    with pytest.raises(ValueError, match=r"^at=null and after=null: set at least one"):
        StopAtDeadline()
    assert deadline_problem(None, "2h") is None
    assert deadline_problem("later", None).startswith("at='later': must be")


# ------------------------------------------------------------------ custom


def stop_on_third(history, n=3):
    return len(history) >= n


def test_custom_with_a_callable_and_params():
    rule = CustomStop(stop_on_third, {"n": 2})
    assert run(rule, evals([0.5, 0.6, 0.7])) == 1
    assert rule.reason == "stop_on_third(history, **{'n': 2}) returned True at step 200"


def test_custom_with_a_dotted_path_and_a_reason():
    rule = CustomStop("easyrec.early_stopping.examples.metric_above", {"metric": "eval/auc", "threshold": 0.8})
    assert run(rule, evals([0.7, 0.8, 0.81, 0.9])) == 2
    assert rule.reason == "eval/auc 0.81 > 0.8 at step 300"
    assert rule.name == "custom"


def test_custom_history_is_ordered_by_step_and_a_copy():
    seen = []

    def spy(history):
        seen.append(list(history))
        history.clear()
        return False

    rule = CustomStop(spy)
    run(rule, evals([0.5, 0.6]))
    rule.should_stop({"eval/auc": 0.4}, 150)
    assert seen == [[100], [100, 200], [100, 150, 200]]
    assert rule.history[150] == {"eval/auc": 0.4}


def test_custom_params_from_a_config_node_become_plain_python():
    got = {}

    def keep(history, **params):
        got.update(params)
        return False

    CustomStop(keep, OmegaConf.create({"a": {"b": [1, 2]}})).should_stop({"eval/auc": 0.5}, 1)
    assert got == {"a": {"b": [1, 2]}} and type(got["a"]) is dict and type(got["a"]["b"]) is list


def test_custom_resume():
    def make():
        return CustomStop(stop_on_third)

    assert assert_resume_stops_where_uninterrupted_does(make, evals([0.5, math.nan, 0.7, 0.8])) == 2


def test_metric_above_needs_a_number():
    with pytest.raises(ConfigError, match=r"^early_stopping.params.threshold='x': must be a number$"):
        metric_above({100: {"eval/auc": 0.5}}, metric="eval/auc", threshold="x")


def test_metric_above_names_the_metrics_when_the_metric_is_missing():
    with pytest.raises(ConfigError) as error:
        metric_above({100: {"eval/auc": 0.5, "eval/logloss": 0.6}}, metric="eval/gauc", threshold=0.5)
    assert str(error.value) == (
        "early_stopping.params.metric=eval/gauc: no such metric; the metrics are: eval/auc, eval/logloss"
    )


@pytest.fixture
def broken_module(tmp_path, monkeypatch):
    (tmp_path / "easyrec_test_broken_stop.py").write_text("import easyrec_test_no_such_package\n")
    (tmp_path / "easyrec_test_failing_stop.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("easyrec_test_broken_stop", "easyrec_test_failing_stop"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    "fn, message",
    [
        ("no_such_package.stops.fn", "early_stopping.fn=no_such_package.stops.fn: cannot import it"),
        ("easyrec.early_stopping.examples.nope", "early_stopping.fn=easyrec.early_stopping.examples.nope: "),
        ("metric_above", "early_stopping.fn=metric_above: cannot import it"),
        ("math.pi", "early_stopping.fn='math.pi': must be a callable or the dotted path of one"),
        (
            "easyrec_test_broken_stop.fn",
            "early_stopping.fn=easyrec_test_broken_stop.fn: importing easyrec_test_broken_stop failed: "
            "No module named 'easyrec_test_no_such_package'",
        ),
        (
            "easyrec_test_failing_stop.fn",
            "early_stopping.fn=easyrec_test_failing_stop.fn: importing easyrec_test_failing_stop failed: "
            "RuntimeError: boom",
        ),
        (42, "early_stopping.fn=42: must be a callable"),
    ],
)
def test_custom_fn_that_cannot_be_used(broken_module, fn, message):
    with pytest.raises(ConfigError) as error:
        CustomStop(fn)
    assert str(error.value).startswith(message)


def test_custom_unknown_attribute_names_the_module():
    with pytest.raises(ConfigError) as error:
        CustomStop("easyrec.early_stopping.examples.nope")
    assert str(error.value) == (
        "early_stopping.fn=easyrec.early_stopping.examples.nope: easyrec.early_stopping.examples has no attribute nope"
    )


def test_custom_bad_params():
    with pytest.raises(ConfigError, match=r"^early_stopping.params=\[1\]: must be a mapping"):
        CustomStop(stop_on_third, [1])
    with pytest.raises(ConfigError) as error:
        CustomStop("easyrec.early_stopping.examples.metric_above", {"metric": "eval/auc"})
    assert str(error.value).startswith("early_stopping.params={'metric': 'eval/auc'}: easyrec.early_stopping.")
    assert "missing a required argument: 'threshold'" in str(error.value)
    with pytest.raises(ConfigError, match="unexpected keyword argument 'm'"):
        CustomStop(stop_on_third, {"m": 1})


@pytest.mark.parametrize("result", [None, "yes", (1, 2, 3)])
def test_custom_fn_must_return_a_bool(result):
    rule = CustomStop(lambda history: result)
    with pytest.raises(ConfigError, match="it must return a bool or \\(bool, reason\\)"):
        rule.should_stop({"eval/auc": 0.5}, 100)


# ------------------------------------------------------------------ several at once


def test_any_of_stops_when_one_stops_and_names_it(tmp_path):
    stop = tmp_path / "STOP"
    rule = AnyOf({"patience": StopOnPlateau(patience=2), "stop_file": StopOnFile(stop, every_n_steps=1)})
    assert rule.after_step(1, None) is False
    assert rule.should_stop({"eval/auc": 0.7}, 1) is False
    stop.touch()
    assert rule.after_step(2, None) is True
    assert rule.stopped_by == "stop_file"
    assert rule.reason == f"stop_file: the stop file {stop} exists (seen at step 2)"
    assert rule.name == "any_of"


def test_any_of_delegates_evaluations():
    rule = AnyOf([StopAtThreshold(threshold=0.9), StopOnPlateau(patience=1)])
    assert run(rule, evals([0.7, 0.8, 0.8])) == 2
    assert rule.reason == "patience: eval/auc has not improved for 1 evaluation (best 0.8 at step 200)"
    assert list(rule.rules) == ["threshold", "patience"]


def test_any_of_labels_repeated_names():
    rule = AnyOf([StopOnPlateau(), StopOnPlateau(monitor="eval/logloss", mode="min"), NeverStop()])
    assert list(rule.rules) == ["patience", "patience_2", "none"]


def test_any_of_every_rule_sees_every_event():
    divergence, threshold = StopOnDivergence(warmup_logs=0), StopAtThreshold(threshold=0.5)
    rule = AnyOf({"a": threshold, "b": divergence})
    assert rule.after_step(50, {"train/loss": 0.4}) is False
    assert rule.should_stop({"eval/auc": 0.6}, 50) is True
    assert divergence.windows == 1 and rule.stopped_by == "a"


def test_any_of_state_round_trip(monkeypatch, tmp_path):
    clock = Clock(1_700_000_000.0)
    monkeypatch.setattr("easyrec.early_stopping.deadline.time.time", clock)

    def make():
        return AnyOf(
            {
                "patience": StopOnPlateau(patience=None, max_steps_without_improvement=300),
                "stop_file": StopOnFile(tmp_path / "STOP"),
                "deadline": StopAtDeadline(after="1d"),
                "divergence": StopOnDivergence(warmup_logs=1),
            }
        )

    losses, aucs = logs([1.0, 0.8, 0.7, 0.6, 0.5], every=100), evals([0.7, 0.72, 0.71, 0.70, 0.69])
    events = [event for pair in zip(losses, aucs, strict=True) for event in pair]
    assert assert_resume_stops_where_uninterrupted_does(make, events) == 9  # 500 - 200 >= 300
    state = make().state_dict()
    assert set(state) == {"patience", "stop_file", "deadline", "divergence"}


def test_any_of_loads_what_the_state_has():
    rule = AnyOf({"patience": StopOnPlateau(patience=2), "threshold": StopAtThreshold(threshold=0.9)})
    rule.load_state_dict({"patience": {"best": 0.8, "best_step": 100, "bad_evaluations": 1}, "gone": {}})
    assert rule.should_stop({"eval/auc": 0.7}, 200) is True


def test_any_of_errors_name_the_rule_key():
    rule = AnyOf({"main": StopOnPlateau(monitor="eval/aux"), "other": NeverStop()})
    with pytest.raises(ConfigError) as error:
        rule.check_metrics(["eval/auc", "eval/logloss"])
    assert str(error.value) == (
        "early_stopping.rules.main.monitor=eval/aux: no such metric; the metrics are: eval/auc, eval/logloss"
    )
    inner = AnyOf({"outer": AnyOf({"d": StopOnDivergence(loss_metric="train/x")})})
    with pytest.raises(ConfigError, match=r"^early_stopping.rules.outer.rules.d.loss_metric=train/x: no such"):
        inner.after_step(50, {"train/loss": 1.0})


@pytest.mark.parametrize(
    "rules, message",
    [
        ([], "early_stopping.rules: empty; give at least one rule"),
        ({}, "early_stopping.rules: empty; give at least one rule"),
        ({"a": {"monitor": "eval/auc"}}, "early_stopping.rules.a={'monitor': 'eval/auc'}: not an early-stopping rule"),
        ([NeverStop(), 3], "early_stopping.rules.int=3: not an early-stopping rule"),
        ("patience", "early_stopping.rules='patience': must be a list or a dict of early-stopping rules"),
    ],
)
def test_any_of_bad_rules(rules, message):
    with pytest.raises(ConfigError) as error:
        AnyOf(rules)
    assert str(error.value).startswith(message)


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: StopAtThreshold(threshold="high"),
            "threshold: Value 'high' of type 'str' could not be converted to Float",
        ),
        (lambda: StopAtThreshold(threshold=0.8, mode="up"), "mode=up: must be one of: max, min"),
        (lambda: StopAtThreshold(threshold=0.8, min_steps=-1), "min_steps=-1: must be >= 0"),
        (lambda: StopOnDivergence(max_ratio=1), "max_ratio=1: must be > 1"),
        (lambda: StopOnDivergence(warmup_logs=-1), "warmup_logs=-1: must be >= 0"),
        (
            lambda: StopOnDivergence(max_loss="big"),
            "max_loss: Value 'big' of type 'str' could not be converted to Float",
        ),
        (lambda: StopOnFile("STOP", every_n_steps=0), "every_n_steps=0: must be > 0"),
        (
            lambda: StopOnFile("STOP", every_n_steps=2.5),
            "every_n_steps: Value 2.5 of type 'float' could not be converted",
        ),
        (lambda: StopOnFile(""), "path='': must be a file path"),
        (lambda: StopOnFile(None), "path=None: must be a file path"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert str(error.value).startswith(message)


def test_threshold_check_metrics():
    with pytest.raises(
        ConfigError,
        match="^early_stopping.monitor=eval/aux: no such metric; the metrics are: eval/auc$",
    ):
        StopAtThreshold(threshold=0.5, monitor="eval/aux").check_metrics(["eval/auc"])


# ------------------------------------------------------------------ the conf options


RUN_DIR_OVERRIDES = {
    "stop_file": ["early_stopping.path=STOP"],
    "several": ["early_stopping.rules.stop_file.path=STOP"],
}


# The rule each option of conf/early_stopping/ builds.
TARGETS = {
    "none": NeverStop,
    "patience": StopOnPlateau,
    "threshold": StopAtThreshold,
    "divergence": StopOnDivergence,
    "stop_file": StopOnFile,
    "deadline": StopAtDeadline,
    "custom": CustomStop,
    "several": AnyOf,
    "optuna_pruning": PruneTrial,
}


def test_the_expected_rules_are_those_of_the_conf_options():
    assert sorted(TARGETS) == options("early_stopping")


@pytest.mark.parametrize("option", options("early_stopping"))
def test_every_conf_option_builds_and_runs(compose_train, option):
    target = TARGETS[option]
    cfg = compose_train(f"early_stopping={option}", *RUN_DIR_OVERRIDES.get(option, []))
    rule = instantiate(cfg.early_stopping)
    assert type(rule) is target
    rule.check_metrics(["eval/auc", "eval/logloss"])
    assert rule.after_step(1, {"train/loss": 0.5}) is False
    assert rule.should_stop({"eval/auc": 0.6, "eval/logloss": 0.5}, 1) is False
    assert checkpointed(rule.state_dict()) == rule.state_dict()


def test_stop_file_conf_watches_the_run_directory(compose_train):
    cfg = compose_train("early_stopping=stop_file")
    assert OmegaConf.to_container(cfg.early_stopping)["path"] == "${hydra:runtime.output_dir}/STOP"
