"""How the processes of a job are arranged (rank, world size) and what they share."""

from easyrec.distributed.ddp import DDP
from easyrec.distributed.single import SingleProcess, pick_device

__all__ = ["DDP", "SingleProcess", "pick_device"]
