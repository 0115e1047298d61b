"""How the processes of a job are arranged (rank, world size)."""

from easyrec.distributed.single import SingleProcess

__all__ = ["SingleProcess"]
