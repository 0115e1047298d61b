"""The checkpoints of a run directory: written atomically, the last K kept plus the best, loaded safely.

A checkpoint is a ``dict`` of tensors and plain Python values (``torch.load(..., weights_only=True)`` reads it
without running any pickled code): ``format``, ``model``, ``optimizer``, ``lr_schedulers``, ``loss``, ``step``,
``epoch``, ``rows_in_epoch``, ``position`` (the data's position in the epoch: ``TabularData.position()``, None at
its start), ``rows`` (trained on in the whole run), ``rng``, ``early_stopping``, ``data`` (the encoder:
vocabularies, statistics), ``metrics``, ``best``, ``history``, ``config`` (the resolved run config), ``run`` (the
MLflow run id) and ``checksum``: the SHA-256 of everything else (see :func:`checksum`), checked on load, so that a
damaged file is refused however it was damaged. ``best.pt`` holds the same without the optimizer and scheduler
states (``kind: weights``): enough to evaluate, predict, export or fine-tune, not to resume. The trainer gathers the
entries from its stateful parts (:class:`Stateful`: a new one is one entry of ``Trainer.parts``) and its own state.
A checkpoint of sharded tables (``distributed=model_parallel``) keeps them and their fused optimizer state in a
shards directory beside it, which every worker writes, and says so under ``sharded``: see
:mod:`easyrec.sharded_checkpoints`.

Checkpoints of the previous format (``easyrec-checkpoint/1``, written before checksums) still load, unchecked.
The checksum finds damage (a file cut short, a changed byte), it is no signature: whoever edits a checkpoint can
write a new one, so a checkpoint from elsewhere is only as safe as loading it with ``weights_only`` makes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import re
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from easyrec.distributed.single import SingleProcess
from easyrec.errors import CheckpointError, OutputError, first_line
from easyrec.sharded_checkpoints import (
    check_shards,
    gather_tables,
    read_shards,
    shards_directory,
    split_sharded,
    write_shards,
)

log = logging.getLogger(__name__)

FORMAT = "easyrec-checkpoint/2"
#: The format before checksums: loaded without one.
UNCHECKED_FORMAT = "easyrec-checkpoint/1"
STEP_FILE = re.compile(r"^step-(\d+)\.pt$")
#: One of the ``keep_best_n`` best checkpoints (by the monitor); ``best.pt`` is apart.
RANKED_FILE = re.compile(r"^best-(\d+)\.pt$")


class Checkpoints:
    """``directory/step-<step>.pt`` files (the last ``keep_last_n`` kept), ``directory/best.pt`` and, with
    ``keep_best_n``, ``directory/best-<step>.pt`` (the weights of the N best evaluations, by step).

    Each write goes to a ``.partial`` file first and is renamed into place, so a crash mid-write never leaves a
    half-written file under a checkpoint's name (a failed write removes its ``.partial``: see
    :func:`partial_file`), and the checkpoints before it stay as they were.

    The main process writes the files. With sharded tables (``workers.sharded``: ``distributed=model_parallel``)
    every worker takes part: each writes its shards of them to ``step-<step>.shards/`` beside the file (see
    :mod:`easyrec.sharded_checkpoints`), kept and deleted with it.

    Args:
        directory: usually ``<run directory>/checkpoints``.
        keep_last_n: step checkpoints to keep (older ones are deleted after each write); best.pt is apart.
        keep_best_n: how many ``best-<step>.pt`` to keep (None: none are written).
        workers: the process layout (default: this process alone).
        tables: with sharded tables, ``{fused table key: [its field tables' keys]}``
            (:func:`~easyrec.modules.embedding_collection.table_manifest`), kept in each checkpoint so that one
            process reads the model as a plain model's state dict.
    """

    def __init__(
        self,
        directory: str | Path,
        keep_last_n: int = 3,
        workers: SingleProcess | None = None,
        tables: Mapping[str, list[str]] | None = None,
        keep_best_n: int | None = None,
    ) -> None:
        if keep_last_n < 1:
            raise ValueError(f"keep_last_n={keep_last_n}: must be >= 1")
        self.directory, self.keep_last_n, self.keep_best_n = Path(directory), keep_last_n, keep_best_n
        self.workers = workers or SingleProcess()
        self.tables = dict(tables or {})

    @property
    def takes_part(self) -> bool:
        """Whether this process writes checkpoints: the main one does; with sharded tables, every one."""
        return self.workers.is_main or self.workers.sharded

    def save(self, state: Mapping[str, Any], step: int) -> Path:
        """Write ``state`` as ``step-<step>.pt``; delete step checkpoints beyond the last ``keep_last_n`` (and their
        shards). With sharded tables every worker calls it."""
        path = self._write(state, self.directory / f"step-{step:09d}.pt")
        if self.workers.is_main:
            for old in self.step_files()[: -self.keep_last_n]:
                old.unlink(missing_ok=True)
            self._remove_orphan_shards("step")
        return path

    def save_best(self, state: Mapping[str, Any]) -> Path:
        return self._write(state, self.directory / "best.pt")

    def save_ranked(self, state: Mapping[str, Any], step: int, kept: Sequence[int]) -> Path:
        """Write ``state`` as ``best-<step>.pt``; delete the ``best-<step>.pt`` of steps not in ``kept`` (those
        pushed out of the ``keep_best_n`` best, see :func:`best_steps`)."""
        path = self._write(state, self.directory / f"best-{step:09d}.pt")
        if self.workers.is_main:
            for old in self.directory.iterdir():
                if (match := RANKED_FILE.match(old.name)) and int(match.group(1)) not in kept:
                    old.unlink(missing_ok=True)
            self._remove_orphan_shards("best-")
        return path

    def _remove_orphan_shards(self, prefix: str) -> None:
        """Delete the shards directories ``<prefix>*.shards`` whose file is gone (deleted, or a crash's)."""
        for shards in self.directory.glob(f"{prefix}*.shards"):
            if not shards.with_suffix(".pt").exists():
                shutil.rmtree(shards, ignore_errors=True)

    def _write(self, state: Mapping[str, Any], path: Path) -> Path:
        """Write ``state`` to ``path`` (the main process); with sharded tables every worker first writes its shards
        of them to ``<path stem>.shards/``, and the file keeps where they are, the table manifest and the SHA-256 of
        the shard files."""
        if self.workers.sharded:
            state, tensors = split_sharded(state)
            shards = shards_directory(path)
            files = write_shards(tensors, shards, self.workers)
            state = {**state, "sharded": {"directory": shards.name, "tables": self.tables, "files": files}}
        if self.workers.is_main:
            write_atomically(state, path)
        return path

    def load_best(self, model: nn.Module) -> None:
        """Load ``best.pt``'s weights into ``model`` on every worker: the main process reads the file and hands the
        others its entries; with sharded tables each worker reads its own rows of them."""
        best = load_checkpoint(self.directory / "best.pt", gather=False) if self.workers.is_main else None
        best = self.workers.broadcast(
            {key: best[key] for key in ("model", "sharded", "path") if key in best} if best else None
        )
        if "sharded" in best:
            best = read_shards(best, {"model": model.state_dict()})
        model.load_state_dict(best["model"])

    def step_files(self) -> list[Path]:
        """The step checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        files = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := STEP_FILE.match(p.name))]
        return [path for _, path in sorted(files)]

    def latest(self) -> Path | None:
        files = self.step_files()
        return files[-1] if files else None


def best_steps(history: Mapping[int, Mapping[str, float]], monitor: str, mode: str, n: int | None) -> list[int]:
    """The steps of the ``n`` best evaluations in ``history`` (``{step: metrics}``) by ``monitor`` (``mode``:
    ``max`` or ``min``), best first; of equal values the earlier step; NaN never; none without ``n``."""
    if not n:
        return []
    scored = [(m[monitor], step) for step, m in history.items() if not math.isnan(m.get(monitor, math.nan))]
    scored.sort(key=lambda scored_step: -scored_step[0] if mode == "max" else scored_step[0])
    return [step for _, step in scored[:n]]


class Stateful(Protocol):
    """A part of the training state that a checkpoint keeps under one key (the model, an optimizer, an
    early-stopping rule, ...): plain Python values and tensors, as ``torch.load(weights_only=True)`` reads them."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


class EachOf:
    """Several stateful parts (the LR schedulers) kept as one list, in order."""

    def __init__(self, parts: Sequence[Stateful]) -> None:
        self.parts = list(parts)

    def state_dict(self) -> list[Any]:
        return [part.state_dict() for part in self.parts]

    def load_state_dict(self, state: Sequence[Any]) -> None:
        for part, part_state in zip(self.parts, state, strict=True):
            part.load_state_dict(part_state)


class RandomState:
    """torch's random generators (CPU and CUDA): a resumed run draws (dropout, noise) what an uninterrupted one
    would."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def write_json(report: Mapping[str, Any], path: Path) -> None:
    """Write ``report`` as JSON to ``path.partial``, then rename it into place (a reader never sees half a file)."""
    with partial_file(path) as partial:
        partial.write_text(json.dumps(dict(report), indent=2) + "\n")


def write_atomically(state: Mapping[str, Any], path: Path) -> Path:
    """``torch.save`` ``state`` and its :func:`checksum` to ``path.partial``, flushed to disk, then renamed to
    ``path``."""
    with partial_file(path) as partial, partial.open("wb") as handle:
        torch.save({**state, "checksum": checksum(state)}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return path


@contextmanager
def partial_file(path: Path) -> Iterator[Path]:
    """Yield ``path.partial`` to write, renamed to ``path`` when done; when writing fails, remove it, and raise
    an OSError (a full disk, a read-only folder) as OutputError ``cannot write <path>: <cause>``."""
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield partial
        os.replace(partial, path)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        # torch.save reports a write that failed (a disk that filled up) as a RuntimeError over the OSError
        cause = error if isinstance(error, OSError) else error.__context__
        if isinstance(cause, OSError):
            raise OutputError.cannot_write(path, cause) from None
        raise


def checksum(state: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of ``state`` but its ``checksum`` entry: its keys, plain values and tensors (dtype, shape
    and bytes), in order; the same before ``torch.save`` and after ``torch.load``."""
    digest = hashlib.sha256()

    def feed(node: Any) -> None:
        if isinstance(node, torch.Tensor):
            tensor = node.detach().cpu().contiguous()
            digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)};".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(node, Mapping):
            digest.update(f"dict {len(node)};".encode())
            for key, value in node.items():
                feed(key)
                feed(value)
        elif isinstance(node, list | tuple):
            digest.update(f"{type(node).__name__} {len(node)};".encode())
            for value in node:
                feed(value)
        else:
            digest.update(f"{type(node).__name__} {node!r};".encode())

    feed({key: value for key, value in state.items() if key != "checksum"})
    return digest.hexdigest()


#: Which checkpoint of a run directory :func:`find_checkpoint` picks first.
WHICH = ("latest", "best")


def find_checkpoint(location: str | Path, which: str = "latest") -> Path:
    """The checkpoint ``location`` names: a ``.pt`` file (as it is), or a run directory or its ``checkpoints/``
    folder: with ``which="latest"`` its latest step checkpoint, else ``best.pt``; with ``which="best"`` its
    ``best.pt``, else the latest step checkpoint."""
    return candidates(location, which)[0]


def candidates(location: str | Path, which: str = "latest") -> list[Path]:
    """The checkpoints :func:`find_checkpoint` may pick, best first: ``[file]`` for a file; for a directory with
    ``which="latest"`` its step checkpoints newest first (else ``[best.pt]``), with ``which="best"`` ``[best.pt]``
    (else its newest step checkpoint)."""
    if which not in WHICH:
        raise ValueError(f"which={which!r}: must be one of: {', '.join(WHICH)}")
    path = Path(location)
    if path.is_file():
        return [path]
    for directory in (path / "checkpoints", path):
        if directory.is_dir():
            steps = Checkpoints(directory).step_files()[::-1]
            best = [directory / "best.pt"] if (directory / "best.pt").is_file() else []
            found = (best or steps[:1]) if which == "best" else (steps or best)
            if found:
                return found
    if path.exists():
        raise CheckpointError(f"{path}: no checkpoint in it (looked for checkpoints/step-*.pt and best.pt)")
    raise CheckpointError(f"{path}: no such checkpoint file or run directory")


def load_checkpoint(location: str | Path, which: str = "latest", gather: bool = True) -> dict[str, Any]:
    """Read an easyrec checkpoint (see :func:`find_checkpoint` for ``location`` and ``which``) on the CPU, safely
    (``weights_only=True``) and checked against its checksum; CheckpointError naming the file when it is missing,
    damaged or not an easyrec checkpoint. The latest checkpoint of a run directory falls back to the newest
    readable step checkpoint, with a warning naming each damaged one skipped (a file named alone never does).

    A checkpoint of sharded tables (``distributed=model_parallel``) has its shards directory checked too; with
    ``gather`` its ``model`` is read whole in this process, as the plain model's state dict (evaluate, predict,
    export, init_from: see :func:`~easyrec.sharded_checkpoints.gather_tables`); without, its sharded entries stay
    :data:`~easyrec.sharded_checkpoints.SHARDED`, for the workers of a resume to read their shards of them
    (:func:`~easyrec.sharded_checkpoints.read_shards`)."""
    found = candidates(location, which)
    skipped = []
    for path in found:
        try:
            state = read_checkpoint(path)
        except CheckpointError as error:
            if len(found) == 1:
                raise
            skipped.append(str(error))
            log.warning("skipping a damaged checkpoint: %s", error)
            continue
        if skipped:
            log.warning("using %s, the newest readable checkpoint", path)
        if gather and "sharded" in state:
            state["model"] = gather_tables(state)
        return state
    raise CheckpointError(f"{location}: no readable checkpoint ({'; '.join(skipped)})")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint in the file ``path``: CheckpointError naming it when it is unreadable, not an easyrec
    checkpoint, or does not match its checksum (or naming its shards directory, when that is missing or damaged)."""
    try:
        with warnings.catch_warnings():  # torch's warnings about a foreign file's pickle protocol: the error says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message would advise weights_only=False: never, for a file we read
        raise CheckpointError(
            f"{path}: not a readable checkpoint (not a file torch.save wrote, or it holds more than tensors and plain "
            "values, which easyrec never loads)"
        ) from None
    except Exception as error:  # a damaged file fails in many ways: zip, struct, unicode errors
        raise CheckpointError(f"{path}: not a readable checkpoint ({first_line(error)})") from None
    if not isinstance(state, dict) or state.get("format") not in (FORMAT, UNCHECKED_FORMAT):
        raise CheckpointError(f"{path}: not an easyrec checkpoint (no '{FORMAT}' format marker)")
    if state.get("format") == FORMAT and state.get("checksum") != checksum(state):
        raise CheckpointError(f"{path}: damaged (its content does not match its checksum)")
    if "sharded" in state:
        check_shards(state, path)
    state["path"] = str(path)
    return state


@dataclass
class LoadReport:
    """What :func:`load_matching` did with each entry of a state dict."""

    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def load_matching(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    cardinalities: tuple[list[int], list[int]] | None = None,
) -> LoadReport:
    """Load the entries of ``state`` that fit ``model`` (fine-tuning from another run).

    An embedding table whose number of rows differs (more or fewer hash buckets or vocabulary rows) is padded
    with the model's own initial rows or clipped, with a warning, as EasyRec's force_restore_shape_compatible
    (which resizes any variable so; here only embedding tables are, a resized dense layer being meaningless).
    When ``cardinalities = (old rows per field, new rows per field)`` is given, a fused table of all the fields
    (first dimension = their sum) is resized field by field, so that every field keeps its own rows. Any other
    mismatch, and names the model does not have, are skipped. Returns what was loaded, resized and skipped (with
    why); the model's entries missing from ``state`` keep their initial values.
    """
    report = LoadReport()
    own = model.state_dict()
    tables = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Embedding)}
    merged = dict(own)
    for name, value in state.items():
        if name not in own:
            report.skipped[name] = "not in this model"
            continue
        target = own[name]
        if value.shape == target.shape:
            merged[name] = value
            report.loaded.append(name)
        elif name in tables and value.dim() == target.dim() and value.shape[1:] == target.shape[1:]:
            merged[name] = resize_rows(value, target, cardinalities)
            report.resized.append(f"{name} {tuple(value.shape)} -> {tuple(target.shape)}")
            log.info("fine-tune: %s resized from %s to %s", name, tuple(value.shape), tuple(target.shape))
        else:
            report.skipped[name] = f"shape {tuple(value.shape)} does not fit {tuple(target.shape)}"
    for name in own:
        if name not in state:
            report.skipped[name] = "not in the checkpoint (kept its initial value)"
    model.load_state_dict(merged)
    return report


def resize_rows(
    value: torch.Tensor, target: torch.Tensor, cardinalities: tuple[list[int], list[int]] | None
) -> torch.Tensor:
    """``target`` with the rows of ``value`` copied in: field by field for a fused table of the fields in
    ``cardinalities`` (old, new), else the leading rows."""
    resized = target.clone()
    if cardinalities and value.shape[0] == sum(cardinalities[0]) and target.shape[0] == sum(cardinalities[1]):
        old_start = new_start = 0
        for old_rows, new_rows in zip(*cardinalities, strict=True):
            rows = min(old_rows, new_rows)
            resized[new_start : new_start + rows] = value[old_start : old_start + rows]
            old_start, new_start = old_start + old_rows, new_start + new_rows
        return resized
    rows = min(value.shape[0], target.shape[0])
    resized[:rows] = value[:rows]
    return resized
