"""Stop when a metric stops improving."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from easyrec.early_stopping.base import EarlyStopping
from easyrec.errors import ConfigError


class StopOnPlateau(EarlyStopping):
    """Stop once ``monitor`` has not improved by more than ``min_delta`` for ``patience`` evaluations.

    Args:
        monitor: an eval metric, e.g. ``"eval/auc"``.
        mode: ``"max"`` if larger is better, ``"min"`` if smaller is.
        patience: evaluations without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
    """

    def __init__(self, monitor: str = "eval/auc", mode: str = "max", patience: int = 3, min_delta: float = 0.0):
        if mode not in ("max", "min"):
            raise ConfigError(f"early_stopping.mode={mode}: must be one of: max, min")
        if patience < 1:
            raise ConfigError(f"early_stopping.patience={patience}: must be > 0")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evaluations = 0

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta

    def check_metrics(self, names: Collection[str]) -> None:
        if self.monitor not in names:
            raise ConfigError(
                f"early_stopping.monitor={self.monitor}: no such metric; the metrics are: {', '.join(sorted(names))}"
            )

    def should_stop(self, metrics: Mapping[str, float], step: int) -> bool:
        self.check_metrics(metrics.keys())
        value = float(metrics[self.monitor])
        if not math.isnan(value) and self._improves(value):
            self.best, self.best_step, self.bad_evaluations = value, step, 0
            return False
        self.bad_evaluations += 1
        if self.bad_evaluations >= self.patience:
            best = "no finite value yet" if self.best is None else f"best {self.best:.6g} at step {self.best_step}"
            self.reason = f"{self.monitor} has not improved for {self.patience} evaluations ({best})"
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evaluations": self.bad_evaluations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_step, self.bad_evaluations = (
            state["best"],
            state["best_step"],
            state["bad_evaluations"],
        )
