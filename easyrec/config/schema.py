"""The parts of the ``easyrec train`` config with no constructor to bind to: the root, and the trainer node's keys
that the run reads before it builds the Trainer.

Every other node names its constructor with ``_target_`` and is checked against its signature
(:mod:`easyrec.config.arguments`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

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
class InitOptions:
    """``trainer.init``: how a run starts from another run's checkpoint (``trainer.init_from``, see
    :mod:`easyrec.resume`): incremental training, EasyRec's fine_tune_checkpoint.

    Attributes:
        optimizer: restore the optimizer's slots (Adagrad and FTRL accumulators, Adam moments) by parameter name
            where they fit; an embedding table that grew gets the optimizer's initial state in its new rows.
        exclude: regular expressions (searched in this model's parameter names, after ``rename``): the parameters
            they find start from their initial values, with fresh slots (EasyRec's restore filters).
        rename: ``{regex: replacement}``: a checkpoint name where the regex is found is renamed with
            ``re.sub`` (the first pattern found applies), to load it into this model's parameter of that name
            (EasyRec's fine_tune_ckpt_var_map).
        missing_ok: when ``init_from`` has no checkpoint yet (the first day of a daily job), start from scratch
            with a warning instead of an error.
        checkpoint: the checkpoint a run directory resolves to: ``latest`` (its latest step checkpoint, with the
            optimizer state) or ``best`` (its ``best.pt``: weights only).
    """

    optimizer: bool = True
    exclude: list[str] = field(default_factory=list)
    rename: dict[str, str] = field(default_factory=dict)
    missing_ok: bool = False
    checkpoint: Literal["latest", "best"] = "latest"

    def __post_init__(self) -> None:
        for key, patterns in (("exclude", self.exclude), ("rename", list(self.rename))):
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as error:
                    raise ValueError(f"{key}: {pattern!r} is not a regular expression ({error})") from None


@dataclass
class RunOptions:
    """Keys of the ``trainer`` node that the run reads itself (:func:`easyrec.run.train`), not the Trainer."""

    resume: bool | str = False  # true, auto, or a checkpoint file or run directory
    init_from: str | None = None
    init: InitOptions = field(default_factory=InitOptions)  # how init_from starts the run
    memory_check: bool = True
    num_threads: PositiveInt | None = None  # torch's intra-op threads, set for the whole process


#: The node at each path whose keys are partly the run's: those are checked against this schema, the rest against
#: the node's ``_target_``.
RUN_KEYS: dict[str, type] = {"trainer": RunOptions}
