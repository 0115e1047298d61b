"""Sharded checkpoints (``distributed=model_parallel``): the sharded tables and their fused optimizer state written by
every worker through ``torch.distributed.checkpoint`` (DCP) beside the checkpoint file, read back on any number of
workers (DCP reshards), or whole in one process.

On disk, beside ``step-<N>.pt`` (and ``best.pt``, with ``best.shards/``)::

    step-<N>.pt       the checkpoint as always (the main process writes it), each sharded entry replaced by
                      :data:`SHARDED`, plus "sharded": {"directory": "step-<N>.shards",
                      "tables": {fused table key: [its field tables' keys, in field order]},
                      "files": {file name: SHA-256}}
    step-<N>.shards/  DCP's ``.metadata`` and ``__<rank>_0.distcp`` (each worker's shards), the sharded entries
                      under their paths in the checkpoint: ``model/<key>``, ``optimizer/<name>/state/<key>/<state>``

Every worker writes its shards to ``step-<N>.shards.partial/``; when all have, the main process renames it and then
writes the ``.pt``: a ``.pt`` always has its whole shards directory, and both are deleted together.

Reading is safe as for a ``.pt``: the ``.pt``'s checksum covers the shard files' SHA-256, checked before use
(:func:`check_shards`); DCP's ``.metadata`` is a pickle, read here by an allow-list unpickler (DCP's metadata
classes, ``torch.Size``, dtypes, layouts and paths only: :func:`read_metadata`) and never by DCP's own
``pickle.load``; DCP reads the tensors themselves with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import pickle
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from easyrec.errors import CheckpointError, OutputError, first_line

if TYPE_CHECKING:
    from easyrec.distributed import SingleProcess

#: What a checkpoint file holds in place of a sharded tensor: its values are in the shards directory.
SHARDED = "easyrec:sharded"
#: The entries of a checkpoint that may hold sharded tensors: the tables and their fused optimizer's state.
SHARDED_PARTS = ("model", "optimizer")


def shards_directory(path: Path) -> Path:
    """The shards directory of the checkpoint file ``path``: ``step-<N>.pt`` -> ``step-<N>.shards``."""
    return path.with_suffix(".shards")


# ---------------------------------------------------------------------- the sharded entries of a state


def split_sharded(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``state`` with each sharded tensor (:func:`is_sharded`) of its :data:`SHARDED_PARTS` replaced by
    :data:`SHARDED`, and those tensors by their path (:func:`path_key`). ``state`` itself is left as it is."""
    found: dict[str, torch.Tensor] = {}

    def take(path: tuple[Any, ...], leaf: Any) -> Any:
        if not is_sharded(leaf):
            return leaf
        found[path_key(path)] = leaf
        return SHARDED

    plain = {key: map_leaves(value, take, (key,)) if key in SHARDED_PARTS else value for key, value in state.items()}
    return plain, found


def sharded_leaves(state: Mapping[str, Any]) -> dict[str, tuple[tuple[Any, ...], torch.Tensor]]:
    """The sharded tensors of ``state``'s :data:`SHARDED_PARTS`: ``{path_key: (path, tensor)}``."""
    return leaves_where(state, is_sharded)


def leaves_where(state: Mapping[str, Any], keep: Callable[[Any], bool]) -> dict[str, tuple[tuple[Any, ...], Any]]:
    """The leaves of ``state``'s :data:`SHARDED_PARTS` for which ``keep`` holds: ``{path_key: (path, leaf)}``."""
    found: dict[str, tuple[tuple[Any, ...], Any]] = {}

    def note(path: tuple[Any, ...], leaf: Any) -> Any:
        if keep(leaf):
            found[path_key(path)] = (path, leaf)
        return leaf

    for key in SHARDED_PARTS:
        map_leaves(state.get(key), note, (key,))
    return found


def is_sharded(value: Any) -> bool:
    """Whether ``value`` is a tensor sharded over the workers (a ``ShardedTensor`` or a ``DTensor``)."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor
    from torch.distributed.tensor import DTensor

    return isinstance(value, ShardedTensor | DTensor)


def marked(state: Mapping[str, Any]) -> set[str]:
    """The paths (:func:`path_key`) of ``state``'s :data:`SHARDED` entries."""
    return set(leaves_where(state, is_marker))


def graft(state: Mapping[str, Any], leaves: Mapping[str, tuple[tuple[Any, ...], Any]]) -> dict[str, Any]:
    """``state`` without its :data:`SHARDED` entries, and with ``leaves`` (``{key: (path, value)}``) put at their
    paths (dicts made where there are none): the main process's checkpoint made this worker's, whose sharded state
    may have entries the main process's has not (a table wholly on another worker has its optimizer state there)."""
    grafted = {key: without_markers(value) if key in SHARDED_PARTS else value for key, value in state.items()}
    for path, value in leaves.values():
        grafted = put(grafted, path, value)
    return grafted


def without_markers(node: Any) -> Any:
    """``node`` (nested dicts and lists) without the dict entries that are :data:`SHARDED`."""
    if isinstance(node, Mapping):
        copied = copy.copy(node)
        for key, value in node.items():
            if is_marker(value):
                del copied[key]
            else:
                copied[key] = without_markers(value)
        return copied
    if type(node) in (list, tuple):
        return type(node)(without_markers(value) for value in node)
    return node


def put(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    """``node`` with ``value`` at ``path``, the containers on the way copied (a missing dict made)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if type(node) in (list, tuple):
        items = list(node)
        items[head] = put(items[head], rest, value)
        return type(node)(items)
    copied = copy.copy(node) if isinstance(node, Mapping) else {}
    copied[head] = put(copied.get(head), rest, value)
    return copied


def path_key(path: tuple[Any, ...]) -> str:
    """A nested entry's path as one key: dict keys and list indices joined by ``/`` (no module path has one)."""
    return "/".join(str(step) for step in path)


def is_marker(value: Any) -> bool:
    return isinstance(value, str) and value == SHARDED


def map_leaves(node: Any, change: Callable[[tuple[Any, ...], Any], Any], path: tuple[Any, ...] = ()) -> Any:
    """``node`` (nested dicts, lists and tuples) with each leaf replaced by ``change(path, leaf)``; a container none
    of whose leaves changed is the same object (its type, an OrderedDict's metadata, kept)."""
    if isinstance(node, Mapping):
        changed = {key: map_leaves(value, change, (*path, key)) for key, value in node.items()}
        if all(changed[key] is value for key, value in node.items()):
            return node
        copied = copy.copy(node)
        copied.update(changed)
        return copied
    if type(node) in (list, tuple):
        items = [map_leaves(value, change, (*path, index)) for index, value in enumerate(node)]
        return node if all(a is b for a, b in zip(items, node, strict=True)) else type(node)(items)
    return change(path, node)


# ---------------------------------------------------------------------- writing


def write_shards(tensors: Mapping[str, torch.Tensor], directory: Path, workers: SingleProcess) -> dict[str, str]:
    """Every worker writes its shards of ``tensors`` with DCP into ``<directory>.partial``; once all have, the main
    process renames it to ``directory``. Returns ``{file name: SHA-256}`` of its files (on every worker; each hashes
    its share of them). A collective: every worker calls it. OutputError naming ``directory`` when it fails."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    partial = directory.with_name(directory.name + ".partial")
    try:
        if workers.is_main:  # what a crashed write left (nothing else writes here: the run directory is locked)
            for stale in directory.parent.glob("*.shards.partial"):
                shutil.rmtree(stale)
        dist.barrier()
        tight = {key: with_tight_storage(tensor) for key, tensor in tensors.items()}
        metadata = dcp.save(tight, storage_writer=dcp.FileSystemWriter(partial))
        files = sorted({info.relative_path for info in metadata.storage_data.values()} | {".metadata"})
        mine = files[workers.rank :: workers.world_size]
        digests = dict(workers.gather([(name, file_digest(partial / name)) for name in mine]))
        if workers.is_main:
            replace_directory(partial, directory)
    except (OSError, CheckpointException) as error:
        if workers.is_main:
            shutil.rmtree(partial, ignore_errors=True)
        cause = error if isinstance(error, OSError) else OSError(first_line(error))
        raise OutputError.cannot_write(directory, cause) from None
    return digests


def with_tight_storage(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (a sharded tensor: its local shards) with every contiguous view re-seated on a storage of its own
    bytes that aliases the same memory: no copy.

    fbgemm keeps all the tables of a worker (and their optimizer state) in one buffer, so a shard is a view into it;
    DCP's writer clones every tensor whose storage is larger than itself (``torch.save`` of a view would write the
    whole storage) and holds the clones until the file is written: twice the worker's share of the tables in
    memory. A storage slice (``untyped_storage()[a:b]``) shares the memory and is exactly the view's bytes."""
    from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, ShardedTensor):
        shards = [Shard(tight_view(shard.tensor), shard.metadata) for shard in tensor.local_shards()]
        return ShardedTensor._init_from_local_shards_and_global_metadata(
            shards, tensor.metadata(), process_group=tensor._process_group
        )
    if isinstance(tensor, DTensor):
        local = tight_view(tensor.to_local())
        return DTensor.from_local(
            local, tensor.device_mesh, tensor.placements, run_check=False, shape=tensor.shape, stride=tensor.stride()
        )
    return tight_view(tensor)


def tight_view(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` on a storage of exactly its bytes, aliasing its memory (itself when it has one, or when it is
    not contiguous: DCP copies those)."""
    storage = tensor.untyped_storage()
    if storage.size() == tensor.nbytes or not tensor.is_contiguous() or tensor.device.type == "meta":
        return tensor
    start = tensor.storage_offset() * tensor.element_size()
    own = storage[start : start + tensor.nbytes]
    return torch.empty(0, dtype=tensor.dtype, device=tensor.device).set_(own, 0, tensor.shape, tensor.stride())


def replace_directory(source: Path, target: Path) -> None:
    """Rename the directory ``source`` to ``target``, replacing a ``target`` there (the same step written again)."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)


def file_digest(path: Path) -> str:
    """The SHA-256 (hex) of the file ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(2**22):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------- reading


def check_shards(state: Mapping[str, Any], path: Path) -> Path:
    """The shards directory of the checkpoint ``state`` read from ``path``, checked: CheckpointError naming it when
    it is missing, damaged (a file missing, or not matching the SHA-256 in the checkpoint) or does not hold the
    checkpoint's sharded entries."""
    sharded = state["sharded"]
    name = sharded.get("directory") if isinstance(sharded, Mapping) else None
    if not isinstance(name, str) or not plain_name(name):
        raise CheckpointError(f"{path}: damaged (its shards directory is {name!r}, not a name beside it)")
    directory = path.parent / name
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: missing (the sharded tables of {path})")
    for file, digest in sharded["files"].items():
        if not plain_name(file) or not (directory / file).is_file():
            raise CheckpointError(f"{directory}: damaged ({file} is missing)")
        if file_digest(directory / file) != digest:
            raise CheckpointError(f"{directory}: damaged ({file} does not match its checksum)")
    metadata = read_metadata(directory)
    unlisted = sorted({info.relative_path for info in metadata.storage_data.values()} - set(sharded["files"]))
    missing = sorted(marked(state) - set(metadata.state_dict_metadata))
    if unlisted or missing:
        why = f"it holds {unlisted[0]}, which {path} does not list" if unlisted else f"{missing[0]} is not in it"
        raise CheckpointError(f"{directory}: does not match {path} ({why})")
    return directory


def read_shards(state: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` (a checkpoint as the main process read it: its sharded entries :data:`SHARDED`) with this worker's
    sharded entries: those of ``own`` (this run's state dict, whose sharded tensors are views of the tables and of
    the fused optimizer's state themselves), read by DCP in place, then put at their paths (:func:`graft`). DCP
    reshards: a checkpoint of N workers loads on M. A collective: every worker calls it."""
    import torch.distributed.checkpoint as dcp

    directory = Path(state["path"]).parent / state["sharded"]["directory"]
    leaves = sharded_leaves(own)
    entries = read_metadata(directory).state_dict_metadata
    for key, (_, tensor) in leaves.items():
        if key not in entries:
            raise CheckpointError(f"{directory}: does not fit this run ({key} is not in it)")
        if tuple(entries[key].size) != tuple(tensor.shape):
            shapes = f"{tuple(entries[key].size)} in it, {tuple(tensor.shape)} here"
            raise CheckpointError(f"{directory}: does not fit this run ({key} has shape {shapes})")
    with dcp_errors(directory):
        dcp.load({key: tensor for key, (_, tensor) in leaves.items()}, storage_reader=safe_reader(directory))
    return graft(state, leaves)


def gather_tables(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``state["model"]`` whole, in this one process (no process group): its sharded tables read from the shards
    directory into plain tensors (shapes from the DCP metadata), each table of ``state["sharded"]["tables"]``
    assembled from its field tables: the state dict of the model as one process builds it."""
    import torch.distributed.checkpoint as dcp

    directory = Path(state["path"]).parent / state["sharded"]["directory"]
    entries = read_metadata(directory).state_dict_metadata
    model = dict(state["model"])
    targets: dict[str, torch.Tensor] = {}

    def empty(key: str) -> torch.Tensor:
        entry = entries[f"model/{key}"]
        return torch.empty(entry.size, dtype=entry.properties.dtype)

    for fused, fields in state["sharded"]["tables"].items():
        parts = [empty(key) if is_marker(model[key]) else model[key] for key in fields]
        table = torch.empty(sum(part.shape[0] for part in parts), *parts[0].shape[1:], dtype=parts[0].dtype)
        for key, part, rows in zip(fields, parts, table.split([p.shape[0] for p in parts]), strict=True):
            if is_marker(model.pop(key)):
                targets[f"model/{key}"] = rows  # DCP reads the field's rows into their place in the fused table
            else:
                rows.copy_(part)
        model[fused] = table
    for key, value in model.items():
        if is_marker(value):  # a sharded table that is no field table (none in easyrec's models)
            model[key] = targets[f"model/{key}"] = empty(key)
    with dcp_errors(directory), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DCP's note that it loads in one process: that is the point
        dcp.load(targets, storage_reader=safe_reader(directory), no_dist=True)
    return model


@contextmanager
def dcp_errors(directory: Path) -> Iterator[None]:
    """DCP's failures to read ``directory`` as a one-line CheckpointError naming it."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        yield
    except CheckpointError:
        raise
    except (CheckpointException, OSError, RuntimeError, ValueError, KeyError, AssertionError) as error:
        raise CheckpointError(f"{directory}: cannot be read into this run's tables ({first_line(error)})") from None


def plain_name(name: str) -> bool:
    """Whether ``name`` names an entry of a directory (no separator, not ``.`` or ``..``)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


# ---------------------------------------------------------------------- DCP's metadata, read safely


def read_metadata(directory: Path) -> Any:
    """DCP's ``directory/.metadata`` (a ``Metadata``), unpickled with only DCP's metadata classes, ``torch.Size``,
    dtypes, layouts and paths allowed; CheckpointError naming the file when it names anything else, is unreadable,
    or describes more than tensors in plain files of ``directory`` (DCP would read anything else with
    ``torch.load(weights_only=False)``)."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata

    path = directory / ".metadata"
    try:
        with path.open("rb") as handle:
            metadata = MetadataUnpickler(handle).load()
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: damaged (.metadata is missing)") from None
    except Exception as error:  # a damaged or foreign pickle fails in many ways
        raise CheckpointError(f"{path}: not DCP metadata easyrec reads ({first_line(error)})") from None
    if not isinstance(metadata, Metadata) or not isinstance(metadata.storage_data, dict):
        raise CheckpointError(f"{path}: not DCP metadata easyrec reads (no Metadata in it)")
    for key, entry in metadata.state_dict_metadata.items():
        if not isinstance(entry, TensorStorageMetadata):
            raise CheckpointError(f"{path}: {key} is no tensor (easyrec writes and reads tensors only)")
    for info in metadata.storage_data.values():
        if not isinstance(info, _StorageInfo) or not plain_name(str(info.relative_path)) or info.transform_descriptors:
            raise CheckpointError(f"{path}: names data outside its directory, or transformed (easyrec writes neither)")
    return metadata


@functools.cache
def allowed_globals() -> dict[tuple[str, str], Any]:
    """What DCP's metadata pickle may name: ``{(module, name): object}``."""
    import pathlib

    from torch.distributed.checkpoint import filesystem, metadata

    allowed = {
        ("torch.distributed.checkpoint.metadata", name): getattr(metadata, name)
        for name in (
            "Metadata",
            "MetadataIndex",
            "ChunkStorageMetadata",
            "TensorStorageMetadata",
            "TensorProperties",
            "StorageMeta",
            "_MEM_FORMAT_ENCODING",
        )
    }
    allowed[("torch.distributed.checkpoint.filesystem", "_StorageInfo")] = filesystem._StorageInfo
    allowed[("torch", "Size")] = torch.Size
    allowed[("torch.serialization", "_get_layout")] = torch.serialization._get_layout  # a layout by its name
    allowed.update({("pathlib", name): getattr(pathlib, name) for name in ("PosixPath", "PurePosixPath")})
    allowed.update({("pathlib", name): getattr(pathlib, name) for name in ("WindowsPath", "PureWindowsPath")})
    return allowed


class MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's metadata: only :func:`allowed_globals` and torch's dtypes may be named."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = allowed_globals()
        if (module, name) in allowed:
            return allowed[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which easyrec never loads; nothing was run")


def safe_reader(directory: Path) -> Any:
    """DCP's ``FileSystemReader`` of ``directory`` whose metadata is read by :func:`read_metadata`."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            metadata = read_metadata(Path(self.path))
            metadata.storage_meta = metadata.storage_meta or StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(directory)
