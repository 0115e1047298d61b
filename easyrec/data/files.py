"""What the file-backed data sources share: train and eval files (see :mod:`easyrec.data.sources`), and checks
on both."""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from easyrec.config.arguments import Positive, checked
from easyrec.data.cache import EncodingCache, cache_key
from easyrec.data.features import FeatureEncoder, FeatureSpec
from easyrec.data.hashing import hash_buckets
from easyrec.data.sources import FileSource, TableFormat
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


def source_files(*objects: Any) -> list[Path]:
    """The files that define ``objects`` (classes, functions), once each; one defined interactively has none."""
    files = (getattr(sys.modules.get(o.__module__), "__file__", None) for o in objects)
    return [Path(name) for name in dict.fromkeys(files) if name]


class FileData(TabularData):
    """A data source whose train and eval splits are files; subclasses say how a file is read (:meth:`table_format`).

    Each split is a :class:`~easyrec.data.sources.FileSource` (:attr:`train_source`, :attr:`eval_source`): a file, a
    directory, a glob or a list of them, local or a URI (``s3://``, ``gs://``, ``hdfs://``), Hive partitions
    included. With a ``cache_dir``, :meth:`setup` keeps the fitted encoder and the encoded splits there (see
    :mod:`easyrec.data.cache`) and later runs on the same files, reader options and feature spec load them instead
    of reading and encoding the files again.

    Args:
        train_path: the training files: a file, a directory, a glob (``logs/day=2026-12-0[1-7]/*.parquet``) or a
            list of them.
        eval_path: the evaluation files, likewise.
        cache_dir: where encoded splits are cached; None (the default here; the shipped configs give
            ``~/.cache/easyrec/data``): no cache.
        on_bad_piece: a corrupt or truncated file (or Parquet row group) is an ``"error"`` naming it, or is
            ``"skip"``-ped: warned about once and counted (:attr:`skipped_pieces`).
        io_timeout: seconds an S3 request may take, retries included: an unreachable endpoint fails in about that.
        **kwargs: see :class:`TabularData`.
    """

    @checked
    def __init__(
        self,
        features: FeatureSpec | Mapping[str, Any],
        train_path: str | list[str],
        eval_path: str | list[str],
        cache_dir: str | None = None,
        on_bad_piece: Literal["error", "skip"] = "error",
        io_timeout: Positive = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(features, **kwargs)
        self.train_path, self.eval_path = train_path, eval_path
        self.cache_dir = cache_dir
        self.on_bad_piece, self.io_timeout = on_bad_piece, io_timeout

    def table_format(self) -> TableFormat:
        """How this source's files are read."""
        raise NotImplementedError

    def source(self, paths: str | Path | list[str]) -> FileSource:
        """The files ``paths`` names, read as this source reads its splits."""
        return FileSource(paths, self.table_format(), self.io_timeout, self.on_bad_piece)

    @functools.cached_property
    def train_source(self) -> FileSource:
        return self.source(self.train_path)

    @functools.cached_property
    def eval_source(self) -> FileSource:
        return self.source(self.eval_path)

    @property
    def skipped_pieces(self) -> int:
        """Pieces of both splits skipped as unreadable in this process (``on_bad_piece=skip``)."""
        return sum(s.skipped_pieces for s in (self.__dict__.get("train_source"), self.__dict__.get("eval_source")) if s)

    def read(self, paths: str | Path | list[str] | FileSource) -> pa.Table:
        """The spec's columns of the files ``paths`` names (or of a source), checked first: see
        :meth:`FileSource.read_all`."""
        source = paths if isinstance(paths, FileSource) else self.source(paths)
        return source.read_all(self.spec.columns)

    def check_files(self) -> None:
        """Both splits name at least one file, and their files have the spec's columns with the first file's
        types: only headers and footers are read."""
        for source in (self.train_source, self.eval_source):
            source.check(self.spec.columns)

    def read_splits(self) -> tuple[tuple[pa.Table, str], tuple[pa.Table, str]]:
        return (
            (self.read(self.train_source), self.train_source.describe()),
            (self.read(self.eval_source), self.eval_source.describe()),
        )

    def read_eval(self) -> tuple[pa.Table, str]:
        return self.read(self.eval_source), self.eval_source.describe()

    @property
    def reader_options(self) -> dict[str, Any]:
        """How :meth:`table_format` parses a file (part of the cache key); a subclass with options names them."""
        return {}

    def setup(self, keep_encoding: Mapping[str, Any] | None = None) -> None:
        """See :meth:`TabularData.setup`; with a ``cache_dir``, the encoder and the splits come from the cache when
        it has them. ``keep_encoding`` (fine-tuning) changes the vocabularies: it bypasses the cache."""
        if self.cache_dir is None or keep_encoding is not None:
            super().setup(keep_encoding)
            return
        try:
            pieces = self.train_source.pieces() + self.eval_source.pieces()
        except DataError:
            super().setup()  # raises the error of the first bad file, as without a cache
            return
        # the code that reads and encodes: an edited reader or encoder must not reuse older encodings
        readers = [c for c in type(self).__mro__ if issubclass(c, FileData)]
        code = source_files(*readers, FileSource, FeatureEncoder, hash_buckets)
        reader = {
            "reader": type(self).__qualname__,
            **self.reader_options,
            "non_finite": self.non_finite,
            "on_bad_piece": self.on_bad_piece,
        }
        key = cache_key(pieces, reader, self.spec, code)
        cache = EncodingCache(self.cache_dir)
        found = cache.load(key, self.spec, (self.train_source.describe(), self.eval_source.describe()))
        if found is None:
            super().setup()
            cache.store(key, self.encoder, self.train, self.eval)
            return
        state, self.train, self.eval = found
        self.encoder.load_state_dict(state)
        self.log_splits()
