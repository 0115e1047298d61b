"""What the file-backed data sources share: a train file, an eval file, and checks on both."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from easyrec.data.features import FeatureSpec
from easyrec.data.tabular import TabularData
from easyrec.errors import DataError


def existing_file(path: str | Path) -> Path:
    """``path`` as a Path, or a :class:`DataError` if it is not a readable, non-empty file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: file not found (relative paths are taken from {Path.cwd()})")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    return path


def missing_columns_error(path: Path, wanted: list[str], present: list[str]) -> DataError | None:
    missing = [c for c in wanted if c not in present]
    if not missing:
        return None
    return DataError(
        f"{path}: column {', '.join(repr(c) for c in missing)} not found; the columns are: {', '.join(present)}"
    )


class FileData(TabularData):
    """A data source made of one training file and one evaluation file; subclasses :meth:`read` one.

    Args:
        train_path: the training file.
        eval_path: the evaluation file.
        **kwargs: see :class:`TabularData`.
    """

    def __init__(
        self, features: FeatureSpec | Mapping[str, Any], train_path: str, eval_path: str, **kwargs: Any
    ) -> None:
        super().__init__(features, **kwargs)
        self.train_path, self.eval_path = train_path, eval_path

    def read(self, path: Path) -> pa.Table:
        """Read the spec's columns of the existing, non-empty file ``path``."""
        raise NotImplementedError

    def read_splits(self) -> tuple[tuple[pa.Table, str], tuple[pa.Table, str]]:
        return (
            (self.read(existing_file(self.train_path)), str(self.train_path)),
            (self.read(existing_file(self.eval_path)), str(self.eval_path)),
        )

    def read_eval(self) -> tuple[pa.Table, str]:
        return self.read(existing_file(self.eval_path)), str(self.eval_path)
