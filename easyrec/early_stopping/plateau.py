"""Stop when a metric stops improving."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from easyrec.config.arguments import NonNegative, NonNegativeInt, PositiveInt, checked
from easyrec.console import plural
from easyrec.early_stopping.base import EarlyStopping, Mode, require_metric


def _one_count(patience: int | None, max_steps_without_improvement: int | None, **_: object) -> str | None:
    if patience is None and max_steps_without_improvement is None:
        return "patience=null and max_steps_without_improvement=null: set one of them"
    if patience is not None and max_steps_without_improvement is not None:
        return (
            f"patience={patience} and max_steps_without_improvement={max_steps_without_improvement}: "
            "set only one (patience=null to count steps)"
        )
    return None


class StopOnPlateau(EarlyStopping):
    """Stop once ``monitor`` has not improved by more than ``min_delta`` for a while.

    "A while" is ``patience`` evaluations, or ``max_steps_without_improvement`` optimizer steps (EasyRec's
    ``max_check_steps``: stop at the first evaluation with ``step - best_step >= N``); set one of them, and
    with neither the rule waits 3 evaluations. A NaN value is never an improvement. Evaluations at a step
    below ``min_steps`` are ignored altogether, as by EasyRec's ``stop_if_no_increase_hook``.

    Args:
        monitor: an eval metric, e.g. ``"eval/auc"``.
        mode: ``"max"`` if larger is better, ``"min"`` if smaller is.
        patience: evaluations without improvement before stopping.
        min_delta: smallest change that counts as an improvement (>= 0).
        max_steps_without_improvement: optimizer steps since the best evaluation before stopping.
        min_steps: evaluations at a step below this do not count.

    Example::

        rule = StopOnPlateau(monitor="eval/auc", patience=2)
        [rule.should_stop({"eval/auc": v}, step) for step, v in [(100, 0.7), (200, 0.69), (300, 0.7)]]
        # [False, False, True]
    """

    name = "patience"

    @checked(across=_one_count)
    def __init__(
        self,
        monitor: str = "eval/auc",
        mode: Mode = "max",
        patience: PositiveInt | None = 3,
        min_delta: NonNegative = 0.0,
        max_steps_without_improvement: PositiveInt | None = None,
        min_steps: NonNegativeInt = 0,
    ):
        self.monitor, self.mode, self.min_delta, self.min_steps = monitor, mode, min_delta, min_steps
        self.patience, self.max_steps_without_improvement = patience, max_steps_without_improvement
        self.best: float | None = None
        #: The step of the best value; before any finite value, the first evaluation that counted.
        self.best_step: int | None = None
        self.bad_evaluations = 0

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta

    def check_metrics(self, names: Collection[str]) -> None:
        require_metric("monitor", self.monitor, names)

    def should_stop(self, metrics: Mapping[str, float], step: int) -> bool:
        self.check_metrics(metrics.keys())
        if step < self.min_steps:
            return False
        value = float(metrics[self.monitor])
        if self.best_step is None:
            self.best_step = step
        if self._improves(value):
            self.best, self.best_step, self.bad_evaluations = value, step, 0
            return False
        self.bad_evaluations += 1
        if self.patience is not None:
            if self.bad_evaluations < self.patience:
                return False
            waited = plural(self.patience, "evaluation")
        else:
            if step - self.best_step < self.max_steps_without_improvement:
                return False
            waited = plural(step - self.best_step, "step")
        best = "no finite value yet" if self.best is None else f"best {self.best:.6g} at step {self.best_step}"
        self.reason = f"{self.monitor} has not improved for {waited} ({best})"
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evaluations": self.bad_evaluations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_step, self.bad_evaluations = (
            state["best"],
            state["best_step"],
            state["bad_evaluations"],
        )
