"""The unit of work of a table made of files: a piece (a file, or one row group of a Parquet file).

Pieces are what the encoding pass fits in parallel, what DDP ranks and loader workers split between them, what a
checkpoint's stream position counts, and what the encoding cache's key lists. Who makes them (the sources) and who
reads them (the encoder, the stream) share only this module: it imports neither torch nor a file format.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa


@dataclass(frozen=True, order=True)
class Piece:
    """One readable part of a table.

    Attributes:
        path: the file, as its filesystem names it (a local path, or ``bucket/key`` of an ``s3://`` URI).
        row_group: the Parquet row group, or None for the whole file.
        size: the file's bytes.
        mtime_ns: the file's modification time (ns since the epoch), 0 where the filesystem has none.
        rows: the piece's rows where known without reading it (Parquet metadata), else None.
    """

    path: str
    row_group: int | None = None
    size: int = 0
    mtime_ns: int = 0
    rows: int | None = None

    def __str__(self) -> str:
        return self.path if self.row_group is None else f"{self.path} (row group {self.row_group})"


class PieceReader(Protocol):
    """Reads pieces of one table: a picklable object, so that loader worker processes can read with it.

    Attributes:
        skipped: the pieces this reader left out as unreadable (a source's ``on_bad_piece="skip"``), with why; a
            reader counts those it read itself, in its own process.
    """

    skipped: dict[Piece, str]

    def __call__(self, piece: Piece, columns: list[str]) -> Iterator[pa.RecordBatch]:
        """``columns`` of ``piece`` (partition columns included) as record batches, in the piece's row order; a
        piece that cannot be read raises :class:`~easyrec.errors.DataError` naming it (and the row, where known)."""
        ...
