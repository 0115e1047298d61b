"""Parquet files, read with pyarrow (only the columns the feature spec uses)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from easyrec.data.files import FileData, missing_columns_error
from easyrec.errors import DataError


class ParquetData(FileData):
    """Train and eval splits from two Parquet files (arguments: see :class:`FileData`)."""

    def read(self, path: Path) -> pa.Table:
        try:
            error = missing_columns_error(path, self.spec.columns, pq.read_schema(path).names)
            if error:
                raise error
            return pq.read_table(path, columns=self.spec.columns)
        except (pa.ArrowInvalid, OSError) as error:
            raise DataError(f"{path}: not a readable Parquet file ({str(error).splitlines()[0]})") from None
