"""Training in one process."""

from __future__ import annotations


class SingleProcess:
    """The process is the whole job: rank 0 of 1, it reads all the data and writes every file."""

    rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0
