"""Terminal output: logs and the progress bar on stderr, results (the metrics table) on stdout."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.logging import RichHandler


def rich_stderr_handler(**kwargs: Any) -> RichHandler:
    """A rich logging handler that writes to stderr (named in ``conf/hydra/job_logging/rich.yaml``)."""
    return RichHandler(console=Console(stderr=True), **kwargs)
