"""What the file-backed data sources share: train and eval files (see :mod:`easyrec.data.sources`), and checks
on both."""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pyarrow as pa
from pydantic import AfterValidator

from easyrec.config.arguments import NonNegativeInt, Positive, PositiveInt, checked
from easyrec.console import plural
from easyrec.data.cache import EncodingCache, cache_key
from easyrec.data.features import FeatureEncoder, FeatureSpec
from easyrec.data.hashing import hash_buckets
from easyrec.data.sources import FileSource, TableFormat
from easyrec.data.tabular import TabularData, Workers
from easyrec.errors import DataError

if TYPE_CHECKING:
    from easyrec.data.batches import Batch, TrainStep
    from easyrec.data.stream import StreamedSplits

log = logging.getLogger(__name__)

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


def byte_count(value: int | str) -> int:
    """Bytes from an integer or a size such as ``"4GB"``, ``"512 MiB"`` (the config rule of ``memory_budget``)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([A-Za-z]*)\s*", str(value))
    if match is None or match.group(2).upper() not in _UNITS or isinstance(value, bool):
        raise ValueError("must be a number of bytes: an integer or a size such as 4GB or 512MiB")
    count = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if count <= 0:
        raise ValueError("must be more than 0 bytes")
    return count


Bytes = Annotated[int | str, AfterValidator(byte_count)]


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
        streaming: read the training split as a stream of pieces (see :mod:`easyrec.data.stream`) instead of
            whole into memory; ``"auto"``: when its estimated encoded size exceeds ``memory_budget``.
        memory_budget: bytes (an integer, or a size such as ``"4GB"``) the in-memory split may take in ``"auto"``
            mode; None: half of the memory available when the run starts.
        num_workers: loader worker processes per rank that read and encode the stream (0: the training process).
        shuffle_buffer: rows per shuffled window of the stream (the rows a loader worker holds).
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
        streaming: Literal["auto", True, False] = "auto",
        memory_budget: Bytes | None = None,
        num_workers: NonNegativeInt = 1,
        shuffle_buffer: PositiveInt = 100_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(features, **kwargs)
        self.train_path, self.eval_path = train_path, eval_path
        self.cache_dir = cache_dir
        self.on_bad_piece, self.io_timeout = on_bad_piece, io_timeout
        self.streaming, self.memory_budget = streaming, memory_budget
        self.num_workers, self.shuffle_buffer = num_workers, shuffle_buffer
        self.streamed: StreamedSplits | None = None  # the streamed splits, in streaming mode

    @property
    def streams(self) -> bool:  # type: ignore[override]
        return self.streamed is not None

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

    def cache_key(self) -> str:
        """The key of this source's entries in the encoding cache: the pieces of both splits, the reader options,
        the feature spec and the code that reads and encodes (an edited reader or encoder must not reuse older
        encodings)."""
        pieces = self.train_source.pieces() + self.eval_source.pieces()
        readers = [c for c in type(self).__mro__ if issubclass(c, FileData)]
        code = source_files(*readers, FileSource, FeatureEncoder, hash_buckets)
        reader = {
            "reader": type(self).__qualname__,
            **self.reader_options,
            "non_finite": self.non_finite,
            "on_bad_piece": self.on_bad_piece,
        }
        return cache_key(pieces, reader, self.spec, code)

    def setup(self, keep_encoding: Mapping[str, Any] | None = None) -> None:
        """See :meth:`TabularData.setup`; with a ``cache_dir``, the encoder and the splits come from the cache when
        it has them. ``keep_encoding`` (fine-tuning) changes the vocabularies: it bypasses the cache. In streaming
        mode (:meth:`chooses_streaming`) the encoder is fitted in one pass over the training pieces and nothing is
        encoded ahead."""
        if self.chooses_streaming():
            self.setup_stream(keep_encoding)
            return
        if self.cache_dir is None or keep_encoding is not None:
            super().setup(keep_encoding)
            return
        try:
            key = self.cache_key()
        except DataError:
            super().setup()  # raises the error of the first bad file, as without a cache
            return
        cache = EncodingCache(self.cache_dir)
        found = cache.load(key, self.spec, (self.train_source.describe(), self.eval_source.describe()))
        if found is None:
            super().setup()
            cache.store(key, self.encoder, self.train, self.eval)
            return
        state, self.train, self.eval = found
        self.encoder.load_state_dict(state)
        self.log_splits()

    # ------------------------------------------------------------------ streaming mode

    def chooses_streaming(self) -> bool:
        """Whether the training split is streamed: ``streaming``, or in ``"auto"`` mode whether its estimated size
        in memory (encoded bytes per row x rows where the pieces know their rows, else the files' bytes) exceeds
        the memory budget; the choice and its reason are logged."""
        if self.streaming != "auto":
            log.info("data: %s (data.streaming=%s)", _MODES[self.streaming], str(self.streaming).lower())
            return self.streaming
        pieces = self.train_source.pieces(by="row_group")
        rows = [piece.rows for piece in pieces]
        if all(r is not None for r in rows):
            size, what = sum(rows) * self.encoded_row_bytes(), f"{plural(sum(rows), 'row')} encoded"
        else:
            size, what = self.train_source.nbytes, "the files' size"
        budget = self.memory_budget or _available_bytes() // 2
        streams = size > budget
        log.info(
            "data: %s (data.streaming=auto: %s, %s, %s data.memory_budget %s)",
            _MODES[streams],
            _size(size),
            what,
            ">" if streams else "<=",
            _size(budget) if self.memory_budget else f"{_size(budget)}, half the available memory",
        )
        return streams

    def encoded_row_bytes(self) -> int:
        """Bytes of one encoded row: dense and labels float32, ids (and list ids) int32, a weight float32, a
        session int64."""
        spec = self.spec
        return 4 * (len(spec.dense_names) + len(spec.categorical_names) + spec.list_width + len(spec.label_names)) + (
            4 * bool(spec.weight) + 8 * bool(spec.session)
        )

    def setup_stream(self, keep_encoding: Mapping[str, Any] | None = None) -> None:
        """Fit the encoder in one pass over the training pieces (never the whole split), or load it from the
        encoding cache's encoder-only entry, and get the streams ready; the pieces' rows counted by the pass place
        a resumed stream without reading."""
        from easyrec.data.stream import PieceEncoding, StreamedSplits

        train, eval_ = self.train_source, self.eval_source
        pieces = train.pieces(by="row_group")
        # fine-tuning (keep_encoding) changes the vocabularies: it bypasses the cache
        cache = EncodingCache(self.cache_dir) if self.cache_dir is not None and keep_encoding is None else None
        key = self.cache_key() if cache is not None else ""
        found = cache.load_encoder(key, self.spec) if cache is not None else None
        if found is None:
            rows = self.encoder.fit_pieces(pieces, train.reader, train.describe(), keep=keep_encoding)
            if cache is not None:
                cache.store_encoder(key, self.encoder, rows)
        else:
            state, rows = found
            self.encoder.load_state_dict(state)
        encoding = PieceEncoding(train.reader, self.encoder, self.spec.columns, self.label_rules, rows)
        self.streamed = StreamedSplits(
            encoding,
            replace(encoding, reader=eval_.reader, rows=None),
            pieces,
            eval_.pieces(by="row_group"),
            self.batch_size,
            self.eval_batch_size,
            self.shuffle,
            self.seed,
            self.num_workers,
            self.shuffle_buffer,
        )
        log.info(
            "data: streaming %s (%s), eval %s (%s), %s per loader worker window, %s",
            plural(len(pieces), "train piece"),
            train.describe(),
            plural(len(self.streamed.eval_pieces), "piece"),
            eval_.describe(),
            plural(self.shuffle_buffer, "row"),
            self.input_spec.described,
        )

    def train_steps(
        self, epoch: int, workers: Workers | None = None, position: Mapping[str, Any] | None = None
    ) -> Iterator[TrainStep]:
        if self.streamed is None:
            return super().train_steps(epoch, workers, position)
        return self.streamed.train_steps(epoch, workers, position)

    def position(self) -> dict[str, Any]:
        return super().position() if self.streamed is None else self.streamed.position()

    def eval_batches(self, workers: Workers | None = None, max_rows: int | None = None) -> Iterator[Batch]:
        if self.streamed is None:
            return super().eval_batches(workers, max_rows)
        return self.streamed.eval_batches(workers, max_rows)

    def train_label_values(self, column: str) -> tuple[list[float], str] | None:
        """See :meth:`TabularData.train_label_values`; a streamed split is read for it, that column alone."""
        if self.streamed is None:
            return super().train_label_values(column)
        import pyarrow.compute as pc

        values: set[float] = set()
        for piece in self.streamed.train_pieces:
            for record in self.train_source.reader(piece, [column]):
                values.update(v for v in pc.unique(record.column(0)).to_pylist() if v is not None)
        return sorted(values), self.train_source.describe()

    def num_train_steps(self, workers: int = 1, accumulate: int = 1) -> int:
        if self.streamed is None:
            return super().num_train_steps(workers, accumulate)
        return self.streamed.num_train_steps(workers, accumulate)


_MODES = {True: "streaming the training split", False: "reading the training split into memory"}


def _size(count: int) -> str:
    if count < 2**20:
        return plural(count, "byte")
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def _available_bytes() -> int:
    """The memory available to this process now (see :func:`easyrec.memory.available_bytes`)."""
    import torch

    from easyrec.memory import available_bytes

    return available_bytes(torch.device("cpu"))
