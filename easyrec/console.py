"""Terminal output: logs and the progress bar on stderr, results (the metrics table) on stdout."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


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


class PiecesProgress:
    """The progress bar of a pass over the pieces of a table: pieces done, rows done, rows/s and time left.

    Use as a context manager (:meth:`on_stderr` makes one) and call :meth:`advance` after each piece.

    Args:
        console: where the bar is drawn (a terminal), or None: no bar (:meth:`advance` only counts).
        total: the pieces.
        action: what the pass does, shown before the counts (``fitting``).
        clock: the time in seconds (monotonic).
    """

    def __init__(
        self, console: Console | None, total: int, action: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.progress = None
        if console is not None:
            self.progress = Progress(
                TextColumn(f"{action} {{task.completed}}/{{task.total}} pieces"),
                BarColumn(),
                TextColumn("{task.fields[rows]} rows  {task.fields[speed]:>8} rows/s"),
                TimeRemainingColumn(),
                console=console,
                auto_refresh=False,  # redrawn by advance: no thread
            )
            self.task = self.progress.add_task(action, total=total, rows="0", speed="-")
        self.clock, self.start = clock, clock()
        self.pieces, self.rows = 0, 0

    @classmethod
    def on_stderr(cls, total: int, action: str, show: bool = True) -> PiecesProgress:
        """A bar on stderr when ``show`` and stderr is a terminal; else one that draws nothing."""
        console = Console(stderr=True)
        return cls(console if show and console.is_terminal else None, total, action)

    def __enter__(self) -> PiecesProgress:
        self.start = self.clock()
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self, rows: int) -> None:
        """After a piece of ``rows`` rows."""
        self.pieces, self.rows = self.pieces + 1, self.rows + rows
        if self.progress is None:
            return
        elapsed = self.clock() - self.start
        speed = f"{self.rows / elapsed:,.0f}" if elapsed > 0 else "-"
        self.progress.update(self.task, completed=self.pieces, rows=f"{self.rows:,}", speed=speed)
        self.progress.refresh()


#: ``advance(step, rows, lr, train)``: see :meth:`TrainingReport.progress`.
Advance = Callable[[int, int, float, Mapping[str, float] | None], None]


class TrainingReport:
    """What a training run shows: its progress while it trains, its final metrics when it is done.

    Args:
        log: where the progress goes as lines when there is no bar (the training loop's logger).
        console: where the bar is drawn (default: stderr); a bar only when it is a terminal.
        show_bar: whether to draw a bar there (False: a worker other than the main one, or ``progress_bar=false``).
    """

    def __init__(self, log: logging.Logger, console: Console | None = None, show_bar: bool = True) -> None:
        self.log, self.console = log, console or Console(stderr=True)
        self.show_bar = show_bar and self.console.is_terminal

    @contextmanager
    def progress(self, total: int) -> Iterator[Advance]:
        """Yield ``advance(step, rows, lr, train)``, called after each of the ``total`` optimizer steps
        (``train``: the metrics of a logging interval that ended there, else None): it moves the bar
        (:class:`TrainingProgress`), or logs a line at each logging interval."""
        if not self.show_bar:

            def advance_log(step: int, rows: int, lr: float, train: Mapping[str, float] | None) -> None:
                if train is not None:
                    self.log.info(
                        "step %d/%d: loss %.5f, lr %.3g, %.0f samples/s",
                        step,
                        total,
                        train["train/loss"],
                        train["train/lr"],
                        train["train/samples_per_s"],
                    )

            yield advance_log
            return
        with TrainingProgress(self.console, total) as bar:
            yield bar.advance

    def results(self, title: str, metrics: Mapping[str, float], run_dir: Path, view_commands: Sequence[str]) -> None:
        """Print ``metrics`` as a table on stdout, then the run directory and the commands that show the run."""
        table = Table(title=title)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in metrics.items():
            table.add_row(key, f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 1e4 else f"{value:.5f}")
        Console().print(table)
        # plain lines, never wrapped: a path or a command is copied whole
        print(f"run directory: {run_dir.resolve()}")
        for number, command in enumerate(view_commands):
            print(f"{'to look at it:' if number == 0 else '':<14} {command}")
