"""The training and eval splits of a file source read as streams of pieces, in DataLoader worker processes.

Each epoch the training pieces are put in an order drawn from ``(seed, epoch)`` (the file order without shuffling)
and dealt to the ``G = world_size * max(num_workers, 1)`` global loader workers: piece ``i`` of the order to worker
``i % G`` (worker ``g = rank * max(num_workers, 1) + worker id``). A worker reads its pieces in order, encodes their
record batches, cuts its rows into windows of ``shuffle_buffer`` rows, permutes each window with a generator seeded
with ``(seed, epoch, g, window)`` and emits batches of ``batch_size`` rows (a batch may span two windows). So a
worker holds one window and one record batch, and its position is one integer: the rows of its stream in the
batches handed to the trainer. A resume re-reads the window that holds it and skips what was consumed: no row is
repeated or skipped. Each optimizer step, the ranks agree on the step's rows and every worker's position with one
all-reduce, so that every rank knows the whole position and every rank takes the same number of steps.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from easyrec.console import plural
from easyrec.data.batches import Batch, EncodedSplit, TrainStep
from easyrec.data.features import FeatureEncoder, FeatureSpec
from easyrec.data.pieces import Piece, PieceReader
from easyrec.data.tabular import LabelRule, Workers, shape_of
from easyrec.errors import DataError, EasyrecError

log = logging.getLogger(__name__)

BATCHES_PER_ITEM = 16  # batches a loader worker sends at once: fewer, larger messages between processes


@dataclass
class PieceEncoding:
    """How a loader worker turns pieces into encoded, checked rows (pickled into each worker).

    Attributes:
        reader: reads a piece's record batches.
        encoder: the fitted encoder.
        columns: the columns to read.
        rules: the label rules every encoded record batch must keep (:meth:`TabularData.check_labels`).
        rows: the rows of the pieces where known (Parquet metadata, the encoding pass's counts).
    """

    reader: PieceReader
    encoder: FeatureEncoder
    columns: list[str]
    rules: Sequence[LabelRule] = ()
    rows: Mapping[Piece, int] | None = None

    def splits(self, pieces: Sequence[Piece], skip: int = 0) -> Iterator[EncodedSplit]:
        """The encoded record batches of ``pieces``, in order, from row ``skip`` of their rows on; a piece whose
        rows are known and all skipped is not read. Errors name the piece and the row within it."""
        rows = self.rows or {}
        for piece in pieces:
            if skip and rows.get(piece) is not None and rows[piece] <= skip:
                skip -= rows[piece]
                continue
            first = 0  # the record batch's first row in the piece
            for record in self.reader(piece, self.columns):
                if skip >= record.num_rows:
                    skip -= record.num_rows
                    first += record.num_rows
                    continue
                record, first, skip = record.slice(skip), first + skip, 0
                if record.num_rows == 0:
                    continue
                split = self.encoder.encode(pa.Table.from_batches([record]), str(piece), first_row=first)
                for rule in self.rules:
                    rule.check(split, str(piece), first)
                first += record.num_rows
                yield split

    def count(self, piece: Piece) -> int:
        """The rows of ``piece``: known, or counted by reading it."""
        known = (self.rows or {}).get(piece, piece.rows)
        if known is not None:
            return known
        return sum(record.num_rows for record in self.reader(piece, self.columns[:1]))


@dataclass
class WorkerStream:
    """What one loader worker reads: global worker ``worker``'s ``pieces`` from row ``start`` of their rows on, in
    batches of ``batch_size`` rows; with a ``shuffle`` seed ``(seed, epoch)``, through permuted windows of
    ``window`` rows."""

    worker: int
    pieces: list[Piece]
    start: int
    batch_size: int
    window: int
    shuffle: tuple[int, int] | None

    def batches(self, encoding: PieceEncoding) -> Iterator[tuple[int, Batch]]:
        """``(position after the batch, batch)``: the batches from row ``start`` of the stream on."""
        first_window = self.start // self.window
        skip, position = self.start - first_window * self.window, self.start
        windows = _windows(encoding.splits(self.pieces, first_window * self.window), self.window)
        carry: Batch | None = None  # rows of the last window that did not fill a batch
        for index, window in enumerate(windows, first_window):
            order = self._order(index, window)
            at, skip = skip, 0
            while at < len(window):
                need = self.batch_size - (len(carry) if carry is not None else 0)
                part = window.rows(at, min(at + need, len(window)), order)
                at += len(part)
                carry = part if carry is None else _concat([carry, part])
                if len(carry) == self.batch_size:
                    position += len(carry)
                    yield position, _compact(carry)
                    carry = None
        if carry is not None:
            yield position + len(carry), _compact(carry)

    def _order(self, index: int, window: EncodedSplit) -> torch.Tensor | None:
        """``(n,) int64`` the rows of window ``index`` in their shuffled order (a session's rows stay together);
        None without shuffling."""
        if self.shuffle is None:
            return None
        generator = torch.Generator().manual_seed(mixed_seed(*self.shuffle, self.worker, index))
        if window.sessions is None:
            return torch.randperm(len(window), generator=generator)
        return window.session_order(generator)


class PieceStream(IterableDataset):
    """The batches of one rank's loader workers: loader worker ``w`` (0 without worker processes) reads
    ``streams[w]`` and yields ``(global worker, [(position after a batch, its rows)], rows of those batches, pieces
    its reader skipped so far)``: several batches in one set of tensors, since every tensor sent from a worker
    process costs a shared-memory segment, and a last item without batches (:func:`_unpacked` gives the batches
    back, and the skipped pieces to the training process's reader)."""

    def __init__(self, encoding: PieceEncoding, streams: list[WorkerStream], per_item: int = 1) -> None:
        self.encoding, self.streams, self.per_item = encoding, streams, per_item

    def __iter__(self) -> Iterator[tuple[int, list[tuple[int, int]], Batch | None, dict[Piece, str]] | EasyrecError]:
        info = get_worker_info()
        stream = self.streams[0 if info is None else info.id]
        batches = stream.batches(self.encoding)
        skipped = self.encoding.reader.skipped
        try:
            while taken := list(itertools.islice(batches, self.per_item)):
                block = taken[0][1] if len(taken) == 1 else _concat([batch for _, batch in taken])
                yield stream.worker, [(position, len(batch)) for position, batch in taken], block, dict(skipped)
        except EasyrecError as error:  # raised, torch would give it the worker's traceback as its message
            yield error
            return
        yield stream.worker, [], None, dict(skipped)  # a piece skipped after the last batch is counted too


def _unpacked(
    items: Iterator[tuple[int, list[tuple[int, int]], Batch | None, dict[Piece, str]] | EasyrecError],
    reader: PieceReader,
) -> Iterator[tuple[int, int, Batch]]:
    """``(global worker, position after the batch, batch)`` for each batch of :class:`PieceStream`'s items; an
    error a worker met (bad input, in one line) is raised here, and the pieces it skipped are added to
    ``reader.skipped`` (the training process's count; the worker warned about them)."""
    for item in items:
        if isinstance(item, EasyrecError):
            raise item
        worker, batches, block, skipped = item
        reader.skipped.update(skipped)
        start = 0
        for position, rows in batches:
            yield worker, position, _sliced_batch(block, start, start + rows)
            start += rows


class StreamedSplits:
    """The train and eval splits of a file source as streams of pieces (see the module's docstring).

    Args:
        encoding: how the training pieces are read, encoded and checked.
        eval_encoding: the same for the eval pieces (their own source's reader: another directory, filesystem).
        train_pieces: the training pieces, in a fixed (sorted) order.
        eval_pieces: the eval pieces, in file order.
        batch_size: training rows per batch.
        eval_batch_size: rows per eval batch.
        shuffle: shuffle the piece order each epoch and the rows in windows of ``shuffle_buffer`` rows.
        seed: seeds the shuffling.
        num_workers: loader worker processes per rank (0: read in the training process).
        shuffle_buffer: rows per shuffled window.
    """

    def __init__(
        self,
        encoding: PieceEncoding,
        eval_encoding: PieceEncoding,
        train_pieces: Sequence[Piece],
        eval_pieces: Sequence[Piece],
        batch_size: int,
        eval_batch_size: int,
        shuffle: bool,
        seed: int,
        num_workers: int,
        shuffle_buffer: int,
    ) -> None:
        self.encoding, self.eval_encoding = encoding, eval_encoding
        self.train_pieces, self.eval_pieces = list(train_pieces), list(eval_pieces)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.shuffle, self.seed = shuffle, seed
        self.num_workers, self.shuffle_buffer = num_workers, shuffle_buffer
        self._position: dict[str, Any] | None = None  # the epoch in progress; None: the next epoch's start

    @property
    def workers_per_rank(self) -> int:
        return max(self.num_workers, 1)

    def piece_order(self, epoch: int) -> list[int]:
        """The training pieces (indices into ``train_pieces``) in the order of ``epoch``."""
        if not self.shuffle:
            return list(range(len(self.train_pieces)))
        generator = torch.Generator().manual_seed(mixed_seed(self.seed, epoch))
        return torch.randperm(len(self.train_pieces), generator=generator).tolist()

    def train_steps(
        self, epoch: int, workers: Workers | None = None, position: Mapping[str, Any] | None = None
    ) -> Iterator[TrainStep]:
        """This rank's part of each optimizer step of ``epoch`` from ``position`` on (see
        :meth:`TabularData.train_steps`): each rank takes its next ``accumulate_steps`` batches; one all-reduce
        sums the rows and the workers' positions; a rank whose pieces ran out gets 0-row batches (share 0.0), and
        the epoch ends on every rank when a step would have no rows."""
        world, rank, accumulate = shape_of(workers)
        per_rank = self.workers_per_rank
        state = self._resumed(epoch, world * per_rank, position)
        self._position = state
        mine = range(rank * per_rank, (rank + 1) * per_rank)
        streams = [
            WorkerStream(
                g,
                [self.train_pieces[i] for i in state["pieces"][g :: state["workers"]]],
                state["rows"][g],
                self.batch_size,
                self.shuffle_buffer,
                (self.seed, epoch) if self.shuffle else None,
            )
            for g in mine
        ]
        batches = _unpacked(iter(self._loader(self.encoding, streams)), self.encoding.reader)
        empty = empty_batch(self.encoding.encoder.spec)
        while True:
            taken = list(itertools.islice(batches, accumulate))
            local = torch.zeros(1 + len(state["rows"]), dtype=torch.int64)
            local[0] = sum(len(batch) for _, _, batch in taken)
            for g, after, _ in taken:
                state["rows"][g] = after
            local[1 + mine.start : 1 + mine.stop] = torch.tensor(state["rows"][mine.start : mine.stop])
            total = (workers.sum(local) if workers is not None else local).tolist()
            if total[0] == 0:
                self._position = None  # the epoch is over: its position is the next epoch's start
                return
            rows = total[0]
            state["rows"], state["rows_in_epoch"] = total[1:], state["rows_in_epoch"] + rows
            step = [batch for _, _, batch in taken] + [empty] * (accumulate - len(taken))
            yield TrainStep(step, [len(batch) / rows for batch in step], rows)

    def position(self) -> dict[str, Any]:
        """The position after the last step :meth:`train_steps` yielded: the epoch, the rows trained in it (all
        ranks), the number of global workers, the pieces still dealt this epoch (indices into ``train_pieces``, in
        dealing order), each global worker's consumed rows, and the window size."""
        if self._position is None:
            return {"rows_in_epoch": 0}
        state = self._position
        return {**state, "pieces": list(state["pieces"]), "rows": list(state["rows"])}

    def _resumed(self, epoch: int, workers: int, position: Mapping[str, Any] | None) -> dict[str, Any]:
        """The epoch's state from ``position``: as stored when the workers and windows are the same; else the
        pieces not wholly consumed, dealt again among ``workers`` from their start."""
        fresh = {
            "epoch": epoch,
            "rows_in_epoch": 0,
            "workers": workers,
            "pieces": self.piece_order(epoch),
            "rows": [0] * workers,
            "window": self.shuffle_buffer,
            "num_pieces": len(self.train_pieces),
        }
        if not position or position.get("epoch") != epoch or "pieces" not in position:
            if position and position.get("rows_in_epoch"):
                log.warning(
                    "data: the checkpoint's position (%s) is not a stream position of epoch %d; the epoch starts over",
                    position,
                    epoch,
                )
            return fresh
        if position["num_pieces"] != len(self.train_pieces):
            raise DataError(
                f"the checkpoint's stream position is over {position['num_pieces']} training pieces, the training "
                f"files now have {len(self.train_pieces)}: resume on the same files"
            )
        state = {**fresh, "rows_in_epoch": position["rows_in_epoch"]}
        if position["workers"] == workers and position["window"] == self.shuffle_buffer:
            return {**state, "pieces": list(position["pieces"]), "rows": list(position["rows"])}
        remaining, repeated = self._pieces_left(position)
        log.warning(
            "data: resuming epoch %d on %s (the checkpoint's: %d, window %s rows): the %s not yet wholly trained "
            "are dealt again from their start; %s trained again",
            epoch,
            plural(workers, "loader worker"),
            position["workers"],
            position["window"],
            plural(len(remaining), "piece"),
            plural(repeated, "row"),
        )
        return {**state, "pieces": remaining}

    def _pieces_left(self, position: Mapping[str, Any]) -> tuple[list[int], int]:
        """The pieces of ``position`` whose rows were not all consumed (in dealing order), and the consumed rows
        of these pieces (they are trained again)."""
        dealt, old, window = list(position["pieces"]), position["workers"], position["window"]
        done, repeated = set(), 0
        for g, consumed in enumerate(position["rows"]):
            pieces = dealt[g::old]
            rows = [self.encoding.count(self.train_pieces[i]) for i in pieces]
            # every row of the windows before the one in flight was trained (a window's rows are permuted)
            finished = consumed if consumed == sum(rows) else consumed // window * window
            end = 0
            for index, count in zip(pieces, rows, strict=True):
                if end + count > finished:
                    break
                end += count
                done.add(index)
            repeated += consumed - end
        return [i for i in dealt if i not in done], repeated

    def eval_batches(self, workers: Workers | None = None, max_rows: int | None = None) -> Iterator[Batch]:
        """This rank's contiguous share of the eval pieces, in file order, dealt to its loader workers. With
        ``max_rows``: of the split's first ``max_rows`` rows, the ranks' shares taken in rank order (the earlier
        ranks' pieces are counted for it), each share's rows in the order its loader workers deliver them."""
        world, rank, _ = shape_of(workers)
        count, per_rank = len(self.eval_pieces), self.workers_per_rank
        first = count * rank // world
        mine = self.eval_pieces[first : count * (rank + 1) // world]
        budget = None if max_rows is None else max_rows - sum(map(self.eval_encoding.count, self.eval_pieces[:first]))
        if budget is not None and budget <= 0:
            return
        streams = [
            WorkerStream(rank * per_rank + w, mine[w::per_rank], 0, self.eval_batch_size, self.eval_batch_size, None)
            for w in range(per_rank)
        ]
        for _, _, batch in _unpacked(iter(self._loader(self.eval_encoding, streams)), self.eval_encoding.reader):
            if budget is not None and len(batch) >= budget:
                yield batch.head(budget)
                return
            budget = None if budget is None else budget - len(batch)
            yield batch

    def _loader(self, encoding: PieceEncoding, streams: list[WorkerStream]) -> DataLoader:
        # batches pinned in page-locked memory copy to a GPU asynchronously: when training on one (CUDA is in use)
        pinned = torch.cuda.is_available() and torch.cuda.is_initialized()
        return DataLoader(
            PieceStream(encoding, streams, BATCHES_PER_ITEM if self.num_workers else 1),
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=pinned,
            persistent_workers=False,
        )

    def estimated_rows(self) -> list[int]:
        """The rows of each training piece: known, or estimated from its bytes at the known pieces' rows per byte
        (the first piece is counted when none is known)."""
        rows = [(self.encoding.rows or {}).get(p, p.rows) for p in self.train_pieces]
        known = [(r, p.size) for r, p in zip(rows, self.train_pieces, strict=True) if r is not None]
        if len(known) < len(rows) and not known:
            known = [(self.encoding.count(self.train_pieces[0]), self.train_pieces[0].size)]
        per_byte = sum(r for r, _ in known) / max(sum(size for _, size in known), 1)
        return [r if r is not None else round(p.size * per_byte) for r, p in zip(rows, self.train_pieces, strict=True)]

    def num_train_steps(self, world_size: int = 1, accumulate: int = 1) -> int:
        """Optimizer steps of epoch 0 on ``world_size`` ranks: exact where the pieces' rows are known (other
        epochs deal the pieces in another order, and may differ by a few steps)."""
        rows, per_rank = self.estimated_rows(), self.workers_per_rank
        order, workers = self.piece_order(0), world_size * per_rank
        batches = [math.ceil(sum(rows[i] for i in order[g::workers]) / self.batch_size) for g in range(workers)]
        return max(math.ceil(sum(batches[r * per_rank : (r + 1) * per_rank]) / accumulate) for r in range(world_size))


def mixed_seed(*numbers: int) -> int:
    """One 63-bit seed from several numbers (a seed, an epoch, a worker, a window), each of which changes it."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def empty_batch(spec: FeatureSpec) -> Batch:
    """A batch of 0 rows with the shapes ``spec`` gives a batch: what a rank whose pieces ran out trains on."""
    labels = len(spec.label_names)
    return Batch(
        dense=torch.zeros(0, len(spec.dense_names)),
        sparse=torch.zeros(0, len(spec.categorical_names), dtype=torch.int32),
        labels=torch.zeros(0) if labels == 1 else torch.zeros(0, labels),
        weights=torch.zeros(0) if spec.weight else None,
        sessions=torch.zeros(0, dtype=torch.int64) if spec.session else None,
        lists=torch.zeros(0, spec.list_width, dtype=torch.int32) if spec.list_groups else None,
    )


def _windows(splits: Iterator[EncodedSplit], size: int) -> Iterator[EncodedSplit]:
    """The rows of ``splits`` cut into consecutive splits of ``size`` rows (the last may be shorter)."""
    held: list[EncodedSplit] = []
    count = 0
    for split in splits:
        held.append(split)
        count += len(split)
        while count >= size:
            whole = _concat_splits(held)
            yield _slice_split(whole, 0, size)
            held = [_slice_split(whole, size, count)] if count > size else []
            count -= size
    if count:
        yield _concat_splits(held)


def _concat_splits(splits: list[EncodedSplit]) -> EncodedSplit:
    if len(splits) == 1:
        return splits[0]
    return EncodedSplit(
        **{name: _cat([getattr(s, name) for s in splits]) for name in _tensor_fields(EncodedSplit)},
        source=splits[0].source,
    )


def _slice_split(split: EncodedSplit, start: int, stop: int) -> EncodedSplit:
    values = {name: _sliced(getattr(split, name), start, stop) for name in _tensor_fields(EncodedSplit)}
    return EncodedSplit(**values, source=split.source)


def _concat(batches: list[Batch]) -> Batch:
    return Batch(**{name: _cat([getattr(b, name) for b in batches]) for name in _tensor_fields(Batch)})


def _sliced_batch(batch: Batch, start: int, stop: int) -> Batch:
    return Batch(**{name: _sliced(getattr(batch, name), start, stop) for name in _tensor_fields(Batch)})


def _compact(batch: Batch) -> Batch:
    """``batch`` with tensors that own their memory (a slice of a window would take the whole window's memory
    along to the training process)."""
    return Batch(**{name: _owned(getattr(batch, name)) for name in _tensor_fields(Batch)})


def _tensor_fields(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.name != "source"]


def _cat(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if tensors[0] is None else torch.cat(tensors)


def _sliced(tensor: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    return None if tensor is None else tensor[start:stop]


def _owned(tensor: torch.Tensor | None) -> torch.Tensor | None:
    if tensor is None or tensor.untyped_storage().nbytes() == tensor.nbytes:
        return tensor
    return tensor.clone()
