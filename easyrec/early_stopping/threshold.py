"""Stop when a metric is good enough."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from easyrec.config.arguments import NonNegativeInt, checked
from easyrec.early_stopping.base import EarlyStopping, Mode, require_metric


class StopAtThreshold(EarlyStopping):
    """Stop at the first evaluation, at a step >= ``min_steps``, where ``monitor`` reaches ``threshold``.

    EasyRec's ``stop_if_higher_hook`` / ``stop_if_lower_hook``, with >= / <= instead of > / <. NaN never
    reaches a threshold.

    Args:
        threshold: the value to reach.
        monitor: an eval metric, e.g. ``"eval/auc"``.
        mode: ``"max"``: stop once ``monitor >= threshold``; ``"min"``: once ``monitor <= threshold``.
        min_steps: evaluations at a step below this do not count.

    Example::

        rule = StopAtThreshold(threshold=0.5, monitor="eval/logloss", mode="min")
        rule.should_stop({"eval/logloss": 0.49}, step=100)  # True
    """

    name = "threshold"

    @checked
    def __init__(self, threshold: float, monitor: str = "eval/auc", mode: Mode = "max", min_steps: NonNegativeInt = 0):
        self.threshold, self.monitor, self.mode, self.min_steps = float(threshold), monitor, mode, min_steps

    def check_metrics(self, names: Collection[str]) -> None:
        require_metric("monitor", self.monitor, names)

    def should_stop(self, metrics: Mapping[str, float], step: int) -> bool:
        self.check_metrics(metrics.keys())
        if step < self.min_steps:
            return False
        value = float(metrics[self.monitor])
        reached = value >= self.threshold if self.mode == "max" else value <= self.threshold
        if reached:
            sign = ">=" if self.mode == "max" else "<="
            self.reason = f"{self.monitor} {value:.6g} {sign} threshold {self.threshold:g} at step {step}"
        return reached
