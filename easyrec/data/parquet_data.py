"""Parquet files, read with pyarrow (only the columns the feature spec uses)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from easyrec.data.files import FileData
from easyrec.data.pieces import Piece
from easyrec.data.sources import FileFacts, FileReader, TableFormat, arrow_message
from easyrec.errors import DataError


class ParquetData(FileData):
    """Train and eval splits from Parquet files (arguments: see :class:`FileData`)."""

    def table_format(self) -> TableFormat:
        return ParquetFormat()


class ParquetFormat(TableFormat):
    """Parquet files: their footers give the columns and the rows of each row group; a piece is read as a
    ``pyarrow.dataset`` fragment (just its row group, cast to the first file's types, partition columns added)."""

    def inspect(self, filesystem: pafs.FileSystem, path: str, name: str) -> FileFacts:
        try:
            with filesystem.open_input_file(path) as handle:
                file = pq.ParquetFile(handle)
                groups = tuple(file.metadata.row_group(i).num_rows for i in range(file.metadata.num_row_groups))
                return FileFacts(file.schema_arrow, groups)
        except (pa.ArrowException, OSError) as error:
            raise DataError(f"{name}: not a readable Parquet file ({arrow_message(error)})") from None

    def read(self, reader: FileReader, piece: Piece, columns: list[str]) -> Iterator[pa.RecordBatch]:
        import pyarrow.dataset as ds

        fragment = ds.ParquetFileFormat().make_fragment(
            piece.path,
            reader.filesystem,
            partition_expression=reader.partition_expression(piece),
            row_groups=None if piece.row_group is None else [piece.row_group],
            file_size=piece.size or None,  # saves a request on an object store
        )
        return fragment.to_batches(schema=reader.schema, columns=columns)

    def explain(self, reader: FileReader, piece: Piece, error: Exception) -> str:
        return f"{reader.name(piece)}: not a readable Parquet file ({arrow_message(error)})"
