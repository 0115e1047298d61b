"""The argument checks easyrec's optimizers share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

#: float32 parameters make a larger lr inf at the first step
_LARGEST_LR = torch.finfo(torch.float32).max


def _in_unit_interval(value: float) -> bool:
    return 0 <= value < 1


def _non_negative(value: float) -> bool:
    return value >= 0


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lr": (lambda v: 0 < v <= _LARGEST_LR, f"must be > 0 and finite in float32 (at most {_LARGEST_LR:.4g})"),
    "betas": (lambda v: all(_in_unit_interval(b) for b in v), "each must be in [0, 1)"),
    "decay": (_in_unit_interval, "must be in [0, 1)"),
    "momentum": (_in_unit_interval, "must be in [0, 1)"),
    "lr_power": (lambda v: v <= 0, "must be <= 0"),
    "eps": (_non_negative, "must be >= 0"),
    "weight_decay": (_non_negative, "must be >= 0"),
    "initial_accumulator_value": (_non_negative, "must be >= 0"),
    "l1": (_non_negative, "must be >= 0"),
    "l2": (_non_negative, "must be >= 0"),
    "l2_shrinkage": (_non_negative, "must be >= 0"),
}


def checked_defaults(**defaults: Any) -> dict[str, Any]:
    """``defaults`` for ``Optimizer.__init__``, after a ValueError for the first hyper-parameter out of range."""
    for name, value in defaults.items():
        if name in RULES and not RULES[name][0](value):
            raise ValueError(f"{name}={value}: {RULES[name][1]}")
    return defaults
