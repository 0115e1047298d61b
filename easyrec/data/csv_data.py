"""CSV / TSV files, read with pyarrow's multithreaded CSV reader."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.csv as pv
from annotated_types import Len

from easyrec.config.arguments import checked
from easyrec.data.features import FeatureSpec, numeric_column
from easyrec.data.files import FileData
from easyrec.data.pieces import Piece
from easyrec.errors import DataError

# pyarrow names the column by its position in the file, and not the row.
_CONVERSION_ERROR = re.compile(r"CSV column #(\d+):.* conversion error")


def csv_header(path: Path, delimiter: str) -> list[str]:
    """The names pyarrow will read from the first line (it drops a UTF-8 BOM and keeps spaces)."""
    with path.open("r", encoding="utf-8-sig", errors="replace") as handle:
        first = handle.readline().rstrip("\r\n")
    return [name.strip('"') for name in first.split(delimiter)]


def csv_column_types(spec: FeatureSpec, columns: list[str]) -> dict[str, pa.DataType]:
    """How ``columns`` of the spec are read: dense, label and weight as float64, ids as strings (so that an id
    such as ``007`` keeps its text and encodes the same in training and prediction)."""
    types = {name: pa.float64() for name in columns}
    types.update({name: pa.string() for name in spec.categorical_names if name in types})
    return types


def _columns_named(header: bool, columns: list[str] | None, **_: object) -> str | None:
    if not header and not columns:
        return "columns: required when header=false (the names of the file's columns, in order)"
    return None


class CSVData(FileData):
    """Train and eval splits from two delimited text files.

    Args:
        train_path: the training file.
        eval_path: the evaluation file.
        delimiter: one character, e.g. ``","`` or ``"\\t"``.
        header: whether the first line names the columns; if not, ``columns`` must name them.
        columns: the column names of a file without a header, in order (e.g. the Criteo TSV layout).
        **kwargs: see :class:`TabularData`.
    """

    @checked(across=_columns_named)
    def __init__(
        self,
        features: FeatureSpec | Mapping[str, Any],
        train_path: str,
        eval_path: str,
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

    def read(self, path: Path) -> pa.Table:
        """Read the spec's columns: dense, label and weight as float64, ids as strings."""
        names = self.check_spec_columns(path)
        types = csv_column_types(self.spec, self.spec.columns)
        try:
            return self._read_csv(path, names, types)
        except pa.ArrowInvalid as error:
            raise DataError(self._describe(path, names, str(error))) from None

    def _read_csv(self, path: Path, names: list[str], types: dict[str, pa.DataType]) -> pa.Table:
        """The columns named in ``types``, converted to those types; empty cells are null."""
        return pv.read_csv(
            path,
            read_options=pv.ReadOptions(column_names=None if self.header else names),
            parse_options=pv.ParseOptions(delimiter=self.delimiter),
            convert_options=pv.ConvertOptions(
                column_types=types, include_columns=list(types), strings_can_be_null=True
            ),
        )

    def piece_reader(self) -> CSVReader:
        return CSVReader(self)

    def column_names(self, path: Path) -> list[str]:
        return csv_header(path, self.delimiter) if self.header else list(self.columns)

    def _describe(self, path: Path, names: list[str], message: str) -> str:
        match = _CONVERSION_ERROR.search(message)
        if match:
            # Read that column again as text to find the first value that is not a number, by data row.
            name = names[int(match.group(1))]
            try:
                numeric_column(self._read_csv(path, names, {name: pa.string()}), name, str(path), fill_value=0.0)
            except DataError as error:
                return str(error)
            except pa.ArrowInvalid:
                pass  # the file also has a parse error further on: report pyarrow's message
        return f"{path}: {message.splitlines()[0]}"


class CSVReader:
    """Reads a CSV piece (a whole file) in record batches with the source's options (picklable, for loader
    workers); a value that is not a number is a :class:`DataError` naming the file, column and row."""

    def __init__(self, data: CSVData) -> None:
        self.data = data

    def __call__(self, piece: Piece, columns: list[str]) -> Iterator[pa.RecordBatch]:
        data, path = self.data, Path(piece.path)
        names = data.check_spec_columns(path)
        types = csv_column_types(data.spec, columns)
        try:
            yield from pv.open_csv(
                path,
                read_options=pv.ReadOptions(column_names=None if data.header else names),
                parse_options=pv.ParseOptions(delimiter=data.delimiter),
                convert_options=pv.ConvertOptions(
                    column_types=types, include_columns=list(types), strings_can_be_null=True
                ),
            )
        except pa.ArrowInvalid as error:
            raise DataError(data._describe(path, names, str(error))) from None
