"""Faults injected into distributed test runs (imported by the workers, so it lives in a module of its own)."""

from __future__ import annotations

import os
import signal


def die_once(history: dict[int, dict[str, float]], at_step: int, rank: int = 1) -> bool:
    """An early-stopping rule (``early_stopping=custom``) that never stops, but kills its worker with SIGKILL
    (no checkpoint, no goodbye) at the first evaluation at or after ``at_step``, on worker ``rank``, on the
    first attempt only (the elastic agent's restarts have TORCHELASTIC_RESTART_COUNT > 0)."""
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if first_attempt and int(os.environ.get("RANK", "0")) == rank and max(history) >= at_step:
        os.kill(os.getpid(), signal.SIGKILL)
    return False


def kill_server(history: dict[int, dict[str, float]], at_step: int, pgid: int) -> bool:
    """An early-stopping rule (``early_stopping=custom``) that never stops, but kills the process group ``pgid``
    (a tracking server the test started) with SIGKILL at the first evaluation at or after ``at_step``."""
    if max(history) >= at_step:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:  # killed at an earlier evaluation
            pass
    return False
