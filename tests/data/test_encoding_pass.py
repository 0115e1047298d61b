"""The encoding pass over pieces (FeatureEncoder.fit_pieces): merged per-piece statistics fit what one table fits,
only the needed columns are read, errors name the piece and row, hash-only specs need no pass, and the encoder-only
cache entry of streaming runs round-trips and is dropped when damaged."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from easyrec.console import PiecesProgress
from easyrec.data import FeatureEncoder, FeatureSpec
from easyrec.data.cache import EncodingCache
from easyrec.data.csv_data import CSVFormat, csv_column_types
from easyrec.data.parquet_data import ParquetFormat
from easyrec.data.pieces import Piece
from easyrec.data.sources import FileSource
from easyrec.errors import DataError

SPEC_CONFIG = {
    "dense": [
        {"names": ["x"], "transform": "log1p", "standardize": True, "fill_value": 1.0},
        {"names": ["y"], "standardize": True},
        {"names": ["raw"]},
    ],
    "categorical": [
        {"names": ["c"], "min_count": 3},
        {"names": ["s"], "max_vocab_size": 7},
        {"names": ["h"], "encoding": "hash", "num_buckets": 16},
    ],
}
SPEC = FeatureSpec.from_config(SPEC_CONFIG)


class RowGroupReader:
    """Reads a piece (a Parquet file's row group, or the whole file) in batches of 50 rows, and records what it
    was asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[Piece, tuple[str, ...]]] = []

    def __call__(self, piece: Piece, columns: list[str]) -> Iterator[pa.RecordBatch]:
        self.calls.append((piece, tuple(columns)))
        groups = None if piece.row_group is None else [piece.row_group]
        yield from pq.ParquetFile(piece.path).iter_batches(batch_size=50, row_groups=groups, columns=columns)


def table(seed: int, rows: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.exponential(50.0, rows)
    return pa.table(
        {
            "x": pa.array(np.where(rng.random(rows) < 0.1, np.nan, x), mask=rng.random(rows) < 0.05),
            "y": rng.normal(3.0, 2.0, rows),
            "raw": rng.normal(size=rows),
            "c": pa.array(rng.zipf(1.5, rows) % 40, mask=rng.random(rows) < 0.1),
            # many ties at the cut of max_vocab_size; dictionary-encoded, each file with its own dictionary
            "s": pa.array([f"s{v}" for v in rng.integers(0, 12, rows)]).dictionary_encode(),
            "h": [f"h{v}" for v in rng.integers(0, 100, rows)],
            "label": rng.integers(0, 2, rows).astype(np.float64),
        }
    )


@pytest.fixture
def pieces(tmp_path: Path) -> tuple[list[Piece], pa.Table]:
    """Row groups of 3 Parquet files (the second one's row groups have other sizes) and the table they make."""
    tables, pieces = [], []
    for index, (rows, group) in enumerate([(400, 100), (330, 120), (270, 270)]):
        path = tmp_path / f"part-{index}.parquet"
        tables.append(table(index, rows))
        pq.write_table(tables[-1], path, row_group_size=group)
        groups = pq.ParquetFile(path).metadata.num_row_groups
        pieces += [Piece(str(path), g, path.stat().st_size) for g in range(groups)]
    return pieces, pa.concat_tables(tables)


def assert_same_fit(a: FeatureEncoder, b: FeatureEncoder) -> None:
    assert a.vocabularies.keys() == b.vocabularies.keys()
    for name, vocabulary in a.vocabularies.items():  # the same ids in the same order, of the same type
        assert vocabulary.equals(b.vocabularies[name]), name
    assert a.mean.keys() == b.mean.keys() and a.std.keys() == b.std.keys() and a.kinds == b.kinds
    for name in a.mean:
        assert a.mean[name] == pytest.approx(b.mean[name], rel=1e-9, abs=1e-12)
        assert a.std[name] == pytest.approx(b.std[name], rel=1e-9)


@pytest.mark.parametrize("layout", ["parquet", "csv"])
def test_the_pass_over_a_file_source_fits_what_its_whole_table_fits(tmp_path, layout):
    """Hive-partitioned Parquet read by row group, or CSV files read whole, through the sources' reader."""
    spec = FeatureSpec.from_config({**SPEC_CONFIG, "categorical": [*SPEC_CONFIG["categorical"], {"names": ["day"]}]})
    for day, seed in (("2026-12-01", 0), ("2026-12-02", 1)):
        (tmp_path / f"day={day}").mkdir()
        part = table(seed, 300)
        if layout == "parquet":
            pq.write_table(part, tmp_path / f"day={day}" / "part.parquet", row_group_size=128)
        else:
            part = part.set_column(part.schema.get_field_index("s"), "s", part["s"].cast(pa.string()))
            pa.csv.write_csv(part, tmp_path / f"day={day}" / "part.csv")
    table_format = ParquetFormat() if layout == "parquet" else CSVFormat(types=csv_column_types(spec, spec.columns))
    source = FileSource(str(tmp_path), table_format)
    pieces = source.pieces(by="row_group")
    encoder = FeatureEncoder(spec)
    rows = encoder.fit_pieces(pieces, source.reader, source.describe(), threads=2)
    assert_same_fit(encoder, FeatureEncoder(spec).fit(source.read_all(spec.columns), "whole"))
    assert encoder.vocabularies["day"].to_pylist() == ["2026-12-01", "2026-12-02"]  # a partition column
    assert len(pieces) == (6 if layout == "parquet" else 2) and sum(rows.values()) == 600
    assert all(rows[piece] == piece.rows for piece in pieces if piece.rows is not None)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_merged_fit_over_pieces_equals_the_fit_on_the_whole_table(pieces, threads, caplog):
    pieces, whole = pieces
    reader = RowGroupReader()
    caplog.set_level(logging.INFO, logger="easyrec.data")
    encoder = FeatureEncoder(SPEC)
    rows = encoder.fit_pieces(pieces, reader, "parts/", threads=threads)
    expected = FeatureEncoder(SPEC).fit(whole, "whole")
    assert_same_fit(encoder, expected)
    assert len(expected.vocabularies["s"]) == 7 and len(expected.vocabularies["c"]) < 40  # the limits cut
    assert rows == {piece: pq.ParquetFile(piece.path).metadata.row_group(piece.row_group).num_rows for piece in pieces}
    assert list(rows) == pieces and sum(rows.values()) == whole.num_rows
    assert "data: fitted the encoding on 1,000 rows of 8 pieces in " in caplog.text
    # the pass reads only the columns with statistics; the hash column's kind comes from the first piece's first batch
    assert {columns for _, columns in reader.calls} == {("x", "y", "c", "s"), ("h",)}
    assert [piece for piece, columns in reader.calls if columns == ("h",)] == [pieces[0]]
    split, direct = encoder.encode(whole, "whole"), expected.encode(whole, "whole")
    assert (split.sparse == direct.sparse).all() and np.allclose(split.dense.numpy(), direct.dense.numpy(), atol=1e-6)


def test_kept_statistics_are_not_read_and_a_kept_vocabulary_grows_by_the_new_ids(pieces):
    pieces, whole = pieces
    earlier = FeatureEncoder(SPEC).fit(whole.slice(0, 100), "earlier").state_dict()
    del earlier["vocabularies"]["s"], earlier["mean"]["y"], earlier["std"]["y"]  # these two are fitted again
    reader = RowGroupReader()
    encoder = FeatureEncoder(SPEC)
    encoder.fit_pieces(pieces, reader, "parts/", keep=earlier)
    assert_same_fit(encoder, FeatureEncoder(SPEC).fit(whole, "whole", keep=earlier))
    grown = encoder.vocabularies["c"].to_pylist()
    assert grown[: len(earlier["vocabularies"]["c"])] == earlier["vocabularies"]["c"]
    assert len(grown) > len(earlier["vocabularies"]["c"])
    assert encoder.mean["x"] == earlier["mean"]["x"]
    assert {columns for _, columns in reader.calls} == {("y", "c", "s"), ("h",)}


def test_a_piece_whose_ids_are_of_another_kind_is_named(pieces, tmp_path):
    pieces, _ = pieces
    odd = table(5, 60)
    odd = odd.set_column(odd.schema.get_field_index("c"), "c", odd["c"].cast(pa.string()))
    path = tmp_path / "odd.parquet"
    pq.write_table(odd, path)
    with pytest.raises(DataError) as error:
        FeatureEncoder(SPEC).fit_pieces([*pieces, Piece(str(path))], RowGroupReader(), "parts/", threads=2)
    assert str(error.value) == (
        f"{path}: column 'c' holds string ids, {pieces[0]} holds int ids: every file (piece) must give a "
        "categorical column the same type"
    )


def test_a_bad_value_is_reported_with_its_piece_and_row(pieces):
    pieces, _ = pieces
    bad = table(0, 400).to_pydict()
    bad["y"] = [str(v) for v in bad["y"]]
    bad["y"][283] = "n/a"
    pq.write_table(pa.table(bad), pieces[0].path, row_group_size=100)
    with pytest.raises(DataError) as error:
        FeatureEncoder(SPEC).fit_pieces(pieces, RowGroupReader(), "parts/")
    assert str(error.value) == f"{pieces[2]}: column 'y', row 84: 'n/a' is not a number"  # its 2nd batch


def test_a_piece_without_a_column_is_named(pieces):
    pieces, _ = pieces
    reader = RowGroupReader()

    def without_c(piece: Piece, columns: list[str]) -> Iterator[pa.RecordBatch]:
        for batch in reader(piece, columns):
            yield batch.drop_columns(["c"]) if piece == pieces[3] else batch

    with pytest.raises(DataError) as error:
        FeatureEncoder(SPEC).fit_pieces(pieces, without_c, "parts/", threads=2)
    assert str(error.value) == f"{pieces[3]}: column 'c' not found; the columns are: x, y, s"


def test_a_hash_only_spec_needs_no_pass(pieces):
    pieces, whole = pieces
    spec = FeatureSpec.from_config(
        {"dense": [{"names": ["x", "y"]}], "categorical": [{"names": ["c", "h"], "encoding": "hash", "num_buckets": 8}]}
    )
    reader = RowGroupReader()
    known = [Piece(p.path, p.row_group, p.size, rows=50) for p in pieces[:2]] + pieces[2:]
    encoder = FeatureEncoder(spec)
    assert encoder.fit_pieces(known, reader, "parts/") == {known[0]: 50, known[1]: 50}
    assert reader.calls == [(known[0], ("c", "h"))]  # the kinds, from one batch of the first piece
    assert encoder.fitted and encoder.kinds == {"c": "int", "h": "string"}
    assert encoder.state_dict() == FeatureEncoder(spec).fit(whole, "whole").state_dict()


def test_the_encoder_only_cache_entry_round_trips(pieces, tmp_path, caplog):
    pieces, _ = pieces
    encoder = FeatureEncoder(SPEC)
    rows = encoder.fit_pieces(pieces, RowGroupReader(), "parts/")
    cache = EncodingCache(tmp_path / "cache")
    assert cache.load_encoder("k", SPEC) is None
    cache.store_encoder("k", encoder, rows)
    state, cached_rows = cache.load_encoder("k", SPEC)
    assert cached_rows == rows and list(cached_rows) == list(rows)
    again = FeatureEncoder(SPEC)
    again.load_state_dict(state)
    assert again.state_dict() == encoder.state_dict()
    assert cache.load("k", SPEC, ("train", "eval")) is None  # an encoded-splits entry is another one
    # a damaged entry is dropped with a warning, and the next store writes it anew
    (entry,) = (tmp_path / "cache").iterdir()
    (entry / "vocabulary-1.arrow").write_bytes(b"ARROW1 but not quite")
    caplog.set_level(logging.WARNING, logger="easyrec.data")
    assert cache.load_encoder("k", SPEC) is None
    assert f"data: cache entry {entry} is unreadable (" in caplog.text and "fitting the encoding again" in caplog.text
    assert list((tmp_path / "cache").iterdir()) == []
    cache.store_encoder("k", encoder, rows)
    assert cache.load_encoder("k", SPEC)[1] == rows


def test_the_pass_progress_bar_counts_pieces_rows_and_speed():
    screen = io.StringIO()
    now = [0.0]
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    with PiecesProgress(console, total=4, action="fitting", clock=lambda: now[0]) as bar:
        assert "fitting 0/4 pieces" in screen.getvalue()
        now[0] = 2.0
        bar.advance(3000)
        now[0] = 4.0
        bar.advance(5000)
    assert "fitting 2/4 pieces" in screen.getvalue() and "8,000 rows     2,000 rows/s" in screen.getvalue()
    quiet = PiecesProgress(None, total=1, action="fitting")
    with quiet:
        quiet.advance(10)
    assert quiet.rows == 10
