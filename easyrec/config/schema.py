"""The parts of the ``easyrec train`` config with no constructor to bind to: the root, and the trainer node's keys
that the run reads before it builds the Trainer.

Every other node names its constructor with ``_target_`` and is checked against its signature
(:mod:`easyrec.config.arguments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from easyrec.config.arguments import PositiveInt, Seed


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


@dataclass
class RunOptions:
    """Keys of the ``trainer`` node that the run reads itself (:func:`easyrec.run.train`), not the Trainer."""

    resume: bool | str = False  # true, auto, or a checkpoint file or run directory
    init_from: str | None = None
    memory_check: bool = True
    num_threads: PositiveInt | None = None  # torch's intra-op threads, set for the whole process


#: The node at each path whose keys are partly the run's: those are checked against this schema, the rest against
#: the node's ``_target_``.
RUN_KEYS: dict[str, type] = {"trainer": RunOptions}
