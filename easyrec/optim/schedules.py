"""EasyRec's learning-rate schedules (``LearningRate`` oneof, ``core/learning_schedules.py``) as torch schedulers.

Each class mirrors one proto message:

- :class:`ConstantLR`: ``constant_learning_rate``;
- :class:`ExponentialDecayWithBurnin`: ``exponential_decay_learning_rate``;
- :class:`ManualStepLR`: ``manual_step_learning_rate``;
- :class:`CosineDecayWithWarmup`: ``cosine_decay_learning_rate``;
- :class:`PolynomialDecay`: ``poly_decay_learning_rate``;
- :class:`TransformerLR`: ``transformer_learning_rate``.

The message's initial/base rate (``learning_rate``, ``initial_learning_rate``, ``learning_rate_base``) is the
optimizer's own lr, so it is not an argument here. ``s`` is the global step: 0 before the first optimizer step;
call ``scheduler.step()`` once after each ``optimizer.step()`` and after k steps the groups hold ``lr(s=k)``.

Deliberate differences from EasyRec:

- cosine decay with ``total_steps == warmup_steps + hold_base_rate_steps`` gives the base rate at
  ``s = warmup_steps + hold_base_rate_steps`` where EasyRec divides 0 by 0 (NaN);
- exponential decay with ``burnin_learning_rate > 0`` and ``burnin_steps=0`` has an empty burn-in where EasyRec
  raises ZeroDivisionError.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from easyrec.config.arguments import NonNegative, NonNegativeInt, Positive, PositiveInt, checked

#: None: the run's planned steps, filled in by :func:`easyrec.optim.build_schedules`
TotalSteps = PositiveInt | None


class StepSchedule(LRScheduler):
    """A schedule given by a closed formula of the global step; subclasses implement :meth:`lr_at`.

    Several param groups: the absolute rates among a schedule's arguments (``burnin_learning_rate``,
    ``min_learning_rate``, the manual step rates, ``warmup_learning_rate``, ``end_learning_rate``) are rates of
    param group 0, exactly as EasyRec's one-group optimizer sees them. Group i gets group 0's lr times
    ``lr_i / lr_0`` (the groups' initial lrs), so every group follows the same curve and the groups keep the ratio
    of their lrs at every step. Group 0's lr must then be > 0.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        groups = optimizer.param_groups
        # LRScheduler reads the base lr from "initial_lr" when a group already has one (resuming), else from "lr".
        first = float(groups[0].get("initial_lr", groups[0]["lr"]))
        if first <= 0 and len(groups) > 1:
            raise ValueError(f"param group 0 lr={first}: must be > 0, the other groups' schedules scale with it")
        self._check_base_lr(first)
        # Subclasses set their arguments before this: LRScheduler's constructor already sets the step-0 lr.
        super().__init__(optimizer, last_epoch)

    def _check_base_lr(self, base_lr: float) -> None:
        """Raise ValueError when the schedule's arguments do not fit param group 0's lr."""

    def lr_at(self, step: int, base_lr: float) -> float:
        """The lr after ``step`` optimizer steps of a group whose initial lr is ``base_lr``, absolute rates as given."""
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        bases = [float(base) for base in self.base_lrs]
        lr = self.lr_at(self.last_epoch, bases[0])
        # Groups with group 0's lr (a lone group too, even at lr 0) get lr_at itself, free of rounding.
        return [lr if base == bases[0] else lr * base / bases[0] for base in bases]


class ConstantLR(StepSchedule):
    """``lr = base``: the optimizer's lr, unchanged."""

    def lr_at(self, step: int, base_lr: float) -> float:
        return base_lr


class ExponentialDecayWithBurnin(StepSchedule):
    """Exponential decay after an optional linear burn-in, floored at a minimum.

    ``p = (s − burnin_steps) / decay_steps`` (floored when ``staircase``), ``post = base · decay_factor^p``;
    for ``s < burnin_steps``: ``base`` when ``burnin_learning_rate == 0``, else
    ``burnin_learning_rate + (base − burnin_learning_rate) · s / burnin_steps``; otherwise ``post``;
    ``lr = max(·, min_learning_rate)``.

    Args:
        optimizer: the optimizer whose lrs are scheduled; its lr is EasyRec's ``initial_learning_rate``.
        decay_steps: steps per factor of ``decay_factor``, > 0 (counted from the end of the burn-in).
        decay_factor: the multiplier per ``decay_steps``, > 0.
        staircase: decay in whole steps of ``decay_steps`` rather than continuously.
        burnin_learning_rate: the lr at s=0 of the burn-in, >= 0 (0: the base lr throughout the burn-in).
        burnin_steps: length of the burn-in, >= 0.
        min_learning_rate: the floor, >= 0.
        last_epoch: the global step to resume from (-1: a fresh start).
    """

    @checked
    def __init__(
        self,
        optimizer: Optimizer,
        decay_steps: PositiveInt,
        decay_factor: Positive = 0.95,
        staircase: bool = True,
        burnin_learning_rate: NonNegative = 0.0,
        burnin_steps: NonNegativeInt = 0,
        min_learning_rate: NonNegative = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.decay_steps, self.decay_factor, self.staircase = decay_steps, decay_factor, staircase
        self.burnin_learning_rate, self.burnin_steps = burnin_learning_rate, burnin_steps
        self.min_learning_rate = min_learning_rate
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int, base_lr: float) -> float:
        if step < self.burnin_steps:
            burnin = self.burnin_learning_rate
            lr = base_lr if burnin == 0 else burnin + (base_lr - burnin) * step / self.burnin_steps
        else:
            p = (step - self.burnin_steps) / self.decay_steps
            lr = base_lr * self.decay_factor ** (math.floor(p) if self.staircase else p)
        return max(lr, self.min_learning_rate)


def _schedule_problem(schedule: Sequence[Sequence[float]], **_: object) -> str | None:
    """What is wrong with a ManualStepLR ``schedule`` of ``(step, learning_rate)`` pairs, or None."""
    if not schedule:
        return f"schedule={schedule!r}: must have at least one (step, learning_rate)"
    if any(len(pair) != 2 for pair in schedule):
        return f"schedule={schedule!r}: must be (step, learning_rate) pairs"
    boundaries = [int(step) for step, _ in schedule]
    if boundaries != [step for step, _ in schedule]:
        return f"schedule={schedule!r}: steps must be integers"
    if boundaries[0] <= 0:
        return f"schedule={schedule!r}: the first step must be > 0"
    if any(later <= earlier for earlier, later in zip(boundaries, boundaries[1:], strict=False)):
        return f"schedule={schedule!r}: steps must be strictly increasing"
    if min(float(rate) for _, rate in schedule) < 0:
        return f"schedule={schedule!r}: learning rates must be >= 0"
    return None


class ManualStepLR(StepSchedule):
    """Piecewise-constant lr switching at given steps, optionally ramping linearly up to the first switch.

    With ``schedule = [(b1, r1), (b2, r2), …]``: ``lr = base`` for ``s < b1``, ``r_i`` for ``b_i <= s < b_{i+1}``.
    With ``warmup``: ``lr = base + (r1 − base) · s / b1`` for ``s < b1``.

    Args:
        optimizer: the optimizer whose lrs are scheduled; its lr is EasyRec's ``initial_learning_rate``.
        schedule: ``(step, learning_rate)`` pairs, not empty, steps > 0 and strictly increasing, rates >= 0.
        warmup: interpolate linearly from the base lr to ``r1`` over the first ``b1`` steps.
        last_epoch: the global step to resume from (-1: a fresh start).
    """

    @checked(across=_schedule_problem)
    def __init__(
        self,
        optimizer: Optimizer,
        schedule: Sequence[Sequence[float]],
        warmup: bool = False,
        last_epoch: int = -1,
    ) -> None:
        self.boundaries, self.rates = [int(step) for step, _ in schedule], [float(rate) for _, rate in schedule]
        self.warmup = warmup
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int, base_lr: float) -> float:
        if self.warmup and step < self.boundaries[0]:
            return base_lr + (self.rates[0] - base_lr) * step / self.boundaries[0]
        index = bisect_right(self.boundaries, step)
        return base_lr if index == 0 else self.rates[index - 1]


def _warmup_fits(total_steps: int | None, warmup_steps: int, **_: object) -> str | None:
    if total_steps is not None and total_steps < warmup_steps:
        return f"total_steps={total_steps}: must be >= warmup_steps={warmup_steps}"
    return None


def _require_steps(total_steps: int | None) -> None:
    if total_steps is None:  # the config's null, which build_schedules replaces
        raise ValueError("total_steps=None: give a number of steps (the run fills in its planned steps)")


class CosineDecayWithWarmup(StepSchedule):
    """Linear warm-up, an optional hold at the base lr, then a half cosine down to 0 at ``total_steps``.

    With ``W = warmup_steps``, ``H = hold_base_rate_steps``, ``T = total_steps``:
    ``lr = 0`` for ``s > T``; ``warmup_learning_rate + (base − warmup_learning_rate) · s / W`` for ``s < W``;
    ``base`` for ``W <= s <= W + H``; else ``0.5 · base · (1 + cos(π · (s − W − H) / (T − W − H)))``.

    Args:
        optimizer: the optimizer whose lrs are scheduled; its lr is EasyRec's ``learning_rate_base``, which must be
            >= ``warmup_learning_rate``.
        total_steps: T, > 0 and >= ``warmup_steps``.
        warmup_learning_rate: the lr at s=0 of the warm-up, >= 0.
        warmup_steps: W, >= 0.
        hold_base_rate_steps: H, >= 0.
        last_epoch: the global step to resume from (-1: a fresh start).
    """

    @checked(across=_warmup_fits)
    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: TotalSteps,
        warmup_learning_rate: NonNegative = 0.0,
        warmup_steps: NonNegativeInt = 0,
        hold_base_rate_steps: NonNegativeInt = 0,
        last_epoch: int = -1,
    ) -> None:
        _require_steps(total_steps)
        self.total_steps, self.warmup_learning_rate = total_steps, warmup_learning_rate
        self.warmup_steps, self.hold_base_rate_steps = warmup_steps, hold_base_rate_steps
        super().__init__(optimizer, last_epoch)

    def _check_base_lr(self, base_lr: float) -> None:
        if base_lr < self.warmup_learning_rate:
            raise ValueError(
                f"warmup_learning_rate={self.warmup_learning_rate}: must be <= the optimizer's lr {base_lr}"
            )

    def lr_at(self, step: int, base_lr: float) -> float:
        warmup, decay_start = self.warmup_steps, self.warmup_steps + self.hold_base_rate_steps
        if step > self.total_steps:
            return 0.0
        if step < warmup:
            return self.warmup_learning_rate + (base_lr - self.warmup_learning_rate) * step / warmup
        if step <= decay_start:
            return base_lr
        return 0.5 * base_lr * (1 + math.cos(math.pi * (step - decay_start) / (self.total_steps - decay_start)))


class PolynomialDecay(StepSchedule):
    """``tf.train.polynomial_decay`` without cycling: from the base lr down to ``end_learning_rate`` at ``total_steps``.

    ``s' = min(s, total_steps)``,
    ``lr = (base − end_learning_rate) · (1 − s' / total_steps)^power + end_learning_rate``.

    Args:
        optimizer: the optimizer whose lrs are scheduled; its lr is EasyRec's ``learning_rate_base``.
        total_steps: the step at which the lr reaches ``end_learning_rate`` and stays, > 0.
        power: the exponent, >= 0 (1: linear).
        end_learning_rate: the final lr, >= 0.
        last_epoch: the global step to resume from (-1: a fresh start).
    """

    @checked
    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: TotalSteps,
        power: NonNegative = 1.0,
        end_learning_rate: NonNegative = 0.0,
        last_epoch: int = -1,
    ) -> None:
        _require_steps(total_steps)
        self.total_steps, self.power, self.end_learning_rate = total_steps, power, end_learning_rate
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int, base_lr: float) -> float:
        remaining = 1 - min(step, self.total_steps) / self.total_steps
        return (base_lr - self.end_learning_rate) * remaining**self.power + self.end_learning_rate


class TransformerLR(StepSchedule):
    """The Transformer's ("Noam") schedule: a linear rise over the warm-up, then decay as ``s^−0.5``.

    ``s* = s · step_scaling_rate``, ``w* = warmup_steps · step_scaling_rate``,
    ``lr = base · hidden_size^−0.5 · min((s* + 1) · w*^−1.5, (s* + 1)^−0.5)``.

    Args:
        optimizer: the optimizer whose lrs are scheduled; its lr is EasyRec's ``learning_rate_base``.
        hidden_size: the model dimension d, > 0.
        warmup_steps: w, > 0.
        step_scaling_rate: scales both the step and the warm-up, > 0.
        last_epoch: the global step to resume from (-1: a fresh start).
    """

    @checked
    def __init__(
        self,
        optimizer: Optimizer,
        hidden_size: PositiveInt,
        warmup_steps: PositiveInt,
        step_scaling_rate: Positive = 1.0,
        last_epoch: int = -1,
    ) -> None:
        self.hidden_size, self.warmup_steps, self.step_scaling_rate = hidden_size, warmup_steps, step_scaling_rate
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int, base_lr: float) -> float:
        scaled_step = step * self.step_scaling_rate + 1
        scaled_warmup = self.warmup_steps * self.step_scaling_rate
        return base_lr * self.hidden_size**-0.5 * min(scaled_step * scaled_warmup**-1.5, scaled_step**-0.5)
