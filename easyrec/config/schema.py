"""The root of the ``easyrec train`` config: the one node with no constructor to bind to.

Every other node names its constructor with ``_target_`` and is checked against its signature
(:mod:`easyrec.config.arguments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from easyrec.config.arguments import Seed


@dataclass
class TrainConfig:
    """The whole ``easyrec train`` config: one node per config group plus the run-wide keys."""

    model: Any
    data: Any
    optimizer: Any
    lr_schedule: Any
    gradients: Any
    loss: Any
    metrics: Any
    early_stopping: Any
    distributed: Any
    trainer: Any
    logger: Any
    seed: Seed = 42
    optimized_metric: str = "eval/auc"
