"""Whether training stops after a step, and why: the one question the training loop asks."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from easyrec.distributed import SingleProcess
from easyrec.early_stopping import EarlyStopping

log = logging.getLogger("easyrec.trainer")  # its lines are the training loop's


class StopRequests:
    """Collects what asks training to stop and answers :meth:`why`, the same on every worker.

    Three things ask: the early-stopping ``rule`` (after an evaluation or after a step; the main worker's
    decision counts), a signal (SIGINT or SIGTERM while :meth:`catching_signals`, on any worker: an interrupt, to
    resume later) and the limits (``max_epochs``, ``max_steps``). :meth:`settle` agrees on a step's requests
    with the other workers, so that every worker stops at the same step.

    Args:
        rule: the early-stopping rule.
        workers: the process layout (:class:`~easyrec.distributed.SingleProcess` or DDP workers).
        max_epochs: passes over the training split (0: no epoch limit).
        max_steps: optimizer steps (None: no step limit).
    """

    def __init__(self, rule: EarlyStopping, workers: SingleProcess, max_epochs: int, max_steps: int | None) -> None:
        self.rule, self.workers = rule, workers
        self.max_epochs, self.max_steps = max_epochs, max_steps
        #: Why the rule ended training (kept in checkpoints: a resumed run stays stopped), or None.
        self.reason: str | None = None
        #: ``(number, name)`` of the signal that asked for an interrupt, once the workers agreed on it, or None.
        self.signal: tuple[int, str] | None = None
        self._received: int = 0  # the number of a signal this process received, until settled
        self._asked: str | None = None  # the rule's request at this step, until settled

    def after_evaluation(self, metrics: Mapping[str, float], step: int) -> None:
        """Ask the rule about the eval ``metrics`` of ``step`` (not once training has stopped)."""
        if self.reason is None and self.rule.should_stop(metrics, step):
            self._asked = self.rule.reason or "early stopping"

    def after_step(self, step: int, train: Mapping[str, float] | None) -> None:
        """Ask the rule after optimizer step ``step`` (unless this step's evaluation already asked to stop), then
        :meth:`settle`. ``train``: the metrics of a logging interval that ended at this step, else None."""
        if self._asked is None and self.reason is None and self.rule.after_step(step, train):
            self._asked = self.rule.reason or "early stopping"
        self.settle()

    def settle(self) -> None:
        """Agree with the other workers: stop when the main worker's rule asked to, interrupt when any worker
        received a signal."""
        asked, self._asked = self._asked, None
        stopping, number = self.workers.agree(asked is not None, self._received)
        if stopping and self.reason is None:
            self.reason = asked if self.workers.is_main else "the main worker stopped early"
            log.info("stopping early: %s", self.reason)
        if number and not self.signal:
            number = self._received or number  # a worker that received a signal itself stops for that one
            self.signal = (number, signal.Signals(number).name)

    def why(self, step: int, epoch: int) -> str | None:
        """Why training stops after ``step`` optimizer steps and ``epoch`` epochs, or None to go on."""
        if self.signal:
            return f"{self.signal[1]} received"
        if self.reason is not None:
            return self.reason
        if self.max_steps and step >= self.max_steps:
            return f"max_steps={self.max_steps} reached"
        if self.max_epochs > 0 and epoch >= self.max_epochs:
            return f"max_epochs={self.max_epochs} reached"
        return None

    @contextmanager
    def catching_signals(self) -> Iterator[None]:
        """While training, SIGINT and SIGTERM ask for an interrupt at the next step boundary (after a
        checkpoint); a second SIGINT interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def ask_to_stop(number: int, frame: Any) -> None:
            if (self._received or self.signal) and number == signal.SIGINT:
                raise KeyboardInterrupt
            self._received = number
            log.warning("%s received: stopping after this step (Ctrl-C again to quit now)", signal.Signals(number).name)

        previous = {number: signal.signal(number, ask_to_stop) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
