"""Stop when a metric stops improving."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from easyrec.console import plural
from easyrec.early_stopping.base import EarlyStopping, check_at_least, check_mode, require_metric
from easyrec.errors import ConfigError

DEFAULT_PATIENCE = 3


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

    def __init__(
        self,
        monitor: str = "eval/auc",
        mode: str = "max",
        patience: int | None = None,
        min_delta: float = 0.0,
        max_steps_without_improvement: int | None = None,
        min_steps: int = 0,
    ):
        check_mode(mode)
        if patience is not None and max_steps_without_improvement is not None:
            raise ConfigError(
                f"early_stopping.patience={patience} and max_steps_without_improvement="
                f"{max_steps_without_improvement}: set only one (patience=null to count steps)"
            )
        if patience is None and max_steps_without_improvement is None:
            patience = DEFAULT_PATIENCE
        check_at_least("patience", patience, 0, strict=True)
        check_at_least("max_steps_without_improvement", max_steps_without_improvement, 0, strict=True)
        check_at_least("min_delta", min_delta, 0, strict=False)
        check_at_least("min_steps", min_steps, 0, strict=False)
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
