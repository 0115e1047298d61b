"""The data component shared by every source: read train and eval tables, encode, serve batches."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pyarrow as pa

from easyrec.config.arguments import PositiveInt, Seed, checked
from easyrec.console import plural
from easyrec.data.features import FeatureEncoder, FeatureSpec, InputSpec
from easyrec.errors import DataError

if TYPE_CHECKING:  # torch loads when the first tensor is made, so a missing file is reported before it loads
    import torch
    from torch import Tensor

    from easyrec.data.batches import Batch, EncodedSplit, TrainStep

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelRule:
    """What a loss requires of a label column (see :meth:`TabularData.check_labels`): its values are ``allowed``
    ones, or lie in the closed ``value_range``. ``index``: the column in ``labels (N, L)``, None with one label."""

    required_by: str
    allowed: tuple[float, ...] | None
    value_range: tuple[float, float] | None
    column: str
    index: int | None

    def check(self, split: EncodedSplit, source: str, first_row: int = 0) -> None:
        """Raise :class:`DataError` naming ``source``, the column and the row (``first_row`` is the number of the
        split's first row in ``source``, from 0) of the split's first label that breaks the rule."""
        row = split.first_bad_label(self.index, self.allowed, self.value_range)
        if row is None:
            return
        value = (split.labels[row] if self.index is None else split.labels[row, self.index]).item()
        wanted = (
            f"one of {{{', '.join(f'{v:g}' for v in self.allowed)}}}"
            if self.allowed is not None
            else f"in [{self.value_range[0]:g}, {self.value_range[1]:g}]"
        )
        raise DataError(
            f"{source}: column '{self.column}', row {first_row + row + 1}: label {value:g} is not {wanted} "
            f"(required by {self.required_by})"
        )


class TabularData:
    """Train and eval splits of a table, encoded once into contiguous tensors and served as batches.

    Subclasses say where the tables come from (:meth:`read_splits`). Call :meth:`setup` once before
    asking for batches. Training batches follow a seeded permutation per epoch, so a run is repeatable
    and a position in it is just ``(epoch, batch index)``.

    Args:
        features: a :class:`FeatureSpec` or its dict form.
        batch_size: training rows per batch.
        eval_batch_size: rows per batch when evaluating.
        shuffle: shuffle the training rows every epoch.
        seed: seeds the shuffling, in [0, 2**32) (numpy's generators take no negative seed).
        non_finite: a dense value that is infinite in float32 (``inf``, ``1e308``) is an ``"error"`` naming the
            file, column and row, or takes its feature's ``fill_value`` (``"fill"``, counted in the log).
    """

    @checked
    def __init__(
        self,
        features: FeatureSpec | Mapping[str, Any],
        batch_size: PositiveInt = 1024,
        eval_batch_size: PositiveInt = 16384,
        shuffle: bool = True,
        seed: Seed = 0,
        non_finite: Literal["error", "fill"] = "error",
    ) -> None:
        self.spec = FeatureSpec.from_config(features)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.non_finite = non_finite
        self.encoder = FeatureEncoder(self.spec, non_finite)
        self.train: EncodedSplit | None = None
        self.eval: EncodedSplit | None = None
        self.label_rules: list[LabelRule] = []  # what check_labels was asked: streamed batches are checked too
        self.rows_in_epoch = 0  # rows of the epoch's order in the steps train_steps yielded (all workers)

    streams = False  # the training split is in memory (a file source may read it as a stream instead)
    skipped_pieces = 0  # unreadable pieces skipped (a file source's data.on_bad_piece=skip); by this worker

    def read_splits(self) -> tuple[tuple[pa.Table, str], tuple[pa.Table, str]]:
        """Return ``((train_table, train_source), (eval_table, eval_source))``."""
        raise NotImplementedError

    def check_files(self) -> None:
        """Raise a :class:`DataError` for a missing file or column, cheaply (before a run is opened; :meth:`setup`
        reads and checks everything); a source that reads no files has nothing to check."""

    def setup(self, keep_encoding: Mapping[str, Any] | None = None) -> None:
        """Read both splits, fit the encoder on the training split, encode both.

        ``keep_encoding``: an earlier run's encoder state (fine-tuning): its statistics are kept for the columns it
        has them for, its vocabularies too, grown by the new ids of this training split (see
        :meth:`FeatureEncoder.fit`).
        """
        (train_table, train_source), (eval_table, eval_source) = self.read_splits()
        self.encoder.fit(train_table, train_source, keep=keep_encoding)
        self.train = self.encoder.encode(train_table, train_source)
        self.eval = self.encoder.encode(eval_table, eval_source)
        del train_table, eval_table
        # hand the tables' memory back to the system: torch's allocations (the model, the optimizer) cannot reuse
        # what Arrow's allocator keeps, and the peak RSS would be the sum of both
        pa.default_memory_pool().release_unused()
        self.log_splits()

    def log_splits(self) -> None:
        """Log the rows of both splits, where they come from and the model's inputs."""
        log.info(
            "data: %s (%s), %s (%s), %s, %s",
            plural(len(self.train), "train row"),
            self.train.source,
            plural(len(self.eval), "eval row"),
            self.eval.source,
            self.input_spec.described,
            plural(sum(self.input_spec.cardinalities), "embedding row"),
        )

    def read_eval(self) -> tuple[pa.Table, str]:
        """Return ``(eval_table, eval_source)`` alone; this default reads both splits and keeps the eval one."""
        return self.read_splits()[1]

    def setup_eval(self, encoding: Mapping[str, Any]) -> None:
        """Read and encode only the eval split, with a saved encoder state (:meth:`FeatureEncoder.state_dict` of
        the run being evaluated): nothing is fitted, so every id keeps its row and every statistic its value."""
        self.encoder.load_state_dict(encoding)
        eval_table, eval_source = self.read_eval()
        self.eval = self.encoder.encode(eval_table, eval_source)
        log.info("data: %s (%s)", plural(len(self.eval), "eval row"), eval_source)

    @property
    def input_spec(self) -> InputSpec:
        return self.encoder.input_spec

    def check_labels(
        self,
        required_by: str,
        allowed: tuple[float, ...] | None = None,
        value_range: tuple[float, float] | None = None,
        column: str | None = None,
        every_value: bool = False,
    ) -> None:
        """Raise :class:`DataError` naming the source, column and row of the first label of ``column`` (default:
        the only label column) that is not one of ``allowed`` or lies outside the closed ``value_range``; with
        ``every_value``, also when one of ``allowed`` never occurs in the training split. Only the splits that are
        set up are checked (after :meth:`setup_eval`, the eval split). The rule is kept in :attr:`label_rules`: a
        streamed split is checked batch by batch as it is read."""
        names = self.spec.label_names
        column = column or names[0]
        rule = LabelRule(required_by, allowed, value_range, column, names.index(column) if len(names) > 1 else None)
        self.label_rules.append(rule)
        found = self.train_label_values(column) if every_value and allowed is not None else None
        if found is not None:
            values, source = found
            missing = [v for v in allowed if v not in values]
            if missing:
                seen = ", ".join(f"{v:g}" for v in values[:10])
                absent = ", ".join(f"{v:g}" for v in missing)
                raise DataError(
                    f"{source}: column '{column}' never takes the value {absent} (its values: {seen}); "
                    f"{required_by} needs every one of {{{', '.join(f'{v:g}' for v in allowed)}}}: check the label "
                    "column and the number of classes"
                )
        for split in (s for s in (self.train, self.eval) if s is not None):
            rule.check(split, split.source)

    def train_label_values(self, column: str) -> tuple[list[float], str] | None:
        """The distinct values of label ``column`` in the training split, sorted, and the split's name; None when
        the training split is not set up."""
        if self.train is None:
            return None
        names = self.spec.label_names
        labels = self.train.labels if len(names) == 1 else self.train.labels[:, names.index(column)]
        return labels.unique().tolist(), self.train.source

    def num_train_batches(self) -> int:
        return self.train.num_batches(self.batch_size)

    def num_train_steps(self, workers: int = 1, accumulate: int = 1) -> int:
        """Optimizer steps in one epoch when each step takes ``batch_size * workers * accumulate`` rows."""
        return self.train.num_batches(self.batch_size * workers * accumulate)

    def epoch_order(self, epoch: int) -> Tensor | None:
        """``(N,) int64`` the training rows in the order of ``epoch``, from a generator seeded with ``(seed,
        epoch)``, the same for any batch size or number of workers (and on any device: it is drawn on the CPU and
        moved to the training split's); None without shuffling (the file's order).

        With a session column, whole sessions are shuffled and a session's rows stay together.
        """
        if not self.shuffle:
            return None
        import torch

        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        if self.train.sessions is None:
            order = torch.randperm(len(self.train), generator=generator)
        else:
            order = self.train.session_order(generator)  # listwise losses need a session's rows in one batch
        return order.to(self.train.device)

    def train_to(self, device: torch.device) -> None:
        """Keep the training split on ``device``: each step's rows are then gathered there, with no copy from the
        host (for a GPU whose memory holds the split)."""
        self.train = self.train.to(device)

    def train_batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """The training batches of ``epoch`` in its order (:meth:`epoch_order`), from batch ``skip`` on."""
        return self.train.batches(self.batch_size, self.epoch_order(epoch), first=skip)

    def train_steps(
        self, epoch: int, workers: Workers | None = None, position: Mapping[str, Any] | None = None
    ) -> Iterator[TrainStep]:
        """This worker's part of each optimizer step of ``epoch``, from ``position`` (what :meth:`position` returned
        when a checkpoint was written; None: the epoch's start) on. ``workers``: the ``distributed`` component
        (``world_size``, ``rank``, ``accumulate_steps``); None: one process.

        A step takes the next ``batch_size * world_size * accumulate_steps`` rows of the order (fewer at the end)
        and splits them as evenly as rows allow into ``world_size * accumulate_steps`` micro-batches; worker
        ``rank`` gets micro-batches ``rank``, ``rank + world_size``, ... So the workers read disjoint shards, every
        row is read once per epoch, and a step sees the same rows whatever the split: 2 workers with batch B, 1
        worker with batch 2B, and 1 worker accumulating 2 batches of B all train on the same rows. The position
        is the rows of the epoch's order already trained on, so any number of workers continues it.
        """
        from easyrec.data.batches import TrainStep

        world, rank, accumulate = shape_of(workers)
        order = self.epoch_order(epoch)
        self.rows_in_epoch = int((position or {}).get("rows_in_epoch", 0))
        total, pieces = len(self.train), world * accumulate
        for first in range(self.rows_in_epoch, total, self.batch_size * pieces):
            rows = min(self.batch_size * pieces, total - first)
            bounds = [first + rows * i // pieces for i in range(pieces + 1)]
            mine = range(rank, pieces, world)
            batches = [self.train.rows(bounds[i], bounds[i + 1], order) for i in mine]
            self.rows_in_epoch = first + rows
            yield TrainStep(batches, [(bounds[i + 1] - bounds[i]) / rows for i in mine], rows)

    def position(self) -> dict[str, Any]:
        """Where the steps :meth:`train_steps` yielded left the epoch (plain types, for a checkpoint)."""
        return {"rows_in_epoch": self.rows_in_epoch}

    def eval_batches(self, workers: Workers | None = None, max_rows: int | None = None) -> Iterator[Batch]:
        """The eval batches in order, of the first ``max_rows`` rows (None: all); with several workers, this
        worker's contiguous share of them (whole batches, so that the workers' predictions, concatenated in rank
        order, are those of one worker)."""
        world, rank, _ = shape_of(workers)
        rows, size = min(len(self.eval), max_rows or len(self.eval)), self.eval_batch_size
        count = -(-rows // size)
        first, stop = count * rank // world, count * (rank + 1) // world
        return (self.eval.rows(b * size, min((b + 1) * size, rows)) for b in range(first, stop))

    def state_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder.state_dict()}


class Workers(Protocol):
    """What the data needs of the ``distributed`` component: the workers' number and this one's rank, the
    micro-batches of a step, and a sum over the workers (an all-reduce)."""

    world_size: int
    rank: int
    accumulate_steps: int

    def sum(self, value: Tensor) -> Tensor: ...


def shape_of(workers: Workers | None) -> tuple[int, int, int]:
    """``(world_size, rank, accumulate_steps)`` of ``workers``; ``(1, 0, 1)`` for None (one process)."""
    if workers is None:
        return 1, 0, 1
    return workers.world_size, workers.rank, workers.accumulate_steps
