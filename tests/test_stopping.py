"""The training loop's one stop channel: the early-stopping rule, signals and limits answer one question."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

import pytest

from easyrec.distributed import SingleProcess
from easyrec.early_stopping import EarlyStopping, NeverStop
from easyrec.stopping import StopRequests


class StopAt(EarlyStopping):
    """Asks to stop after the evaluation of step ``eval_step`` or after optimizer step ``step``."""

    def __init__(self, eval_step: int = -1, step: int = -1) -> None:
        self.eval_step, self.step = eval_step, step
        self.asked_after: list[int] = []

    def should_stop(self, metrics: Mapping[str, float], step: int) -> bool:
        self.reason = f"evaluation at step {step}"
        return step == self.eval_step

    def after_step(self, step: int, train: Mapping[str, float] | None) -> bool:
        self.asked_after.append(step)
        self.reason = f"after step {step}"
        return step == self.step


class Worker(SingleProcess):
    """A worker other than the main one: its own rule's requests do not count, the main worker's answer does."""

    is_main = False

    def __init__(self, main_stops: bool = False, signal_number: int = 0) -> None:
        super().__init__()
        self.main_stops, self.signal_number = main_stops, signal_number

    def agree(self, stop: bool, signal_number: int) -> tuple[bool, int]:
        return self.main_stops, max(signal_number, self.signal_number)


def test_the_limits_answer_once_reached_and_the_rule_is_not_asked_once_stopped():
    stops = StopRequests(NeverStop(), SingleProcess(), max_epochs=2, max_steps=None)
    assert stops.why(step=10, epoch=1) is None
    assert stops.why(step=10, epoch=2) == "max_epochs=2 reached"
    stops = StopRequests(NeverStop(), SingleProcess(), max_epochs=0, max_steps=5)
    assert stops.why(step=4, epoch=9) is None and stops.why(step=5, epoch=0) == "max_steps=5 reached"


def test_an_evaluation_that_asks_to_stop_records_the_rules_reason_and_skips_its_after_step():
    rule = StopAt(eval_step=3)
    stops = StopRequests(rule, SingleProcess(), max_epochs=1, max_steps=None)
    stops.after_evaluation({"eval/auc": 0.7}, step=3)
    stops.after_step(3, None)
    assert rule.asked_after == []  # the evaluation already asked
    assert stops.reason == "evaluation at step 3" and stops.why(step=3, epoch=0) == "evaluation at step 3"
    stops.after_step(4, None)
    assert rule.asked_after == []  # stopped: the rule is not asked again


def test_a_request_after_a_step_is_settled_at_that_step():
    rule = StopAt(step=2)
    stops = StopRequests(rule, SingleProcess(), max_epochs=1, max_steps=None)
    stops.after_step(1, None)
    assert stops.why(step=1, epoch=0) is None
    stops.after_step(2, None)
    assert rule.asked_after == [1, 2] and stops.why(step=2, epoch=0) == "after step 2"


def test_a_worker_follows_the_main_workers_decision_not_its_own_rule():
    stops = StopRequests(StopAt(step=1), Worker(main_stops=False), max_epochs=1, max_steps=None)
    stops.after_step(1, None)
    assert stops.why(step=1, epoch=0) is None
    stops = StopRequests(NeverStop(), Worker(main_stops=True), max_epochs=1, max_steps=None)
    stops.after_step(1, None)
    assert stops.reason == "the main worker stopped early"


def test_a_signal_to_any_worker_interrupts_every_worker_at_the_settled_step():
    stops = StopRequests(NeverStop(), Worker(signal_number=signal.SIGTERM), max_epochs=1, max_steps=None)
    stops.after_step(1, None)
    assert stops.signal == (signal.SIGTERM, "SIGTERM") and stops.why(step=1, epoch=0) == "SIGTERM received"
    assert stops.reason is None  # an interrupt is no early stop: a resumed run goes on


def test_a_signal_is_caught_while_training_and_answered_once_settled(caplog):
    stops = StopRequests(NeverStop(), SingleProcess(), max_epochs=1, max_steps=None)
    before = signal.getsignal(signal.SIGTERM)
    with caplog.at_level("WARNING", logger="easyrec.trainer"), stops.catching_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops.why(step=1, epoch=0) is None  # received, not yet agreed with the other workers
        stops.after_step(1, None)
        assert stops.why(step=1, epoch=0) == "SIGTERM received"
        with pytest.raises(KeyboardInterrupt):  # a Ctrl-C after a signal quits at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
    assert "SIGTERM received: stopping after this step (Ctrl-C again to quit now)" in caplog.messages
