"""Stop at a wall-clock time or after a while: fit a run into a time slot."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Mapping
from typing import Any

from easyrec.config.arguments import checked
from easyrec.early_stopping.base import EarlyStopping

AT_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y%m%d %H:%M:%S")
AT_FORMS = "'YYYY-mm-dd HH:MM:SS' or 'YYYYmmdd HH:MM:SS' (local time) or a 10-digit epoch"
AFTER_FORMS = "a duration such as '90s', '30m', '2h', '1h30m', '1d' or a number of seconds, > 0"
_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?)d)?(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s)?")
_UNIT_SECONDS = (86400, 3600, 60, 1)


def parse_at(at: Any) -> float:
    """``at`` as epoch seconds; ValueError naming the accepted forms otherwise."""
    if isinstance(at, dt.datetime):
        return at.timestamp()
    if isinstance(at, int | float) and not isinstance(at, bool) and 1e9 <= at < 1e10:
        return float(at)
    if isinstance(at, str):
        text = at.strip()
        if re.fullmatch(r"\d{10}(\.\d*)?", text):
            return float(text)
        for form in AT_FORMATS:
            try:
                return dt.datetime.strptime(text, form).timestamp()
            except ValueError:
                pass
    raise ValueError(f"at={at!r}: must be {AT_FORMS}")


def parse_after(after: Any) -> float:
    """``after`` in seconds; ValueError naming the accepted forms otherwise."""
    seconds = None
    if isinstance(after, int | float) and not isinstance(after, bool):
        seconds = float(after)
    elif isinstance(after, str):
        text = after.strip().replace(" ", "")
        match = _DURATION.fullmatch(text)
        if re.fullmatch(r"\d+(\.\d*)?", text):
            seconds = float(text)
        elif text and match:
            seconds = sum(float(n) * unit for n, unit in zip(match.groups(), _UNIT_SECONDS, strict=True) if n)
    if seconds is None or not seconds > 0:
        raise ValueError(f"after={after!r}: must be {AFTER_FORMS}")
    return seconds


def deadline_problem(at: Any, after: Any) -> str | None:
    """What is wrong with ``at`` / ``after`` (keys relative to the rule's node), or None: StopAtDeadline's rule."""
    if at is None and after is None:
        return "at=null and after=null: set at least one (at='2025-01-31 18:00:00', after=2h)"
    try:
        if at is not None:
            parse_at(at)
        if after is not None:
            parse_after(after)
    except ValueError as error:
        return str(error)
    return None


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m{secs:02d}s"


class StopAtDeadline(EarlyStopping):
    """Stop at the first optimizer step after the wall-clock time ``at``, or ``after`` a duration, or both.

    EasyRec's ``train_config.dead_line`` plus a time budget. ``after`` counts from the rule's first
    :meth:`after_step` call (the end of the first step); that moment is part of :meth:`state_dict`, so a
    resumed run keeps its original deadline, and the time the run was down counts. The check is one
    ``time.time()`` per step.

    Args:
        at: ``'YYYY-mm-dd HH:MM:SS'`` or ``'YYYYmmdd HH:MM:SS'`` (local time), a 10-digit epoch, or a datetime.
        after: ``'90s'``, ``'30m'``, ``'2h'``, ``'1h30m'``, ``'1d'`` or a number of seconds.

    Example::

        rule = StopAtDeadline(after="2h")
        rule.after_step(1, None)  # False for the first two hours
    """

    name = "deadline"

    @checked(across=deadline_problem)
    def __init__(self, at: Any = None, after: Any = None):
        self.at = None if at is None else parse_at(at)
        self.after = None if after is None else parse_after(after)
        self._after_text = after
        #: Epoch seconds of the first ``after_step`` call.
        self.start: float | None = None

    def after_step(self, step: int, train: Mapping[str, float] | None) -> bool:
        now = time.time()
        if self.start is None:
            self.start = now
        if self.at is not None and now >= self.at:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.at))
            self.reason = f"the deadline {when} has passed (step {step})"
            return True
        if self.after is not None and now - self.start >= self.after:
            elapsed = _clock(now - self.start)
            self.reason = f"the time limit after={self._after_text} is up ({elapsed} since training began, step {step})"
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.start}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.start = state["start"]
