"""Stop when the training loss blows up."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Annotated, Any

from annotated_types import Gt

from easyrec.config.arguments import NonNegativeInt, checked
from easyrec.early_stopping.base import EarlyStopping, require_metric


class StopOnDivergence(EarlyStopping):
    """Stop when the training loss of a logging window is non-finite or far above what it was.

    Looks at ``loss_metric`` on logging steps only (one number per window, so it costs nothing between
    them) and stops when it is NaN or infinite, above ``max_loss``, or, from the window after the first
    ``warmup_logs``, above ``max_ratio`` times the lowest value seen so far (a ratio needs a positive lowest
    value, so it is skipped while that is <= 0). With ``monitor`` set it also stops on a non-finite value of
    that eval metric.

    Args:
        max_ratio: how many times the lowest loss so far counts as diverged (> 1); None: no ratio check.
        max_loss: a loss above this stops training at once; None: no bound.
        warmup_logs: logging windows whose loss is not compared with the lowest (it falls fast at first).
        loss_metric: the training metric to watch.
        monitor: an eval metric that must stay finite, e.g. ``"eval/logloss"``; None: eval metrics are ignored.

    Example::

        rule = StopOnDivergence(max_ratio=10, warmup_logs=1)
        [rule.after_step(s, {"train/loss": v}) for s, v in [(50, 0.7), (100, 0.5), (150, 6.0)]]
        # [False, False, True]
    """

    name = "divergence"

    @checked
    def __init__(
        self,
        max_ratio: Annotated[float, Gt(1)] | None = 10.0,
        max_loss: float | None = None,
        warmup_logs: NonNegativeInt = 3,
        loss_metric: str = "train/loss",
        monitor: str | None = None,
    ):
        self.max_ratio, self.max_loss, self.warmup_logs = max_ratio, max_loss, warmup_logs
        self.loss_metric, self.monitor = loss_metric, monitor
        self.windows = 0
        self.lowest: float | None = None
        self.lowest_step: int | None = None

    def check_metrics(self, names: Collection[str]) -> None:
        if self.monitor is not None:
            require_metric("monitor", self.monitor, names)

    def should_stop(self, metrics: Mapping[str, float], step: int) -> bool:
        if self.monitor is None:
            return False
        self.check_metrics(metrics.keys())
        value = float(metrics[self.monitor])
        if math.isfinite(value):
            return False
        self.reason = f"{self.monitor} is {value} at step {step}"
        return True

    def after_step(self, step: int, train: Mapping[str, float] | None) -> bool:
        if train is None:
            return False
        require_metric("loss_metric", self.loss_metric, train.keys(), kind="training metric")
        value = float(train[self.loss_metric])
        self.windows += 1
        key = self.loss_metric
        if not math.isfinite(value):
            self.reason = f"{key} is {value} at step {step}"
        elif self.max_loss is not None and value > self.max_loss:
            self.reason = f"{key} {value:.6g} > max_loss {self.max_loss:g} at step {step}"
        elif (
            self.max_ratio is not None
            and self.windows > self.warmup_logs
            and self.lowest is not None
            and self.lowest > 0
            and value > self.max_ratio * self.lowest
        ):
            self.reason = (
                f"{key} {value:.6g} at step {step} is more than {self.max_ratio:g}x "
                f"the lowest so far, {self.lowest:.6g} at step {self.lowest_step}"
            )
        else:
            if self.lowest is None or value < self.lowest:
                self.lowest, self.lowest_step = value, step
            return False
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"windows": self.windows, "lowest": self.lowest, "lowest_step": self.lowest_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.windows, self.lowest, self.lowest_step = state["windows"], state["lowest"], state["lowest_step"]
