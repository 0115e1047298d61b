"""How the processes of a job are arranged (rank, world size) and what they share."""

from typing import Any

from easyrec.distributed.ddp import DDP
from easyrec.distributed.single import SingleProcess, pick_device

__all__ = ["DDP", "ModelParallel", "SingleProcess", "pick_device"]


def __getattr__(name: str) -> Any:
    # ModelParallel's module is imported when asked for: it names torchrec, an optional install
    if name == "ModelParallel":
        from easyrec.distributed.model_parallel import ModelParallel

        return ModelParallel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
