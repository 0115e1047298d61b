"""Tracker calls that never hold a run up: records go to the tracker from one background thread, a caller waits for
them at most ``timeout`` seconds, and what the tracker does not take is kept in a journal file for later."""

from __future__ import annotations

import json
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from easyrec.errors import first_line

T = TypeVar("T")

#: The journal in the run directory: what the tracker did not take, for ``easyrec sync``.
PENDING_FILE = "tracking-pending.jsonl"
#: The journal once ``easyrec sync`` delivered all of it.
SYNCED_FILE = "tracking-synced.jsonl"


@dataclass
class _Job:
    record: dict[str, Any]
    done: bool = False
    result: Any = None


class Courier:
    """Hands JSON records to ``send`` one at a time, in order, from a daemon thread (which never keeps the process
    alive at exit, and ends when no record is waiting).

    The first record the tracker does not take within ``timeout`` seconds of being waited for, or refuses, puts
    the courier *down* for good: that record, those queued behind it and every later one are appended to
    ``journal`` (after a ``header()`` line saying where they belong) and the tracker is not called again. So a run
    waits for a tracker that is gone about ``timeout`` seconds in all, not per call.

    Args:
        send: delivers one record; returns what :meth:`call` returns (it runs in the courier's thread).
        timeout: seconds a caller of :meth:`call` or :meth:`flush` waits, > 0.
        journal: the JSON-lines file of the records not delivered (created when the first one is kept); None: they
            are dropped.
        header: the line written before the first kept record: ``{"op": "tracker", ...}``.
    """

    def __init__(
        self,
        send: Callable[[dict[str, Any]], Any],
        timeout: float,
        journal: Path | None = None,
        header: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.send, self.timeout, self.journal, self.header = send, timeout, journal, header
        self.down: str | None = None  # why the tracker is no longer called
        self.kept: Counter[str] = Counter()  # records journaled, by op
        self._jobs: deque[_Job] = deque()
        self._sending: _Job | None = None
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._journaled = False

    def post(self, record: dict[str, Any]) -> None:
        """Send ``record`` in the background (journal it when down)."""
        self._enqueue(record)

    def call(self, record: dict[str, Any]) -> Any:
        """Send ``record`` and wait for it: what ``send`` returned, or None when it was journaled instead."""
        job = self._enqueue(record)
        with self._changed:
            if not self._changed.wait_for(lambda: job.done or self.down, self.timeout):
                self._go_down(f"no answer in {self.timeout:g} s")
            return job.result

    def flush(self) -> bool:
        """Wait until every record is delivered (at most ``timeout`` seconds); False when some were journaled."""
        with self._changed:
            idle = self._changed.wait_for(lambda: self.down or not (self._jobs or self._sending), self.timeout)
            if not idle:
                self._go_down(f"no answer in {self.timeout:g} s")
            return self.down is None

    def _enqueue(self, record: dict[str, Any]) -> _Job:
        job = _Job(record)
        with self._changed:
            if self.down:
                self._keep([job])
                return job
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="easyrec-tracker", daemon=True)
                self._thread.start()
            self._changed.notify_all()
        return job

    def _work(self) -> None:
        while True:
            with self._changed:
                if self.down or not self._jobs:  # the next record starts a new thread: none idles meanwhile
                    self._thread = None
                    return
                job = self._sending = self._jobs.popleft()
            try:
                result, error = self.send(job.record), None
            except Exception as failure:  # unreachable, or refused: either way the record is not delivered
                error = failure
            with self._changed:
                if self.down:  # a caller gave up on this record meanwhile: it is in the journal already
                    return
                if error is not None:
                    self._go_down(f"{type(error).__name__}: {first_line(error)}")
                    return
                job.done, job.result, self._sending = True, result, None
                self._changed.notify_all()

    def _go_down(self, reason: str) -> None:
        """Journal what is not delivered and stop calling the tracker (with ``_changed`` held)."""
        self.down = reason
        self._keep([job for job in (self._sending, *self._jobs) if job is not None])
        self._jobs.clear()
        self._sending = None
        self._changed.notify_all()

    def _keep(self, jobs: list[_Job]) -> None:
        lines = [] if self._journaled else [self.header()]
        lines += [job.record for job in jobs]
        self._journaled = True
        self.kept.update(job.record["op"] for job in jobs)
        if self.journal is None:
            return
        with self.journal.open("a") as journal:
            journal.writelines(json.dumps(line) + "\n" for line in lines)


class TrackerDown(Exception):
    """The tracker did not answer in time, or failed; the message says which."""


def within(timeout: float, call: Callable[[], T]) -> T:
    """``call()`` (a few tracker calls) from a daemon thread, waited for at most ``timeout`` seconds; TrackerDown
    when it did not return in time or raised."""
    courier = Courier(lambda _: call(), timeout)
    result = courier.call({"op": "call"})
    if courier.down:
        raise TrackerDown(courier.down)
    return result


def read_journal(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The records of a journal with their line numbers (from 1); a line that is not a JSON object is an error
    naming it (ValueError)."""
    with path.open() as journal:
        for number, line in enumerate(journal, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("op"), str):
                raise ValueError(f"{path}, line {number}: not a tracking record (an object with an 'op')")
            yield number, record
