"""Terminal output: logs and the progress bar on stderr, results (the metrics table) on stdout."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn


def plural(count: int, noun: str) -> str:
    """``1 step``, ``2 steps``, ``1,000 rows``: ``count`` and ``noun``, with an ``s`` unless the count is 1."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def rich_stderr_handler(**kwargs: Any) -> logging.Handler:
    """The logging handler on stderr (named in ``conf/hydra/job_logging/rich.yaml``): rich's in a terminal, plain
    lines elsewhere (a file, a pipe, CI), never wrapped, so that a path or a command can be copied whole."""
    console = Console(stderr=True)
    if console.is_terminal:
        return RichHandler(console=console, **kwargs)
    return PlainHandler()


class PlainHandler(logging.StreamHandler):
    """One line per record on stderr, ``HH:MM:SS LEVEL message``, whatever its length."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{stamp} {record.levelname:<7} {super().format(record)}"


class TrainingProgress:
    """The training progress bar: steps, samples/s, loss, learning rate and time left, redrawn about every
    ``every`` seconds (and at the last step) whatever the logging interval; ``-`` until a value is known.

    Use as a context manager and call :meth:`advance` after each optimizer step.

    Args:
        console: where the bar is drawn (a terminal).
        total: the planned optimizer steps.
        every: seconds between redraws.
        clock: the time in seconds (monotonic).
    """

    def __init__(
        self, console: Console, total: int, every: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.progress = Progress(
            TextColumn("step {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("{task.fields[speed]:>8} samples/s  loss {task.fields[loss]}  lr {task.fields[lr]}"),
            TimeRemainingColumn(),
            console=console,
            auto_refresh=False,  # redrawn by advance, on time: no thread, no redraw of unchanged values
        )
        self.task = self.progress.add_task("train", total=total, speed="-", loss="-", lr="-")
        self.total, self.every, self.clock = total, every, clock
        self.step, self.rows, self.loss = 0, 0, "-"
        self.last = clock()

    def __enter__(self) -> TrainingProgress:
        self.last = self.clock()
        self.progress.start()  # draws the bar: step 0, "-" for every value
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.progress.update(self.task, completed=self.step)  # the steps since the last redraw
        self.progress.stop()

    def advance(self, step: int, rows: int, lr: float, train: Mapping[str, float] | None = None) -> None:
        """After optimizer step ``step`` on ``rows`` samples at learning rate ``lr``; ``train``: the metrics of a
        logging interval that ended at this step (their ``train/loss`` is shown from then on)."""
        self.step, self.rows = step, self.rows + rows
        if train is not None:
            self.loss = f"{train['train/loss']:.5f}"
        now = self.clock()
        if now - self.last < self.every and step < self.total:
            return
        speed = f"{self.rows / (now - self.last):.0f}" if now > self.last else "-"
        self.progress.update(self.task, completed=step, speed=speed, loss=self.loss, lr=f"{lr:.3g}")
        self.progress.refresh()
        self.last, self.rows = now, 0
