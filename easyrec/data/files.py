"""What the file-backed data sources share: a train file, an eval file, and checks on both."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pyarrow as pa
from pydantic import AfterValidator

from easyrec.config.arguments import NonNegativeInt, PositiveInt, checked
from easyrec.console import plural
from easyrec.data.cache import EncodingCache, cache_key
from easyrec.data.features import FeatureEncoder, FeatureSpec
from easyrec.data.hashing import hash_buckets
from easyrec.data.pieces import Piece, PieceReader
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
        train_path: str,
        eval_path: str,
        cache_dir: str | None = None,
        streaming: Literal["auto", True, False] = "auto",
        memory_budget: Bytes | None = None,
        num_workers: NonNegativeInt = 1,
        shuffle_buffer: PositiveInt = 100_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(features, **kwargs)
        self.train_path, self.eval_path = train_path, eval_path
        self.cache_dir = cache_dir
        self.streaming, self.memory_budget = streaming, memory_budget
        self.num_workers, self.shuffle_buffer = num_workers, shuffle_buffer
        self.streamed: StreamedSplits | None = None  # the streamed splits, in streaming mode

    @property
    def streams(self) -> bool:  # type: ignore[override]
        return self.streamed is not None

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

    def cache_key(self) -> str:
        """The key of this source's entries in the encoding cache: the files, the reader options, the feature spec
        and the code that reads and encodes (an edited reader or encoder must not reuse older encodings)."""
        files = [existing_file(self.train_path), existing_file(self.eval_path)]
        readers = [c for c in type(self).__mro__ if issubclass(c, FileData)]
        code = source_files(*readers, FeatureEncoder, hash_buckets)
        reader = {"reader": type(self).__qualname__, **self.reader_options, "non_finite": self.non_finite}
        return cache_key(files, reader, self.spec, code)

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
        found = cache.load(key, self.spec, (str(self.train_path), str(self.eval_path)))
        if found is None:
            super().setup()
            cache.store(key, self.encoder, self.train, self.eval)
            return
        state, self.train, self.eval = found
        self.encoder.load_state_dict(state)
        self.log_splits()

    # ------------------------------------------------------------------ streaming mode

    @property
    def train_source(self) -> FileSource:
        """The training file as pieces (a stand-in for the many-file sources of issue 18 item 1)."""
        return FileSource(existing_file(self.train_path), self.piece_reader(), self.row_groups)

    @property
    def eval_source(self) -> FileSource:
        return FileSource(existing_file(self.eval_path), self.piece_reader(), self.row_groups)

    row_groups = False  # whether the format has row groups, the pieces of its files

    def piece_reader(self) -> PieceReader:
        """Reads pieces of this format with the reader options (picklable: loader workers read with it)."""
        raise NotImplementedError

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
        """Bytes of one encoded row: dense and labels float32, ids int32, a weight float32, a session int64."""
        spec = self.spec
        return 4 * (len(spec.dense_names) + len(spec.categorical_names) + len(spec.label_names)) + (
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
        found = cache.load_encoder(self.cache_key(), self.spec) if cache is not None else None
        if found is None:
            rows = self.encoder.fit_pieces(pieces, train.reader, train.describe(), keep=keep_encoding)
            if cache is not None:
                cache.store_encoder(self.cache_key(), self.encoder, rows)
        else:
            state, rows = found
            self.encoder.load_state_dict(state)
        encoding = PieceEncoding(train.reader, self.encoder, self.spec.columns, self.label_rules, rows)
        self.streamed = StreamedSplits(
            encoding,
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
            "data: streaming %s (%s), eval %s (%s), %s per loader worker window, %d dense + %d categorical features",
            plural(len(pieces), "train piece"),
            train.describe(),
            plural(len(self.streamed.eval_pieces), "piece"),
            eval_.describe(),
            plural(self.shuffle_buffer, "row"),
            self.input_spec.num_dense,
            self.input_spec.num_fields,
        )

    def train_steps(
        self, epoch: int, workers: Workers | None = None, position: Mapping[str, Any] | None = None
    ) -> Iterator[TrainStep]:
        if self.streamed is None:
            return super().train_steps(epoch, workers, position)
        return self.streamed.train_steps(epoch, workers, position)

    def position(self) -> dict[str, Any]:
        return super().position() if self.streamed is None else self.streamed.position()

    def eval_batches(self, workers: Workers | None = None) -> Iterator[Batch]:
        if self.streamed is None:
            return super().eval_batches(workers)
        return self.streamed.eval_batches(workers)

    def num_train_steps(self, workers: int = 1, accumulate: int = 1) -> int:
        if self.streamed is None:
            return super().num_train_steps(workers, accumulate)
        return self.streamed.num_train_steps(workers, accumulate)


@dataclass
class FileSource:
    """One file as pieces: its Parquet row groups (``row_groups``), or the whole file."""

    path: Path
    reader: PieceReader
    row_groups: bool

    @property
    def nbytes(self) -> int:
        return self.path.stat().st_size

    def describe(self) -> str:
        return str(self.path)

    def pieces(self, by: str = "row_group") -> list[Piece]:
        stat = self.path.stat()
        if not (self.row_groups and by == "row_group"):
            return [Piece(str(self.path), None, stat.st_size, stat.st_mtime_ns)]
        import pyarrow.parquet as pq

        from easyrec.data.parquet_data import unreadable_parquet

        with unreadable_parquet(self.path):
            metadata = pq.ParquetFile(self.path).metadata
        return [
            Piece(str(self.path), group, stat.st_size, stat.st_mtime_ns, metadata.row_group(group).num_rows)
            for group in range(metadata.num_row_groups)
        ]


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
