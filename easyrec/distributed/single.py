"""Training in one process, and what every arrangement of processes offers the trainer."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Annotated, Any

import torch
from annotated_types import Ge
from torch import Tensor, nn

from easyrec.config.arguments import checked
from easyrec.errors import ConfigError

#: a number of workers, machines or micro-batches
Count = Annotated[int, Ge(1)]


class SingleProcess:
    """The process is the whole job: rank 0 of 1, it reads all the data and writes every file.

    The trainer talks to the process layout only through this interface, which
    :class:`~easyrec.distributed.DDP` implements with torch.distributed collectives; here every collective is
    the identity.

    Args:
        accumulate_steps: micro-batches whose gradients are summed before each optimizer step (EasyRec's
            ``replicas_to_aggregate`` on one worker): a step sees ``batch_size * accumulate_steps`` rows.
    """

    rank = 0
    local_rank = 0
    world_size = 1
    #: whether the model's embedding tables are sharded over the workers (ModelParallel)
    sharded = False
    #: the optimizer that updates sharded tables inside the backward (ModelParallel's; None: no such tables)
    fused_optimizer: Any = None

    @checked
    def __init__(self, accumulate_steps: Count = 1) -> None:
        self.accumulate_steps = accumulate_steps

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and talks to the tracker (rank 0)."""
        return self.rank == 0

    @property
    def restart_count(self) -> int:
        """How many times the elastic agent restarted this job's workers (0: the first attempt)."""
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

    def start(self) -> None:
        """Join the job's workers. One process has none to join, but refuses to run as one of several."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            raise ConfigError(
                f"distributed=none, but this process is one of WORLD_SIZE={world} workers (torchrun): every worker "
                "would train its own copy; use distributed=ddp"
            )

    def close(self) -> None:
        """Leave the job's workers."""

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train with: ``model`` itself (DDP wraps it to average gradients over workers)."""
        return model

    def no_sync(self, model: nn.Module) -> AbstractContextManager[Any]:
        """While accumulating micro-batches, keep gradients local (no all-reduce) inside this context."""
        return nullcontext()

    def agree(self, stop: bool, signal_number: int) -> tuple[bool, int]:
        """The job's decision after a step: stop if the main process says so; the number of a signal that any
        process received (0: none). Every process leaves the loop at the same step."""
        return stop, signal_number

    def sum(self, value: Tensor) -> Tensor:
        """``value`` summed over the workers (a scalar or any shape; on the training device)."""
        return value

    def gather(self, pieces: Sequence[Any]) -> list[Any]:
        """Every worker's ``pieces`` (any picklable objects), concatenated in rank order."""
        return list(pieces)

    def broadcast(self, value: Any) -> Any:
        """The main process's ``value`` (any picklable object), on every worker."""
        return value

    def in_lockstep(self, batches: Iterable[Any]) -> Iterator[Any | None]:
        """The eval ``batches`` as this worker runs them: here themselves (a sharded model's workers must run it
        alike: :meth:`ModelParallel.in_lockstep <easyrec.distributed.ModelParallel.in_lockstep>`)."""
        return iter(batches)

    def device(self, requested: str) -> torch.device:
        """This worker's torch device for ``trainer.device`` (see :func:`pick_device`)."""
        return pick_device(requested, self.local_rank)


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """``trainer.device``: ``auto`` is cuda when torch finds a CUDA device, else cpu; ``cuda`` without one is a
    ConfigError. A worker on a GPU machine takes the GPU of its local rank."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    elif requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda: torch finds no CUDA device here (use cpu or auto)")
    if requested == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(requested)
