"""An on-disk cache of encoded splits, so that the jobs of a sweep read and encode the same files once.

An entry is a directory named by a key that covers everything the encoding depends on (:func:`cache_key`): the
files (path, size, modification and change times), the reader's options, the feature spec and the code that
encodes. It holds the fitted encoder (vocabularies as Arrow IPC files, statistics as JSON) and every tensor of
both splits as a ``.npy`` file, memory-mapped when loaded: a hit costs milliseconds and no copy of the data.

Entries are written into a temporary sibling directory and renamed into place, so concurrent writers (the jobs
of a sweep, DDP workers) never leave a half entry. An entry that cannot be read back is dropped with a warning,
and the splits are encoded again: a cache problem never stops a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from easyrec.data.features import FeatureEncoder, FeatureSpec

if TYPE_CHECKING:
    import torch

    from easyrec.data.batches import EncodedSplit

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("train", "eval")
# dtype of each EncodedSplit tensor, as FeatureEncoder.encode makes them
TENSOR_DTYPES = {
    "dense": np.dtype(np.float32),
    "sparse": np.dtype(np.int32),
    "labels": np.dtype(np.float32),
    "weights": np.dtype(np.float32),
    "sessions": np.dtype(np.int64),
    "oracle": np.dtype(np.float32),
}


class BadEntry(Exception):
    """What is wrong with a cache entry, in a few words."""


def cache_key(files: Sequence[Path], reader: Mapping[str, Any], spec: FeatureSpec, code: Sequence[Path]) -> str:
    """sha256 (hex) of the cache format, the ``files`` (resolved path, size, mtime and ctime: a rewrite, even one
    that keeps the size and puts the mtime back, changes the key), the ``reader`` options, the whole feature
    ``spec`` and the source of the ``code`` that reads and encodes (an edited encoder never reuses old
    encodings), with the pyarrow and numpy versions."""
    stats = [(path.resolve(), path.stat()) for path in files]
    described = {
        "format": FORMAT_VERSION,
        "files": [[str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns] for path, stat in stats],
        "reader": reader,
        "features": asdict(spec),
        "code": [hashlib.sha256(path.read_bytes()).hexdigest() for path in code],
        "libraries": [pa.__version__, np.__version__],
    }
    text = json.dumps(described, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


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
        if not entry.is_dir():
            return None
        try:
            found = read_entry(entry, key, spec, sources)
        except (BadEntry, OSError, ValueError, KeyError, TypeError, pa.ArrowException) as error:
            log.warning("data: cache entry %s is unreadable (%s); encoding the files again", entry, error)
            drop(entry)
            return None
        log.info("data: encoded splits from cache %s", entry)
        return found

    def store(self, key: str, encoder: FeatureEncoder, train: EncodedSplit, eval_: EncodedSplit) -> None:
        """Write entry ``key`` unless an equal one is already there (another job stored it first). A directory
        that cannot be written is warned about, never raised."""
        entry = self.directory / key
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.directory))
        except OSError as error:
            log.warning(
                "data.cache_dir=%s: not writable (%s); training without the cache",
                self.directory,
                error.strerror or error,
            )
            return
        try:
            write_entry(staging, key, encoder, {"train": train, "eval": eval_})
            os.rename(staging, entry)
        except (OSError, pa.ArrowException) as error:
            if not entry.is_dir():  # a lost race leaves the winner's entry: nothing to say
                log.warning(
                    "data.cache_dir=%s: could not write %s (%s); training without the cache",
                    self.directory,
                    entry,
                    error,
                )
                return
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("data: encoded splits cached in %s", entry)


def write_entry(directory: Path, key: str, encoder: FeatureEncoder, splits: Mapping[str, EncodedSplit]) -> None:
    """The files of an entry; ``manifest.json`` last."""
    vocabularies = list(encoder.vocabularies)
    for index, name in enumerate(vocabularies):
        values = encoder.vocabularies[name]
        with pa.OSFile(str(directory / f"vocabulary-{index}.arrow"), "wb") as sink:
            with pa.ipc.new_file(sink, pa.schema([("id", values.type)])) as writer:
                writer.write_batch(pa.record_batch([values], names=["id"]))
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
        "vocabularies": vocabularies,
        "mean": encoder.mean,
        "std": encoder.std,
        "kinds": encoder.kinds,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))


def read_entry(
    entry: Path, key: str, spec: FeatureSpec, sources: tuple[str, str]
) -> tuple[dict[str, Any], EncodedSplit, EncodedSplit]:
    """Read and check an entry: raise :class:`BadEntry` (or the error of a damaged file) if it is not complete,
    or not what ``spec`` encodes."""
    from easyrec.data.batches import EncodedSplit  # torch loads with it: not before the data files are checked

    manifest_path = entry / "manifest.json"
    if not manifest_path.is_file():
        raise BadEntry("manifest.json is missing")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT_VERSION or manifest.get("key") != key:
        raise BadEntry(f"manifest.json is not that of format {FORMAT_VERSION} and key {key}")
    vocabulary_names = [name for group in spec.categorical if group.encoding == "vocab" for name in group.names]
    if sorted(manifest["vocabularies"]) != sorted(vocabulary_names):
        raise BadEntry(f"vocabularies of {manifest['vocabularies']}, the spec has {vocabulary_names}")
    vocabularies = {
        name: read_vocabulary(entry / f"vocabulary-{index}.arrow")
        for index, name in enumerate(manifest["vocabularies"])
    }
    splits = [
        EncodedSplit(
            **read_tensors(entry, split, manifest["rows"][split], spec, manifest["tensors"][split]), source=source
        )
        for split, source in zip(SPLITS, sources, strict=True)
    ]
    state = {"vocabularies": vocabularies, "mean": manifest["mean"], "std": manifest["std"], "kinds": manifest["kinds"]}
    return state, splits[0], splits[1]


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
