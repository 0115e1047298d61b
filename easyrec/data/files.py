"""What the file-backed data sources share: a train file, an eval file, and checks on both."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from easyrec.data.cache import EncodingCache, cache_key
from easyrec.data.features import FeatureEncoder, FeatureSpec
from easyrec.data.hashing import hash_buckets
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


def source_files(*objects: Any) -> list[Path]:
    """The files that define ``objects`` (classes, functions), once each; one defined interactively has none."""
    files = (getattr(sys.modules.get(o.__module__), "__file__", None) for o in objects)
    return [Path(name) for name in dict.fromkeys(files) if name]


class FileData(TabularData):
    """A data source made of one training file and one evaluation file; subclasses :meth:`read` one.

    With a ``cache_dir``, :meth:`setup` keeps the fitted encoder and the encoded splits there (see
    :mod:`easyrec.data.cache`) and later runs on the same files, reader options and feature spec load them instead
    of reading and encoding the files again.

    Args:
        train_path: the training file.
        eval_path: the evaluation file.
        cache_dir: where encoded splits are cached; None (the default here; the shipped configs give
            ``~/.cache/easyrec/data``): no cache.
        **kwargs: see :class:`TabularData`.
    """

    def __init__(
        self,
        features: FeatureSpec | Mapping[str, Any],
        train_path: str,
        eval_path: str,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(features, **kwargs)
        self.train_path, self.eval_path = train_path, eval_path
        self.cache_dir = cache_dir

    def read(self, path: Path) -> pa.Table:
        """Read the spec's columns of the existing, non-empty file ``path``."""
        raise NotImplementedError

    def column_names(self, path: Path) -> list[str]:
        """The columns of the existing, non-empty file ``path``, from its header or schema (not its data)."""
        raise NotImplementedError

    def check_spec_columns(self, path: Path) -> list[str]:
        """The columns of ``path``; a :class:`DataError` naming the spec's columns it lacks, and the ones it has."""
        names = self.column_names(path)
        error = missing_columns_error(path, self.spec.columns, names)
        if error:
            raise error
        return names

    def check_files(self) -> None:
        """Both files exist, are not empty and have the spec's columns: only their headers are read."""
        for path in (self.train_path, self.eval_path):
            self.check_spec_columns(existing_file(path))

    def read_splits(self) -> tuple[tuple[pa.Table, str], tuple[pa.Table, str]]:
        return (
            (self.read(existing_file(self.train_path)), str(self.train_path)),
            (self.read(existing_file(self.eval_path)), str(self.eval_path)),
        )

    def read_eval(self) -> tuple[pa.Table, str]:
        return self.read(existing_file(self.eval_path)), str(self.eval_path)

    @property
    def reader_options(self) -> dict[str, Any]:
        """How :meth:`read` parses a file (part of the cache key); a subclass with options names them."""
        return {}

    def setup(self, keep_encoding: Mapping[str, Any] | None = None) -> None:
        """See :meth:`TabularData.setup`; with a ``cache_dir``, the encoder and the splits come from the cache when
        it has them. ``keep_encoding`` (fine-tuning) changes the vocabularies: it bypasses the cache."""
        if self.cache_dir is None or keep_encoding is not None:
            super().setup(keep_encoding)
            return
        try:
            files = [existing_file(self.train_path), existing_file(self.eval_path)]
        except DataError:
            super().setup()  # raises the error of the first bad file, as without a cache
            return
        # the code that reads and encodes: an edited reader or encoder must not reuse older encodings
        readers = [c for c in type(self).__mro__ if issubclass(c, FileData)]
        code = source_files(*readers, FeatureEncoder, hash_buckets)
        reader = {"reader": type(self).__qualname__, **self.reader_options, "non_finite": self.non_finite}
        key = cache_key(files, reader, self.spec, code)
        cache = EncodingCache(self.cache_dir)
        found = cache.load(key, self.spec, (str(self.train_path), str(self.eval_path)))
        if found is None:
            super().setup()
            cache.store(key, self.encoder, self.train, self.eval)
            return
        state, self.train, self.eval = found
        self.encoder.load_state_dict(state)
        self.log_splits()
