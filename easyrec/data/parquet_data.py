"""Parquet files, read with pyarrow (only the columns the feature spec uses)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from easyrec.data.files import FileData
from easyrec.data.pieces import Piece
from easyrec.errors import DataError


class ParquetData(FileData):
    """Train and eval splits from two Parquet files (arguments: see :class:`FileData`)."""

    row_groups = True

    def piece_reader(self) -> RowGroupReader:
        return RowGroupReader()

    def read(self, path: Path) -> pa.Table:
        self.check_spec_columns(path)
        with unreadable_parquet(path):
            return pq.read_table(path, columns=self.spec.columns)

    def column_names(self, path: Path) -> list[str]:
        with unreadable_parquet(path):
            return pq.read_schema(path).names


@contextmanager
def unreadable_parquet(path: Path) -> Iterator[None]:
    """Arrow's error on a file that is not Parquet (or is damaged) as a one-line :class:`DataError`."""
    try:
        yield
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0]})") from None


class RowGroupReader:
    """Reads a piece of a Parquet file: its row group, or the whole file (a
    :class:`~easyrec.data.pieces.PieceReader`)."""

    def __call__(self, piece: Piece, columns: list[str]) -> Iterator[pa.RecordBatch]:
        path = Path(piece.path)
        with unreadable_parquet(path):
            file = pq.ParquetFile(path)
            groups = range(file.num_row_groups) if piece.row_group is None else [piece.row_group]
            for group in groups:
                yield from file.read_row_group(group, columns).to_batches()
