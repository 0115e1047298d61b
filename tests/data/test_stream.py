"""The streamed training and eval splits: every row once per epoch over ranks and loader workers, exact positions,
bounded shuffling, label checks naming the piece and row."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from easyrec.data import ParquetData
from easyrec.data.features import CategoricalFeatures, DenseFeatures, FeatureEncoder, FeatureSpec
from easyrec.data.files import byte_count
from easyrec.data.pieces import Piece
from easyrec.data.stream import PieceEncoding, StreamedSplits, _windows
from easyrec.data.tabular import LabelRule
from easyrec.errors import DataError
from tests.data.damage import damage_row_group

SPEC = FeatureSpec(dense=[DenseFeatures(["id"])], categorical=[CategoricalFeatures(["c"])], label="label")
ROWS_PER_GROUP = 7


class RowGroupReader:
    """Reads a Parquet row group (the sources' reader stands in for it here)."""

    def __init__(self) -> None:
        self.skipped: dict[Piece, str] = {}

    def __call__(self, piece: Piece, columns: list[str]):
        yield from pq.ParquetFile(piece.path).read_row_group(piece.row_group, columns).to_batches(max_chunksize=4)


def write_files(directory: Path, files: int = 3, groups: int = 4, first_id: int = 0, bad: int | None = None):
    """``files`` Parquet files of ``groups`` row groups of 7 rows each, ids counting from ``first_id``; the label of
    id ``bad`` is 2. Returns the row group pieces."""
    pieces, next_id = [], first_id
    for f in range(files):
        path = directory / f"part-{f}.parquet"
        ids = list(range(next_id, next_id + groups * ROWS_PER_GROUP))
        next_id += len(ids)
        table = pa.table(
            {
                "id": pa.array(ids, pa.float64()),
                "c": pa.array([f"c{i % 5}" for i in ids]),
                "label": pa.array([2.0 if i == bad else float(i % 2) for i in ids]),
            }
        )
        pq.write_table(table, path, row_group_size=ROWS_PER_GROUP)
        pieces += [Piece(str(path), g, path.stat().st_size, 0, ROWS_PER_GROUP) for g in range(groups)]
    return pieces


@pytest.fixture(scope="module")
def pieces(tmp_path_factory) -> tuple[list[Piece], list[Piece]]:
    directory = tmp_path_factory.mktemp("stream")
    (directory / "eval").mkdir()
    return write_files(directory), write_files(directory / "eval", files=2, groups=3, first_id=1000)


def splits(pieces, num_workers=0, batch_size=5, shuffle_buffer=10, rules=(), shuffle=True, seed=3) -> StreamedSplits:
    train, eval_ = pieces
    encoder = FeatureEncoder(SPEC).fit(pa.concat_tables(pq.read_table(p) for p in {p.path for p in train}), "train")
    encoding = PieceEncoding(RowGroupReader(), encoder, SPEC.columns, rules)
    eval_encoding = PieceEncoding(RowGroupReader(), encoder, SPEC.columns, rules)
    return StreamedSplits(
        encoding, eval_encoding, train, eval_, batch_size, 4, shuffle, seed, num_workers, shuffle_buffer
    )


@dataclass
class ThreadRanks:
    """``world_size`` ranks run as threads: ``sum`` adds the ranks' tensors (a barrier stands for the all-reduce)."""

    world_size: int
    values: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.values = [None] * self.world_size
        self.barrier = threading.Barrier(self.world_size)

    def rank(self, rank: int, accumulate_steps: int = 1) -> RankWorkers:
        return RankWorkers(self, rank, accumulate_steps)


@dataclass
class RankWorkers:
    group: ThreadRanks
    rank: int
    accumulate_steps: int

    @property
    def world_size(self) -> int:
        return self.group.world_size

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        self.group.values[self.rank] = value
        self.group.barrier.wait()
        total = torch.stack(self.group.values).sum(0)
        self.group.barrier.wait()  # nobody overwrites a value before every rank has summed
        return total


def run_ranks(make, world_size, epoch=0, position=None, accumulate=1, steps=None):
    """Each rank's steps of ``epoch`` (at most ``steps``) and its data's position after them."""
    group, results = ThreadRanks(world_size), [None] * world_size

    def rank(r):
        data = make()
        taken = []
        for step in data.train_steps(epoch, group.rank(r, accumulate), position):
            taken.append(step)
            if steps is not None and len(taken) == steps:
                break
        results[r] = (taken, data.position())

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def ids(steps) -> list[int]:
    return [i for step in steps for batch in step.batches for i in batch_ids(batch)]


def batch_ids(batch) -> list[int]:
    return [int(i) for i in batch.dense[:, 0].tolist()]


def piece_ids(piece: Piece) -> list[int]:
    """The ids of a training piece, from the file's number and the row group (see :func:`write_files`)."""
    first = int(Path(piece.path).stem.split("-")[1]) * 28 + piece.row_group * ROWS_PER_GROUP
    return list(range(first, first + ROWS_PER_GROUP))


@pytest.mark.parametrize(("world_size", "num_workers", "accumulate"), [(1, 0, 1), (2, 0, 1), (2, 0, 2), (1, 2, 1)])
def test_every_row_once_per_epoch_over_ranks_and_loader_workers(pieces, world_size, num_workers, accumulate):
    every = list(range(84))
    orders = []
    for epoch in (0, 1):
        results = run_ranks(lambda: splits(pieces, num_workers), world_size, epoch, accumulate=accumulate)
        counts = {len(steps) for steps, _ in results}
        assert len(counts) == 1  # every rank takes the same number of steps
        seen = [i for steps, _ in results for i in ids(steps)]
        assert sorted(seen) == every
        for parts in zip(*(steps for steps, _ in results), strict=True):
            assert len({part.rows for part in parts}) == 1
            assert all(len(part.batches) == accumulate for part in parts)
            assert sum(len(b) for part in parts for b in part.batches) == parts[0].rows
            assert sum(share for part in parts for share in part.shares) == pytest.approx(1.0)
        if epoch == 0:  # the pieces' rows are known: the count is exact
            assert counts == {splits(pieces, num_workers).num_train_steps(world_size, accumulate)}
        assert all(position == {"rows_in_epoch": 0} for _, position in results)  # the next epoch's start
        orders.append(seen)
    assert orders[0] != orders[1]  # another piece order, other windows


def test_the_piece_order_changes_each_epoch_and_follows_the_files_without_shuffle(pieces):
    data = splits(pieces)
    assert data.piece_order(0) != data.piece_order(1) and sorted(data.piece_order(0)) == list(range(12))
    assert splits(pieces, seed=3).piece_order(1) == data.piece_order(1)
    plain = splits(pieces, shuffle=False)
    assert ids(plain.train_steps(4)) == list(range(84))


def test_rows_are_shuffled_within_windows_of_shuffle_buffer_rows(pieces):
    data = splits(pieces, batch_size=4, shuffle_buffer=10)
    stream = [i for index in data.piece_order(0) for i in piece_ids(data.train_pieces[index])]
    seen = ids(data.train_steps(0))
    for start in range(0, 84, 10):  # each window of the stream is emitted whole before the next one
        assert sorted(seen[start : start + 10]) == sorted(stream[start : start + 10])
    assert seen != stream


def test_a_window_holds_at_most_shuffle_buffer_rows(pieces):
    data = splits(pieces)
    record_batches = data.encoding.splits(data.train_pieces)
    windows = list(_windows(record_batches, 10))
    assert [len(w) for w in windows] == [10] * 8 + [4]
    assert [int(i) for w in windows for i in w.dense[:, 0].tolist()] == list(range(84))


def test_a_resume_on_the_same_workers_continues_exactly(pieces):
    make = lambda: splits(pieces, batch_size=3, shuffle_buffer=8)  # noqa: E731
    whole = [ids(steps) for steps, _ in run_ranks(make, 2, epoch=1)]
    first = run_ranks(make, 2, epoch=1, steps=5)
    position = first[0][1]
    assert position == first[1][1] and position["rows_in_epoch"] == 30 and sum(position["rows"]) == 30
    rest = run_ranks(make, 2, epoch=1, position=position)
    for rank in range(2):  # the same batches as without the stop
        assert ids(first[rank][0]) + ids(rest[rank][0]) == whole[rank]


def test_a_resume_on_other_workers_skips_no_row(pieces, caplog):
    make_one = lambda: splits(pieces, batch_size=3, shuffle_buffer=8)  # noqa: E731
    first = run_ranks(make_one, 1, steps=9)  # 27 rows, in the fourth window of 8
    position = first[0][1]
    with caplog.at_level(logging.WARNING, "easyrec.data.stream"):
        rest = run_ranks(make_one, 2, position=position)
    done, again = Counter(ids(first[0][0])), Counter(i for steps, _ in rest for i in ids(steps))
    assert set(done + again) == set(range(84))
    repeated = sum((done & again).values())
    # window 8 of 24:32 was in flight: the first 3 pieces (21 rows) are done, the 4th (22:28) is dealt again
    assert repeated == 27 - 21
    assert "6 rows trained again" in caplog.text
    # a resumed epoch's position resumes again, on its own workers
    second = run_ranks(make_one, 2, position=position, steps=2)
    assert second[0][1]["workers"] == 2 and second[0][1]["rows_in_epoch"] == 27 + 12


def test_the_eval_stream_covers_the_eval_split_once_over_ranks_and_loader_workers(pieces):
    data = splits(pieces, num_workers=2)
    shares = [[batch_ids(b) for b in data.eval_batches(ThreadRanks(2).rank(r))] for r in range(2)]
    assert sorted(i for share in shares for batch in share for i in batch) == list(range(1000, 1042))
    assert all(len(batch) <= 4 for share in shares for batch in share)
    assert max(sum(shares[0], [])) < min(sum(shares[1], []))  # contiguous shares of the files' order


def test_eval_max_rows_of_a_stream_takes_the_first_rows_over_ranks(pieces):
    data = splits(pieces, num_workers=0)  # one loader worker: each rank's rows in file order
    for rows, expected in ((5, range(1000, 1005)), (30, range(1000, 1030)), (100, range(1000, 1042))):
        shares = [[i for b in data.eval_batches(ThreadRanks(2).rank(r), rows) for i in batch_ids(b)] for r in range(2)]
        assert shares[0] + shares[1] == list(expected)


def test_a_label_that_breaks_a_rule_names_the_piece_and_row(tmp_path):
    train = write_files(tmp_path, files=1, groups=3, bad=11)  # row group 1, its row 5
    rule = LabelRule("loss X", (0.0, 1.0), None, "label", None)
    for num_workers in (0, 1):  # from a loader worker process too, as one line
        data = splits((train, train), num_workers, rules=[rule], shuffle=False)
        with pytest.raises(
            DataError, match=r"^\S*part-0.parquet \(row group 1\): column 'label', row 5: label 2 is not"
        ):
            list(data.train_steps(0))


def parquet_data(pieces, **options) -> ParquetData:
    train, eval_ = pieces
    return ParquetData(SPEC, train_path=train[0].path, eval_path=eval_[0].path, batch_size=5, **options)


def test_auto_mode_streams_when_the_training_split_exceeds_the_memory_budget(pieces, caplog):
    with caplog.at_level(logging.INFO, "easyrec.data.files"):
        small = parquet_data(pieces, memory_budget=100, num_workers=0)
        small.setup()
        roomy = parquet_data(pieces, memory_budget="1MiB")
        roomy.setup()
    assert small.streams and not roomy.streams
    # 28 rows of 12 encoded bytes (dense, id, label): 336 bytes
    assert (
        "streaming the training split (data.streaming=auto: 336 bytes, 28 rows encoded, > data.memory_budget"
        in caplog.text
    )
    assert "reading the training split into memory (data.streaming=auto" in caplog.text
    assert sorted(ids(small.train_steps(0))) == list(range(28))
    assert sorted(i for b in small.eval_batches() for i in batch_ids(b)) == list(range(1000, 1021))
    assert small.num_train_steps() == 6 and small.position() == {"rows_in_epoch": 0}


def test_a_streamed_file_source_checks_the_labels_of_every_piece_it_reads(tmp_path):
    train = write_files(tmp_path, files=1, groups=3, bad=18)
    data = ParquetData(SPEC, train_path=train[0].path, eval_path=train[0].path, streaming=True, num_workers=0)
    data.setup()
    data.check_labels("loss X", (0.0, 1.0))  # nothing is read yet: the rule is kept
    with pytest.raises(DataError, match=r"part-0.parquet \(row group 2\): column 'label', row 5: label 2 is not"):
        list(data.eval_batches())


@pytest.mark.parametrize(("given", "expected"), [(1000, 1000), ("4GB", 4 * 10**9), ("512 MiB", 512 * 2**20)])
def test_memory_budget_takes_bytes_or_a_size(given, expected):
    assert byte_count(given) == expected


@pytest.mark.parametrize("bad", ["4 parsecs", "0", "-1GB"])
def test_a_memory_budget_that_is_not_a_size_is_refused(pieces, bad):
    with pytest.raises(ValueError, match=f"memory_budget={bad}: must be"):
        parquet_data(pieces, memory_budget=bad)


def test_a_streamed_run_keeps_its_fitted_encoding_in_the_cache(pieces, tmp_path, caplog):
    first = parquet_data(pieces, streaming=True, num_workers=0, cache_dir=str(tmp_path))
    first.setup()
    with caplog.at_level(logging.INFO, "easyrec.data.cache"):
        second = parquet_data(pieces, streaming=True, num_workers=0, cache_dir=str(tmp_path))
        second.setup()
    assert "fitted encoding from cache" in caplog.text
    assert second.encoder.state_dict() == first.encoder.state_dict()
    assert ids(second.train_steps(2)) == ids(first.train_steps(2))


def test_an_eval_piece_skipped_in_a_loader_worker_is_counted_in_the_training_process(pieces, tmp_path):
    train, _ = pieces
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    write_files(eval_dir, files=2, groups=3, first_id=1000)
    damage_row_group(eval_dir / "part-1.parquet", group=2, column=0)  # the eval split's last row group
    data = ParquetData(
        SPEC, train_path=train[0].path, eval_path=str(eval_dir), streaming=True, num_workers=1, on_bad_piece="skip"
    )
    data.setup()
    assert data.skipped_pieces == 0
    seen = sorted(i for batch in data.eval_batches() for i in batch_ids(batch))
    assert seen == list(range(1000, 1035))  # 6 row groups of 7 rows, the last one left out
    assert data.skipped_pieces == 1


def test_a_class_that_never_occurs_in_a_streamed_training_split_is_named(pieces):
    data = parquet_data(pieces, streaming=True, num_workers=0)
    data.setup()
    data.check_labels("loss L", allowed=(0.0, 1.0), every_value=True)  # both occur: no error
    with pytest.raises(DataError, match=r"column 'label' never takes the value 2 \(its values: 0, 1\); loss L needs"):
        data.check_labels("loss L", allowed=(0.0, 1.0, 2.0), every_value=True)
