"""An on-disk cache of encoded splits, so that the jobs of a sweep read and encode the same files once.

An entry is a directory named by a key that covers everything the encoding depends on (:func:`cache_key`): the
files (path, size, modification and change times), the reader's options, the feature spec and the code that
encodes. It holds the fitted encoder (vocabularies as Arrow IPC files, statistics as JSON) and every tensor of
both splits as a ``.npy`` file, memory-mapped when loaded: a hit costs milliseconds and no copy of the data.

Entries are written into a temporary sibling directory and renamed into place, so concurrent writers (the jobs
of a sweep, DDP workers) never leave a half entry. An entry that cannot be read back is dropped with a warning,
and the splits are encoded again: a cache problem never stops a run.

A streaming run encodes as it trains: its entry (the key's name and ``.encoder``) holds only the fitted encoder and
the rows of each piece of the training table, counted by the encoding pass (:meth:`EncodingCache.store_encoder`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, astuple
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa

from easyrec.data.features import FeatureEncoder, FeatureSpec
from easyrec.data.pieces import Piece

if TYPE_CHECKING:
    import torch

    from easyrec.data.batches import EncodedSplit

log = logging.getLogger(__name__)
T = TypeVar("T")

FORMAT_VERSION = 1
SPLITS = ("train", "eval")
ENCODER_ONLY = ".encoder"  # the name of an encoder-only entry: its key and this
# dtype of each EncodedSplit tensor, as FeatureEncoder.encode makes them
TENSOR_DTYPES = {
    "dense": np.dtype(np.float32),
    "sparse": np.dtype(np.int32),
    "labels": np.dtype(np.float32),
    "weights": np.dtype(np.float32),
    "sessions": np.dtype(np.int64),
    "oracle": np.dtype(np.float32),
    "lists": np.dtype(np.int32),
}


class BadEntry(Exception):
    """What is wrong with a cache entry, in a few words."""


def cache_key(pieces: Sequence[Piece], reader: Mapping[str, Any], spec: FeatureSpec, code: Sequence[Path]) -> str:
    """sha256 (hex) of the cache format, the ``pieces`` (path, row group, size and mtime; and the ctime of a local
    file: a rewrite, even one that keeps the size and puts the mtime back, changes the key), the ``reader`` options,
    the whole feature ``spec`` and the source of the ``code`` that reads and encodes (an edited encoder never
    reuses old encodings), with the pyarrow and numpy versions."""
    described = {
        "format": FORMAT_VERSION,
        "pieces": [[p.path, p.row_group, p.size, p.mtime_ns, local_ctime_ns(p.path)] for p in pieces],
        "reader": reader,
        "features": asdict(spec),
        "code": [hashlib.sha256(path.read_bytes()).hexdigest() for path in code],
        "libraries": [pa.__version__, np.__version__],
    }
    text = json.dumps(described, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def local_ctime_ns(path: str) -> int | None:
    """The inode change time of ``path`` if it is a local file (pieces of local files have absolute paths; those of
    an object store, ``bucket/key``, do not), else None."""
    try:
        return os.stat(path).st_ctime_ns if os.path.isabs(path) else None
    except OSError:
        return None


class EncodingCache:
    """Entries of fitted encoders and their encoded train and eval splits, one directory per key under ``directory``.

    Example::

        cache = EncodingCache("~/.cache/easyrec/data")
        found = cache.load(key, spec, sources=("train.csv", "eval.csv"))  # None on a miss
        if found is None:
            ...  # fit encoder, encode train and eval
            cache.store(key, encoder, train, eval_)
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()

    def load(
        self, key: str, spec: FeatureSpec, sources: tuple[str, str]
    ) -> tuple[dict[str, Any], EncodedSplit, EncodedSplit] | None:
        """``(encoder state, train, eval)`` of entry ``key``, or None if there is none or it cannot be read (then it
        is dropped, with a warning). The state's vocabularies are Arrow arrays and the tensors map the entry's
        files (copy-on-write: writing to them never changes the entry). ``sources`` name the splits in errors."""
        entry = self.directory / key
        found = self._load(entry, lambda entry: read_entry(entry, key, spec, sources), "encoding the files")
        if found is not None:
            log.info("data: encoded splits from cache %s", entry)
        return found

    def store(self, key: str, encoder: FeatureEncoder, train: EncodedSplit, eval_: EncodedSplit) -> None:
        """Write entry ``key`` unless an equal one is already there (another job stored it first). A directory
        that cannot be written is warned about, never raised."""
        entry = self.directory / key
        if self._store(entry, lambda staging: write_entry(staging, key, encoder, {"train": train, "eval": eval_})):
            log.info("data: encoded splits cached in %s", entry)

    def load_encoder(self, key: str, spec: FeatureSpec) -> tuple[dict[str, Any], dict[Piece, int]] | None:
        """``(encoder state, rows of each piece)`` of the encoder-only entry ``key`` (a streaming run's: nothing is
        encoded ahead), or None if there is none or it cannot be read (then it is dropped, with a warning)."""
        entry = self.directory / f"{key}{ENCODER_ONLY}"
        found = self._load(entry, lambda entry: read_encoder_entry(entry, key, spec), "fitting the encoding")
        if found is not None:
            log.info("data: fitted encoding from cache %s", entry)
        return found

    def store_encoder(self, key: str, encoder: FeatureEncoder, rows_per_piece: Mapping[Piece, int]) -> None:
        """Write the encoder-only entry ``key``: the fitted ``encoder`` and the rows of each piece (what
        :meth:`FeatureEncoder.fit_pieces` returns), as :meth:`store` writes an entry."""
        entry = self.directory / f"{key}{ENCODER_ONLY}"
        if self._store(entry, lambda staging: write_encoder_entry(staging, key, encoder, rows_per_piece)):
            log.info("data: fitted encoding cached in %s", entry)

    def _load(self, entry: Path, read: Callable[[Path], T], redo: str) -> T | None:
        """``read(entry)``, or None if ``entry`` is absent or ``read`` fails (the entry is then dropped, with a
        warning that says what is done instead: ``redo``, again)."""
        if not entry.is_dir():
            return None
        try:
            return read(entry)
        except (BadEntry, OSError, ValueError, KeyError, TypeError, pa.ArrowException) as error:
            log.warning("data: cache entry %s is unreadable (%s); %s again", entry, error, redo)
            drop(entry)
            return None

    def _store(self, entry: Path, write: Callable[[Path], None]) -> bool:
        """``write`` the entry into a staging directory and rename it to ``entry``; whether ``entry`` is there."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=self.directory))
        except OSError as error:
            log.warning(
                "data.cache_dir=%s: not writable (%s); training without the cache",
                self.directory,
                error.strerror or error,
            )
            return False
        try:
            write(staging)
            os.rename(staging, entry)
        except (OSError, pa.ArrowException) as error:
            if not entry.is_dir():  # a lost race leaves the winner's entry: nothing to say
                log.warning(
                    "data.cache_dir=%s: could not write %s (%s); training without the cache",
                    self.directory,
                    entry,
                    error,
                )
                return False
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return True


def write_entry(directory: Path, key: str, encoder: FeatureEncoder, splits: Mapping[str, EncodedSplit]) -> None:
    """The files of an entry; ``manifest.json`` last."""
    fitted = write_encoder(directory, encoder)
    tensors: dict[str, list[str]] = {}
    for split, data in splits.items():
        tensors[split] = [field for field in TENSOR_DTYPES if getattr(data, field) is not None]
        for field in tensors[split]:
            np.save(directory / f"{split}-{field}.npy", getattr(data, field).numpy(), allow_pickle=False)
    manifest = {
        "format": FORMAT_VERSION,
        "key": key,
        "sources": {split: data.source for split, data in splits.items()},
        "rows": {split: len(data) for split, data in splits.items()},
        "tensors": tensors,
        **fitted,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))


def write_encoder_entry(directory: Path, key: str, encoder: FeatureEncoder, rows: Mapping[Piece, int]) -> None:
    """The files of an encoder-only entry (the ``rows`` of each piece in its manifest); ``manifest.json`` last."""
    fitted = write_encoder(directory, encoder)
    pieces = [[*astuple(piece), count] for piece, count in rows.items()]
    manifest = {"format": FORMAT_VERSION, "key": key, "entry": "encoder", "pieces": pieces, **fitted}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))


def write_encoder(directory: Path, encoder: FeatureEncoder) -> dict[str, Any]:
    """Write the vocabularies of ``encoder`` (Arrow IPC files); return the rest of its state, for the manifest."""
    vocabularies = list(encoder.vocabularies)
    for index, name in enumerate(vocabularies):
        values = encoder.vocabularies[name]
        with pa.OSFile(str(directory / f"vocabulary-{index}.arrow"), "wb") as sink:
            with pa.ipc.new_file(sink, pa.schema([("id", values.type)])) as writer:
                writer.write_batch(pa.record_batch([values], names=["id"]))
    return {"vocabularies": vocabularies, "mean": encoder.mean, "std": encoder.std, "kinds": encoder.kinds}


def read_manifest(entry: Path, key: str) -> dict[str, Any]:
    """The manifest of ``entry``: :class:`BadEntry` unless it is that of this format and ``key``."""
    manifest_path = entry / "manifest.json"
    if not manifest_path.is_file():
        raise BadEntry("manifest.json is missing")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT_VERSION or manifest.get("key") != key:
        raise BadEntry(f"manifest.json is not that of format {FORMAT_VERSION} and key {key}")
    return manifest


def read_encoder(entry: Path, manifest: Mapping[str, Any], spec: FeatureSpec) -> dict[str, Any]:
    """The encoder state of an entry (vocabularies as Arrow arrays that map its files); :class:`BadEntry` unless
    its vocabularies are those of ``spec``."""
    vocabulary_names = spec.vocabulary_names
    if sorted(manifest["vocabularies"]) != sorted(vocabulary_names):
        raise BadEntry(f"vocabularies of {manifest['vocabularies']}, the spec has {vocabulary_names}")
    vocabularies = {
        name: read_vocabulary(entry / f"vocabulary-{index}.arrow")
        for index, name in enumerate(manifest["vocabularies"])
    }
    return {"vocabularies": vocabularies, "mean": manifest["mean"], "std": manifest["std"], "kinds": manifest["kinds"]}


def read_entry(
    entry: Path, key: str, spec: FeatureSpec, sources: tuple[str, str]
) -> tuple[dict[str, Any], EncodedSplit, EncodedSplit]:
    """Read and check an entry: raise :class:`BadEntry` (or the error of a damaged file) if it is not complete,
    or not what ``spec`` encodes."""
    from easyrec.data.batches import EncodedSplit  # torch loads with it: not before the data files are checked

    manifest = read_manifest(entry, key)
    state = read_encoder(entry, manifest, spec)
    splits = [
        EncodedSplit(
            **read_tensors(entry, split, manifest["rows"][split], spec, manifest["tensors"][split]), source=source
        )
        for split, source in zip(SPLITS, sources, strict=True)
    ]
    return state, splits[0], splits[1]


def read_encoder_entry(entry: Path, key: str, spec: FeatureSpec) -> tuple[dict[str, Any], dict[Piece, int]]:
    """Read and check an encoder-only entry: ``(encoder state, rows of each piece)``; raise :class:`BadEntry` (or
    the error of a damaged file) if it is not complete, or not what ``spec`` fits."""
    manifest = read_manifest(entry, key)
    if manifest.get("entry") != "encoder":
        raise BadEntry("manifest.json is not that of an encoder-only entry")
    rows = {}
    for *fields, count in manifest["pieces"]:
        path, row_group, size, mtime_ns, known = fields  # a manifest with other fields is damaged: ValueError
        if not isinstance(path, str) or not isinstance(count, int):
            raise BadEntry(f"pieces: {[*fields, count]} is not a piece and its rows")
        rows[Piece(path, row_group, size, mtime_ns, known)] = count
    return read_encoder(entry, manifest, spec), rows


def read_vocabulary(path: Path) -> pa.Array:
    """The one-column Arrow IPC file ``path`` as an array that maps the file."""
    reader = pa.ipc.open_file(pa.memory_map(str(path)))
    if reader.num_record_batches != 1 or reader.schema.names != ["id"]:
        raise BadEntry(f"{path.name} is not one batch of ids")
    return reader.get_batch(0).column(0)


def read_tensors(
    entry: Path, split: str, rows: int, spec: FeatureSpec, fields: Sequence[str]
) -> dict[str, torch.Tensor | None]:
    """The tensors ``fields`` of ``split``, memory-mapped; they must be those ``spec`` encodes, each with the dtype
    and shape that ``spec`` gives ``rows`` rows."""
    import torch

    labels = len(spec.label_names)
    expected = {
        "dense": (rows, len(spec.dense_names)),
        "sparse": (rows, len(spec.categorical_names)),
        "labels": (rows,) if labels == 1 else (rows, labels),
        "weights": (rows,) if spec.weight else None,
        "sessions": (rows,) if spec.session else None,
        "oracle": (rows, labels) if spec.oracle else None,
        "lists": (rows, spec.list_width) if spec.list_groups else None,
    }
    if {field for field, shape in expected.items() if shape} != set(fields):
        raise BadEntry(f"{split} tensors {list(fields)} are not those the spec encodes")
    tensors: dict[str, torch.Tensor | None] = {}
    for field, shape in expected.items():
        if shape is None:
            tensors[field] = None
            continue
        path = entry / f"{split}-{field}.npy"
        array = np.load(path, mmap_mode="c", allow_pickle=False)
        if array.shape != shape or array.dtype != TENSOR_DTYPES[field]:
            raise BadEntry(f"{path.name} holds {array.dtype} {array.shape}, expected {TENSOR_DTYPES[field]} {shape}")
        tensors[field] = torch.from_numpy(array)
    return tensors


def drop(entry: Path) -> None:
    """Remove ``entry``: renamed aside first, so that no reader meets it half removed."""
    aside = entry.with_name(f".{entry.name}.dropped-{os.getpid()}")
    try:
        os.rename(entry, aside)
    except OSError:
        return  # another job dropped or replaced it already
    shutil.rmtree(aside, ignore_errors=True)
