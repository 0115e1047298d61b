"""What the trainer and the run need from an experiment tracker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class Logger:
    """An experiment tracker. This base records nothing; :class:`MLflowLogger` records everything.

    The run calls :meth:`start` once, the trainer calls :meth:`log_metrics` as it goes, and the run calls
    :meth:`finish` once with ``"FINISHED"``, ``"FAILED"`` or ``"KILLED"``, whatever happened.
    """

    def start(
        self, config: Mapping[str, Any], overrides: Sequence[str], output_dir: Path, run_id: str | None = None
    ) -> None:
        """Open a run for the resolved ``config``, launched with command-line ``overrides``; with ``run_id`` (a
        resumed run), reopen that run instead."""

    def attach(self, run_id: str, output_dir: Path | None = None) -> None:
        """Log into the run ``run_id`` that another process opened (a distributed job's launcher) and keeps
        RUNNING; :meth:`finish` still closes it. ``output_dir``: the run directory (default: the working one)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record ``{"train/loss": 0.45, ...}`` at optimizer step ``step``."""

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Keep a file (or a folder's files) with the run."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Attach ``tags`` to the run."""

    def finish(self, status: str) -> None:
        """Close the run with ``status`` (FINISHED, FAILED or KILLED) after flushing what is pending."""


class NullLogger(Logger):
    """Tracks nothing: metrics reach only the terminal and the run directory's log."""
