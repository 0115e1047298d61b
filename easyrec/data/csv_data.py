"""CSV / TSV files (also compressed: ``.gz``, ``.zst``, ``.bz2``, ``.lz4`` by extension), read with pyarrow."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.fs as pafs
from annotated_types import Len

from easyrec.config.arguments import checked
from easyrec.data.features import FeatureSpec, numeric_column
from easyrec.data.files import FileData
from easyrec.data.pieces import Piece
from easyrec.data.sources import FileFacts, FileReader, TableFormat, arrow_message
from easyrec.errors import DataError

# pyarrow names the column by its position in the file
_CONVERSION_ERROR = re.compile(r"CSV column #(\d+):.* conversion error")


def csv_header(path: str | Path, delimiter: str, filesystem: pafs.FileSystem | None = None) -> list[str]:
    """The names pyarrow will read from the first line (it drops a UTF-8 BOM and keeps spaces); a compressed file
    is decompressed as far as that line."""
    filesystem = filesystem or pafs.LocalFileSystem()
    head = b""
    with filesystem.open_input_stream(str(path), compression="detect") as stream:
        while b"\n" not in head and (chunk := stream.read(1 << 16)):
            head += chunk
    first = head.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").rstrip("\r")
    return [name.strip('"') for name in first.split(delimiter)]


def csv_column_types(spec: FeatureSpec, columns: list[str]) -> dict[str, pa.DataType]:
    """How ``columns`` of the spec are read: dense, label and weight as float64, ids as strings (so that an id
    such as ``007`` keeps its text and encodes the same in training and prediction), and so the cells of
    multi-value and sequence columns (ids joined by their separator)."""
    types = {name: pa.float64() for name in columns}
    types.update({name: pa.string() for name in spec.categorical_names + spec.list_names if name in types})
    return types


def _columns_named(header: bool, columns: list[str] | None, **_: object) -> str | None:
    if not header and not columns:
        return "columns: required when header=false (the names of the file's columns, in order)"
    return None


class CSVData(FileData):
    """Train and eval splits from delimited text files.

    Args:
        train_path: the training files: a file, a directory, a glob or a list of them (see :class:`FileData`).
        eval_path: the evaluation files, likewise.
        delimiter: one character, e.g. ``","`` or ``"\\t"``.
        header: whether the first line of every file names the columns; if not, ``columns`` must name them.
        columns: the column names of files without a header, in order (e.g. the Criteo TSV layout).
        **kwargs: see :class:`FileData`.
    """

    @checked(across=_columns_named)
    def __init__(
        self,
        features: FeatureSpec | Mapping[str, Any],
        train_path: str | list[str],
        eval_path: str | list[str],
        delimiter: Annotated[str, Len(1, 1)] = ",",
        header: bool = True,
        columns: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(features, train_path, eval_path, **kwargs)
        self.delimiter, self.header, self.columns = delimiter, header, columns

    @property
    def reader_options(self) -> dict[str, Any]:
        return {"delimiter": self.delimiter, "header": self.header, "columns": self.columns}

    def table_format(self) -> TableFormat:
        columns = None if self.columns is None else tuple(self.columns)
        return CSVFormat(self.delimiter, self.header, columns, csv_column_types(self.spec, self.spec.columns))


@dataclass(frozen=True)
class CSVFormat(TableFormat):
    """Delimited text: the spec's columns are read as ``types`` say, the others as strings; empty cells are null.

    Attributes:
        delimiter: one character.
        header: whether the first line names the columns; else ``columns`` names them.
        columns: the names of the columns of a file without a header, in order.
        types: the type of each column the spec reads.
    """

    delimiter: str = ","
    header: bool = True
    columns: tuple[str, ...] | None = None
    types: dict[str, pa.DataType] = field(default_factory=dict)

    def open(
        self,
        filesystem: pafs.FileSystem,
        path: str,
        types: dict[str, pa.DataType],
        invalid: Callable[[pv.InvalidRow], object] | None = None,
    ) -> pv.CSVStreamingReader:
        """The columns ``types`` names of file ``path``, decompressed as its extension says, batch by batch. With
        ``invalid``, rows of too few or too many cells are passed to it and skipped, read by one thread (so that
        they know their line)."""
        return pv.open_csv(
            filesystem.open_input_stream(path, compression="detect"),
            read_options=pv.ReadOptions(
                column_names=None if self.header else list(self.columns), use_threads=invalid is None
            ),
            parse_options=pv.ParseOptions(
                delimiter=self.delimiter,
                invalid_row_handler=None if invalid is None else lambda row: invalid(row) or "skip",
            ),
            convert_options=pv.ConvertOptions(
                column_types=types, include_columns=list(types), strings_can_be_null=True
            ),
        )

    def read(self, reader: FileReader, piece: Piece, columns: list[str]) -> Iterator[pa.RecordBatch]:
        # pyarrow's streaming CSV reader, not a dataset fragment: pyarrow.dataset (25.0) misreads .zst files
        own = [column for column in columns if column not in reader.partition_names]
        partitions = reader.partition_values(piece)
        for batch in self.open(reader.filesystem, piece.path, {c: reader.schema.field(c).type for c in own}):
            rows = len(batch)
            arrays = [
                batch.column(c) if c in own else pa.repeat(pa.scalar(partitions[c], pa.string()), rows) for c in columns
            ]
            yield pa.record_batch(arrays, names=columns)

    def inspect(self, filesystem: pafs.FileSystem, path: str, name: str) -> FileFacts:
        if self.header:
            try:
                names = csv_header(path, self.delimiter, filesystem)
            except (pa.ArrowException, OSError) as error:
                raise DataError(f"{name}: not a readable CSV file ({arrow_message(error)})") from None
        else:
            names = list(self.columns)
        return FileFacts(pa.schema([(column, self.types.get(column, pa.string())) for column in names]))

    def explain(self, reader: FileReader, piece: Piece, error: Exception) -> str:
        name, message = reader.name(piece), str(error)
        if "CSV parse error" in message or _CONVERSION_ERROR.search(message):
            # Read the file again as text: the first row of the wrong number of cells, or the first value of the
            # column that is not a number, by data row.
            columns = self.inspect(reader.filesystem, piece.path, name).schema.names
            match = _CONVERSION_ERROR.search(message)
            text = {columns[int(match.group(1))]: pa.string()} if match else dict.fromkeys(columns, pa.string())
            invalid: list[pv.InvalidRow] = []
            try:
                table = self.open(reader.filesystem, piece.path, text, invalid=invalid.append).read_all()
                if invalid:
                    row = invalid[0]
                    return (
                        f"{name}: row {row.number - self.header}: {row.actual_columns} columns, expected "
                        f"{row.expected_columns}: {row.text!r}"
                    )
                if match:
                    numeric_column(table, next(iter(text)), name, fill_value=0.0)
            except DataError as found:
                return str(found)
            except (pa.ArrowException, OSError):
                pass  # the file also has another problem further on: report pyarrow's message
        return super().explain(reader, piece, error)
