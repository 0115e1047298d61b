"""Tables made of files: a file, a directory, a glob or a list of them, local or behind a URI, cut into pieces.

A :class:`FileSource` resolves its paths once, with ``pyarrow.fs`` (``s3://``, ``gs://``, ``hdfs://``, ``file://`` or
a local path) and its ``FileSelector``, into sorted files; it reads only their headers or footers to check them
and to count Parquet rows. Its :class:`FileReader` reads a piece: a Parquet file or row group as a ``pyarrow.dataset``
fragment, a CSV file (also ``.gz``, ``.zst``, ... by extension) with pyarrow's streaming CSV reader; the keys of
Hive partitions (``day=.../hour=...`` directories) become string columns.

This module loads neither torch nor ``pyarrow.dataset`` (which loads pandas) until a piece is read: checking the
files stays quick.

Example::

    source = FileSource("logs/day=2026-12-0[1-7]/*.parquet", ParquetFormat())
    source.check(["label", "C1"])                 # the files have the columns (headers and footers only)
    for piece in source.pieces(by="row_group"):   # sorted, with their rows
        for batch in source.reader(piece, ["label", "C1"]):
            ...
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import posixpath
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
import pyarrow.fs as pafs

from easyrec.console import plural
from easyrec.data.pieces import Piece
from easyrec.errors import DataError, first_line

if TYPE_CHECKING:
    import pyarrow.dataset as ds

log = logging.getLogger(__name__)

GLOB_CHARACTERS = "*?["
# what pyarrow.dataset's discovery ignores in a directory (its selector_ignore_prefixes): _SUCCESS, .crc files
IGNORED_PREFIXES = (".", "_")
# S3 requests: tries of one request; each connection gets io_timeout / RETRIES, so that an unreachable endpoint fails
# in about io_timeout seconds
RETRIES = 3


@dataclass(frozen=True)
class FileFacts:
    """What a file's header or footer says: its columns, and the rows of each row group (Parquet; else None)."""

    schema: pa.Schema
    row_groups: tuple[int, ...] | None = None


class TableFormat:
    """How the files of a source are read (picklable: readers in loader workers hold it); see the subclasses in
    :mod:`easyrec.data.csv_data` and :mod:`easyrec.data.parquet_data`."""

    def inspect(self, filesystem: pafs.FileSystem, path: str, name: str) -> FileFacts:
        """The columns (and row groups) of the non-empty file ``path``, from its header or footer, not its data; a
        :class:`DataError` naming it (``name``) if they cannot be read."""
        raise NotImplementedError

    def read(self, reader: FileReader, piece: Piece, columns: list[str]) -> Iterator[pa.RecordBatch]:
        """``columns`` of ``piece`` (partition columns included) with the types of ``reader.schema``; pyarrow's
        errors pass through (:meth:`explain` words them)."""
        raise NotImplementedError

    def explain(self, reader: FileReader, piece: Piece, error: Exception) -> str:
        """The one-line message of ``error`` raised reading ``piece``, naming the piece (and the row, where known)."""
        return f"{reader.name(piece)}: {arrow_message(error)}"


def arrow_message(error: Exception) -> str:
    """pyarrow's message without the line's ``Could not open ... input source '<path>': Invalid:`` preamble."""
    message = first_line(error)
    if message.startswith("Could not open ") and "': " in message:
        message = message.split("': ", 1)[1]
        head, _, rest = message.partition(": ")
        return rest if rest and head.isalnum() else message  # "Invalid: CSV parse error: ..." -> "CSV parse ..."
    return message


class FileReader:
    """Reads pieces of one source's files (a :class:`~easyrec.data.pieces.PieceReader`; picklable).

    With ``on_bad_piece="skip"``, a piece that cannot be read yields nothing, is warned about once and is counted in
    :attr:`skipped` (in the process that read it); such a piece is read whole before its first batch, so that a
    failure half way yields none of its rows. With ``"error"``, batches stream and a failure raises a
    :class:`DataError` naming the piece.

    Attributes:
        schema: the columns of the source's first file, then its partition columns.
        partition_names: the partition columns (strings parsed from each file's ``key=value`` directories).
    """

    def __init__(
        self,
        table_format: TableFormat,
        filesystem: pafs.FileSystem,
        schema: pa.Schema,
        partition_names: list[str],
        on_bad_piece: Literal["error", "skip"],
        names: dict[str, str],
    ) -> None:
        self.format, self.filesystem, self.schema = table_format, filesystem, schema
        self.partition_names = partition_names
        self.on_bad_piece = on_bad_piece
        self.names = names
        self.skipped: dict[Piece, str] = {}

    def __call__(self, piece: Piece, columns: list[str]) -> Iterator[pa.RecordBatch]:
        try:
            if self.on_bad_piece == "error":
                yield from self.format.read(self, piece, columns)
                return
            batches = list(self.format.read(self, piece, columns))
        except (pa.ArrowException, OSError) as error:
            message = self.format.explain(self, piece, error)
            if self.on_bad_piece == "error":
                raise DataError(message) from None
            self.skip(piece, message)
            return
        yield from batches

    def partition_expression(self, piece: Piece) -> ds.Expression:
        """The partition columns' values of ``piece`` as a dataset expression (``true`` when there are none)."""
        import pyarrow.dataset as ds

        return self.partitioning.parse(piece.path) if self.partition_names else ds.scalar(True)

    def partition_values(self, piece: Piece) -> dict[str, str | None]:
        """The partition columns' values of ``piece`` (None for a key its path lacks)."""
        if not self.partition_names:
            return {}
        import pyarrow.dataset as ds

        return {name: None for name in self.partition_names} | ds.get_partition_keys(self.partition_expression(piece))

    @functools.cached_property
    def partitioning(self) -> ds.Partitioning:
        """The Hive partitioning of the partition columns, all strings (the directory's text: ``hour=03`` is
        ``"03"`` whatever the other directories hold)."""
        import pyarrow.dataset as ds

        return ds.HivePartitioning(pa.schema([(name, pa.string()) for name in self.partition_names]))

    def name(self, piece: Piece) -> str:
        """The piece as errors name it (see :func:`file_name`), with its row group."""
        shown = file_name(self.filesystem, self.names, piece.path)
        return shown if piece.row_group is None else f"{shown} (row group {piece.row_group})"

    def skip(self, piece: Piece, reason: str) -> None:
        """Count ``piece`` as skipped and warn about it, once."""
        if piece not in self.skipped:
            self.skipped[piece] = reason
            log.warning("data: skipped a piece that cannot be read (data.on_bad_piece=skip): %s", reason)


def file_name(filesystem: pafs.FileSystem, names: dict[str, str], path: str) -> str:
    """File ``path`` as errors name it: as the user named it (``names``: the files named one by one), else as a
    user writes a path of ``filesystem``: a local path, or a URI (``s3://bucket/key``)."""
    if path in names:
        return names[path]
    return path if filesystem.type_name == "local" else f"{filesystem.type_name}://{path}"


class FileSource:
    """The files of one split: ``paths`` is a file, a directory (every file below it, but those whose name or
    directory starts with ``.`` or ``_``), a glob (``logs/day=2026-12-0[1-7]/*.parquet``, ``**`` for any depth) or a
    list of these, local or URIs on one filesystem. Nothing is read before a method needs it; the files are then
    listed and their headers or footers read once.

    Hive partitions: every ``key=value`` directory in a file's path gives it a string column ``key`` (unless the
    files have a column of that name), however the paths name the file: ``logs/`` and ``logs/day=2026-12-08/``
    both give ``day``.

    Args:
        paths: see above; in a URI, ``?`` starts the query (``s3://bucket/logs/*.csv?endpoint_override=host:9000``).
        table_format: how the files are read.
        io_timeout: seconds an S3 request may take, its retries included.
        on_bad_piece: a file or piece that cannot be read is an ``"error"``, or is skipped (``"skip"``: warned
            about and counted in :attr:`skipped_pieces`).
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        table_format: TableFormat,
        io_timeout: float = 30.0,
        on_bad_piece: Literal["error", "skip"] = "error",
    ) -> None:
        self.entries = [str(paths)] if isinstance(paths, str | Path) else [str(p) for p in paths]
        self.format, self.io_timeout, self.on_bad_piece = table_format, io_timeout, on_bad_piece

    def describe(self) -> str:
        """The paths as given; with the number of files when they are not one file (``logs/ (40 files)``)."""
        given = ", ".join(self.entries)
        files = self._files
        if len(self.entries) == 1 and len(files.infos) == 1 and files.infos[0].path in files.names:
            return given
        return f"{given} ({plural(len(files.infos), 'file')})"

    def pieces(self, by: Literal["file", "row_group"] = "file") -> list[Piece]:
        """The pieces, sorted by path (and row group); Parquet pieces know their rows. ``by="row_group"`` cuts a
        Parquet file into its row groups (a file of no rows has none); CSV files are pieces whole either way."""
        files = self._files
        pieces = []
        for info in files.infos:
            groups = files.facts[info.path].row_groups
            common = {"path": info.path, "size": info.size, "mtime_ns": info.mtime_ns or 0}
            if by == "row_group" and groups is not None:
                pieces += [Piece(row_group=index, rows=rows, **common) for index, rows in enumerate(groups)]
            else:
                pieces.append(Piece(rows=None if groups is None else sum(groups), **common))
        return pieces

    @functools.cached_property
    def reader(self) -> FileReader:
        files = self._files
        return FileReader(
            self.format, files.filesystem, self.schema, files.partition_names, self.on_bad_piece, files.names
        )

    @property
    def schema(self) -> pa.Schema:
        """The first file's columns, then the partition columns (strings)."""
        files = self._files
        schema = files.facts[files.infos[0].path].schema
        for name in files.partition_names:
            if name not in schema.names:
                schema = schema.append(pa.field(name, pa.string()))
        return schema

    @property
    def nbytes(self) -> int:
        """The files' bytes (compressed, as stored)."""
        return sum(info.size for info in self._files.infos)

    @property
    def skipped_pieces(self) -> int:
        """Files skipped when listed (an unreadable header or footer) and pieces this process's :attr:`reader`
        skipped (``on_bad_piece="skip"``); pieces read in other processes are counted there."""
        skipped = len(self._files.skipped)
        return skipped + len(self.reader.skipped) if "reader" in self.__dict__ else skipped

    def check(self, columns: list[str]) -> None:
        """A :class:`DataError` unless the paths name at least one readable file, the first file has ``columns``
        (its own or partition columns), and every other file has them with the first one's types: headers and
        footers only, no data."""
        files = self._files
        schema, first = self.schema, file_name(files.filesystem, files.names, files.infos[0].path)
        error = missing_columns_error(first, columns, schema.names)
        if error:
            raise error
        for info in files.infos[1:]:
            own, name = files.facts[info.path].schema, file_name(files.filesystem, files.names, info.path)
            for column in (c for c in columns if c not in files.partition_names):
                if column not in own.names:
                    raise missing_columns_error(name, [column], own.names)
                wanted, found = schema.field(column).type, own.field(column).type
                if found != wanted:
                    raise DataError(f"{name}: column '{column}' is {found}, but {wanted} in the first file {first}")

    def read_all(self, columns: list[str]) -> pa.Table:
        """``columns`` of every piece, in piece order, as one table (checked first: see :meth:`check`)."""
        self.check(columns)
        schema = pa.schema([self.schema.field(column) for column in columns])
        tables = [pa.Table.from_batches(list(self.reader(piece, columns)), schema) for piece in self.pieces()]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    @functools.cached_property
    def _files(self) -> ListedFiles:
        return list_files(self.entries, self.format, self.io_timeout, self.on_bad_piece)


def missing_columns_error(name: str | Path, wanted: list[str], present: list[str]) -> DataError | None:
    """A :class:`DataError` naming the file, the ``wanted`` columns it lacks and those it has; None if none lacks."""
    missing = [c for c in wanted if c not in present]
    if not missing:
        return None
    return DataError(
        f"{name}: column {', '.join(repr(c) for c in missing)} not found; the columns are: {', '.join(present)}"
    )


# ------------------------------------------------------------------------------------------------- listing


@dataclass
class ListedFiles:
    """The readable files of a source, sorted by path, and what their headers and footers say.

    Attributes:
        filesystem: the one filesystem of every path.
        infos: the files (their path, size and modification time).
        facts: each file's columns and row groups, by path.
        names: the files the user named one by one, as named (errors name them so).
        partition_names: the partition keys, in the order they first appear.
        skipped: files left out as unreadable (``on_bad_piece="skip"``).
    """

    filesystem: pafs.FileSystem
    infos: list[pafs.FileInfo]
    facts: dict[str, FileFacts]
    names: dict[str, str]
    partition_names: list[str]
    skipped: list[str]


def list_files(
    entries: list[str], table_format: TableFormat, io_timeout: float, on_bad_piece: Literal["error", "skip"]
) -> ListedFiles:
    """Resolve ``entries`` (see :class:`FileSource`) and read every file's header or footer."""
    if not entries:
        raise DataError("no path given: name a file, a directory, a glob or a list of them")
    located = [Location.of(entry, io_timeout) for entry in entries]
    filesystem = located[0].filesystem
    for location in located[1:]:
        if not filesystem.equals(location.filesystem):
            first = located[0].shown
            raise DataError(f"{location.shown}: not on the filesystem of {first}; the paths of a split must share one")
    infos, names = {}, {}
    for location in located:
        found, named = location.files(io_timeout)
        infos.update((info.path, info) for info in found)
        names.update({found[0].path: location.shown} if named else {})
    listed = [infos[path] for path in sorted(infos)]
    facts, skipped, kept = {}, [], []
    for info, result in zip(listed, inspect_files(filesystem, listed, table_format, names), strict=True):
        if isinstance(result, DataError):
            if on_bad_piece == "error":
                raise result
            log.warning("data: skipped a file that cannot be read (data.on_bad_piece=skip): %s", result)
            skipped.append(info.path)
            continue
        facts[info.path] = result
        kept.append(info)
    if not kept:
        raise DataError(f"{', '.join(entries)}: no readable file (each was skipped: data.on_bad_piece=skip)")
    # a key that is also a column of the files is theirs: the directory does not replace their values
    keys = partition_keys([info.path for info in kept])
    partition_names = [key for key in keys if key not in facts[kept[0].path].schema.names]
    return ListedFiles(filesystem, kept, facts, names, partition_names, skipped)


@dataclass(frozen=True)
class Location:
    """One entry of a source's paths, on its filesystem: ``path`` (a glob's prefix) and ``pattern`` (the glob's
    rest, or ""); ``shown`` is the entry as errors name it."""

    filesystem: pafs.FileSystem
    path: str
    pattern: str
    shown: str

    @classmethod
    def of(cls, entry: str, io_timeout: float) -> Location:
        location, query = entry.partition("?")[::2] if "://" in entry else (entry, "")
        prefix, pattern = split_glob(location)
        filesystem, path = open_filesystem(prefix, query, io_timeout)
        return cls(filesystem, path, pattern, str(Path(entry).expanduser()) if "://" not in entry else location)

    def files(self, io_timeout: float) -> tuple[list[pafs.FileInfo], bool]:
        """``(files, whether the entry names one file)``; a :class:`DataError` if there are none."""
        local = self.filesystem.type_name == "local"
        hint = f" (relative paths are taken from {Path.cwd()})" if local else ""
        try:
            if self.pattern:
                selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
                found = [
                    info
                    for info in self.filesystem.get_file_info(selector)
                    if info.is_file and selected(relative_parts(info.path, self.path), self.pattern.split("/"))
                ]
                if not found:
                    raise DataError(f"{self.shown}: no file matches this pattern{hint}")
                return found, False
            info = self.filesystem.get_file_info(self.path)
            if info.type == pafs.FileType.NotFound:
                raise DataError(f"{self.shown}: file not found{hint}")
            if info.type == pafs.FileType.File:
                return [info], True
            found = [
                info
                for info in self.filesystem.get_file_info(pafs.FileSelector(self.path, recursive=True))
                if info.is_file and not hidden(relative_parts(info.path, self.path))
            ]
        except (pa.ArrowException, OSError) as error:
            timeout = "" if local else f" (data.io_timeout={io_timeout:g} s)"
            raise DataError(f"{self.shown}: cannot list the files: {first_line(error)}{timeout}") from None
        if not found:
            raise DataError(
                f"{self.shown}: a directory without data files (names that start with '.' or '_' are ignored)"
            )
        return found, False


def split_glob(location: str) -> tuple[str, str]:
    """``(prefix, pattern)``: the path segments before the first with a glob character, and the rest ("" if none)."""
    parts = location.split("/")
    for index, part in enumerate(parts):
        if any(character in part for character in GLOB_CHARACTERS):
            return "/".join(parts[:index]), "/".join(parts[index:])
    return location, ""


def glob_matches(parts: list[str], pattern: list[str]) -> bool:
    """Whether path segments ``parts`` match the glob's segments (fnmatch each; ``**``: any number of segments)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(glob_matches(parts[index:], pattern[1:]) for index in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and glob_matches(parts[1:], pattern[1:])


def selected(parts: list[str], glob: list[str]) -> bool:
    """Whether a file (its path's segments below the glob's prefix) is not hidden and matches the glob, or lies
    below a directory that matches it (``logs/day=2026-12-0[1-7]`` selects those days' files)."""
    return not hidden(parts) and any(glob_matches(parts[:k], glob) for k in range(1, len(parts) + 1))


def relative_parts(path: str, base: str) -> list[str]:
    return path[len(base) :].strip("/").split("/")


def hidden(parts: list[str]) -> bool:
    return any(part.startswith(IGNORED_PREFIXES) for part in parts)


def open_filesystem(location: str, query: str, io_timeout: float) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a path or URI, and the path on it; S3 requests time out after ``io_timeout`` seconds."""
    if "://" not in location:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location or "."))
    uri = f"{location}?{query}" if query else location
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{location}: {first_line(error)}") from None
    if filesystem.type_name == "s3":
        # the options pyarrow read from the URI and the environment, as it pickles them, with our timeouts
        options = filesystem.__reduce__()[1][0]
        options.update(connect_timeout=io_timeout / RETRIES, request_timeout=io_timeout)
        filesystem = pafs.S3FileSystem(**options, retry_strategy=pafs.AwsStandardS3RetryStrategy(RETRIES))
    return filesystem, path


def inspect_files(
    filesystem: pafs.FileSystem, infos: list[pafs.FileInfo], table_format: TableFormat, names: dict[str, str]
) -> list[FileFacts | DataError]:
    """Each file's facts, or the error that names it (an empty file, an unreadable header or footer); up to 16
    files are read at once (an object store answers each request in tens of milliseconds)."""

    def inspect(info: pafs.FileInfo) -> FileFacts | DataError:
        name = file_name(filesystem, names, info.path)
        if info.size == 0:
            return DataError(f"{name}: the file is empty")
        try:
            return table_format.inspect(filesystem, info.path, name)
        except DataError as error:
            return error

    if len(infos) == 1:
        return [inspect(infos[0])]
    with ThreadPoolExecutor(max_workers=min(16, len(infos))) as pool:
        return list(pool.map(inspect, infos))


def partition_keys(paths: list[str]) -> list[str]:
    """The keys of the Hive partitions (``key=value`` directories) in ``paths``, in the order they first appear."""
    directories = (posixpath.dirname(path).split("/") for path in paths)
    return list(dict.fromkeys(part.split("=")[0] for parts in directories for part in parts if "=" in part[1:]))
