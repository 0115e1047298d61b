"""Parquet files, read with pyarrow (only the columns the feature spec uses)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from easyrec.data.files import FileData
from easyrec.data.pieces import Piece
from easyrec.data.sources import FileFacts, FileReader, TableFormat, arrow_message
from easyrec.errors import DataError

if TYPE_CHECKING:
    import pyarrow.dataset as ds


class ParquetData(FileData):
    """Train and eval splits from Parquet files (arguments: see :class:`FileData`)."""

    def table_format(self) -> TableFormat:
        return ParquetFormat()


class ParquetFormat(TableFormat):
    """Parquet files: their footers give the columns and the rows of each row group."""

    def dataset_format(self) -> ds.FileFormat:
        import pyarrow.dataset as ds

        return ds.ParquetFileFormat()

    def inspect(self, filesystem: pafs.FileSystem, path: str, name: str) -> FileFacts:
        try:
            with filesystem.open_input_file(path) as handle:
                file = pq.ParquetFile(handle)
                groups = tuple(file.metadata.row_group(i).num_rows for i in range(file.metadata.num_row_groups))
                return FileFacts(file.schema_arrow, groups)
        except (pa.ArrowException, OSError) as error:
            raise DataError(f"{name}: not a readable Parquet file ({arrow_message(error)})") from None

    def explain(self, reader: FileReader, piece: Piece, error: Exception) -> str:
        return f"{reader.name(piece)}: not a readable Parquet file ({arrow_message(error)})"
