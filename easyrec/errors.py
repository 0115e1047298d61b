"""The errors easyrec reports to users as one line, without a traceback."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message (MLflow's and torch's are long), or its type's name."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


class EasyrecError(Exception):
    """A problem with what the user gave us (config, data, files), not a bug in easyrec."""

    exit_code = 1


class ConfigError(EasyrecError):
    """An invalid configuration value; the message names the key."""

    exit_code = 2


class DataError(EasyrecError):
    """Unreadable or invalid data; the message names the file and the column or row."""


class CheckpointError(EasyrecError):
    """A checkpoint that is missing, unreadable, or does not fit the run; the message names the file."""


class OutputError(EasyrecError):
    """An output file that exists and may not be overwritten, or cannot be written; the message names the file."""

    @classmethod
    def cannot_write(cls, path: object, error: OSError) -> OutputError:
        """``cannot write <path>: <cause>``, the cause as the system says it (``No space left on device``)."""
        return cls(f"cannot write {path}: {error.strerror or error}")


class Interrupted(KeyboardInterrupt):
    """Training was stopped by a signal (SIGINT, SIGTERM) after a checkpoint was written."""

    def __init__(self, signal_number: int, name: str) -> None:
        super().__init__(name)
        self.signal_number, self.name = signal_number, name


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`Interrupted` (the run ends KILLED) instead of killing the process outright; while
    training, the trainer's own handler stops at a step boundary with a checkpoint first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(number: int, frame: Any) -> None:
        raise Interrupted(number, signal.Signals(number).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class JobsFailed(EasyrecError):
    """Some jobs of a sweep failed (the others ran to the end); the message names them and their errors."""
