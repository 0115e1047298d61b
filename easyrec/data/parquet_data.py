"""Parquet files, read with pyarrow (only the columns the feature spec uses)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from easyrec.data.files import FileData
from easyrec.errors import DataError


class ParquetData(FileData):
    """Train and eval splits from two Parquet files (arguments: see :class:`FileData`)."""

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
