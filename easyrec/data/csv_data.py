"""CSV / TSV files, read with pyarrow's multithreaded CSV reader."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pv

from easyrec.data.features import FeatureSpec
from easyrec.data.files import FileData, missing_columns_error
from easyrec.errors import ConfigError, DataError

_CONVERSION_ERROR = re.compile(r"CSV column #(\d+): Row #(\d+): CSV conversion error to (\w+): invalid value '(.*)'")


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

    def __init__(
        self,
        features: FeatureSpec | Mapping[str, Any],
        train_path: str,
        eval_path: str,
        delimiter: str = ",",
        header: bool = True,
        columns: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(features, train_path, eval_path, **kwargs)
        if not header and not columns:
            raise ConfigError("data.columns: required when data.header=false (the names of the columns, in order)")
        if len(delimiter) != 1:
            raise ConfigError(f"data.delimiter={delimiter!r}: must be one character")
        self.delimiter, self.header, self.columns = delimiter, header, columns

    def read(self, path: Path) -> pa.Table:
        """Read the spec's columns: dense, label and weight as float64, ids as strings."""
        names = self._header(path) if self.header else list(self.columns)
        error = missing_columns_error(path, self.spec.columns, names)
        if error:
            raise error
        types = {name: pa.float64() for name in self.spec.columns}
        types.update({name: pa.string() for name in self.spec.categorical_names})
        try:
            return pv.read_csv(
                path,
                read_options=pv.ReadOptions(column_names=None if self.header else names),
                parse_options=pv.ParseOptions(delimiter=self.delimiter),
                convert_options=pv.ConvertOptions(
                    column_types=types, include_columns=self.spec.columns, strings_can_be_null=True
                ),
            )
        except pa.ArrowInvalid as error:
            raise DataError(self._describe(path, names, str(error))) from None

    def _header(self, path: Path) -> list[str]:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            first = handle.readline().rstrip("\r\n")
        return [name.strip().strip('"') for name in first.split(self.delimiter)]

    def _describe(self, path: Path, names: list[str], message: str) -> str:
        match = _CONVERSION_ERROR.search(message)
        if match:
            column, row, kind, value = match.groups()
            # pyarrow counts lines from 1 including the header; we count data rows.
            data_row = int(row) - (1 if self.header else 0)
            return f"{path}: column '{names[int(column)]}', row {data_row}: {value!r} is not a number ({kind})"
        return f"{path}: {message.splitlines()[0]}"
