"""File sources (easyrec.data.sources): a file, a directory, a glob or a list of them, Hive partitions, compressed CSV,
pieces and their reader, bad files named in one line, and s3:// on a real S3 server (moto's) on loopback."""

from __future__ import annotations

import gzip
import logging
import pickle
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch

from easyrec.data import CSVData, ParquetData
from easyrec.data.csv_data import CSVFormat
from easyrec.data.parquet_data import ParquetFormat
from easyrec.data.pieces import Piece
from easyrec.data.sources import FileSource, open_filesystem
from easyrec.errors import DataError
from tests.data.damage import damage_row_group

FEATURES = {"dense": [{"names": ["a"]}], "categorical": [{"names": ["c"]}]}
DAY_FEATURES = {"dense": [{"names": ["a"]}], "categorical": [{"names": ["c", "day"]}]}


def day_table(day: int, rows: int = 5) -> pa.Table:
    """``rows`` rows of day ``day``: ``a`` is ``day * 100 + row``, so that every row is known by its value."""
    return pa.table(
        {
            "label": [float(k % 2) for k in range(rows)],
            "a": [float(day * 100 + k) for k in range(rows)],
            "c": [f"c{(day + k) % 3}" for k in range(rows)],
        }
    )


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """``logs/day=2026-12-0{1,2,3}/part-0.parquet`` (row groups of 2 rows), with the files a Hadoop or Spark job
    leaves beside them: ``_SUCCESS``, ``.crc`` checksums and a ``_temporary`` directory, none of them Parquet."""
    root = tmp_path / "logs"
    for day in (1, 2, 3):
        directory = root / f"day=2026-12-0{day}"
        directory.mkdir(parents=True)
        pq.write_table(day_table(day), directory / "part-0.parquet", row_group_size=2)
        (directory / ".part-0.parquet.crc").write_bytes(b"not parquet")
    (root / "_SUCCESS").write_text("")
    (root / "_temporary").mkdir()
    (root / "_temporary" / "part-9.parquet").write_bytes(b"half written")
    return root


def values(source: FileSource, column: str = "a") -> list:
    return source.read_all([column])[column].to_pylist()


def day_values(*days: int) -> list[float]:
    return [a for day in days for a in day_table(day)["a"].to_pylist()]


# ---------------------------------------------------------------------------------------------- layouts


def test_a_directory_a_glob_and_a_list_name_the_files_sorted(logs, monkeypatch):
    monkeypatch.chdir(logs.parent)
    directory = FileSource("logs", ParquetFormat())
    assert [Path(p.path) for p in directory.pieces()] == [
        logs / f"day=2026-12-0{d}" / "part-0.parquet" for d in (1, 2, 3)
    ]
    assert directory.describe() == "logs (3 files)"
    assert values(directory) == day_values(1, 2, 3)
    assert directory.nbytes == sum((logs / f"day=2026-12-0{d}" / "part-0.parquet").stat().st_size for d in (1, 2, 3))

    glob = FileSource("logs/day=2026-12-0[1-2]/*.parquet", ParquetFormat())
    assert glob.describe() == "logs/day=2026-12-0[1-2]/*.parquet (2 files)"
    assert values(glob) == day_values(1, 2)
    assert values(FileSource("logs/**/*.parquet", ParquetFormat())) == day_values(1, 2, 3)
    # a list of a directory and a file, in any order, named twice: each file once, sorted by path
    listed = FileSource(["logs/day=2026-12-03", "logs/day=2026-12-01/part-0.parquet", "logs"], ParquetFormat())
    assert values(listed) == day_values(1, 2, 3)
    uri = FileSource(f"file://{logs}/day=2026-12-02", ParquetFormat())
    assert values(uri) == day_values(2)


def test_one_file_is_named_as_given_and_reads_as_pyarrow_reads_it(tmp_path):
    path = tmp_path / "t.parquet"
    table = day_table(1, rows=50)
    pq.write_table(table, path, row_group_size=20)
    source = FileSource(str(path), ParquetFormat())
    assert source.describe() == str(path)
    assert source.read_all(["c", "a"]).equals(pq.read_table(path, columns=["c", "a"]))
    assert source.pieces() == [Piece(str(path), None, path.stat().st_size, path.stat().st_mtime_ns, 50)]


def test_row_group_pieces_know_their_rows_and_read_only_their_rows(logs):
    source = FileSource(str(logs), ParquetFormat())
    pieces = source.pieces(by="row_group")
    assert [(Path(p.path).parent.name, p.row_group, p.rows) for p in pieces] == [
        (f"day=2026-12-0{day}", group, rows) for day in (1, 2, 3) for group, rows in ((0, 2), (1, 2), (2, 1))
    ]
    assert [p.rows for p in source.pieces(by="file")] == [5, 5, 5]
    reader = pickle.loads(pickle.dumps(source.reader))  # as a loader worker gets it
    batches = list(reader(pieces[4], ["a", "day"]))
    assert pa.Table.from_batches(batches).to_pydict() == {"a": [202.0, 203.0], "day": ["2026-12-02", "2026-12-02"]}


def test_a_hive_partition_column_is_a_categorical_feature(logs):
    data = ParquetData(DAY_FEATURES, str(logs / "day=2026-12-0[12]"), str(logs / "day=2026-12-03"))
    assert data.train_source.schema.field("day").type == pa.string()
    data.setup()
    days = data.encoder.vocabularies["day"].to_pylist()
    assert sorted(days) == ["2026-12-01", "2026-12-02"]
    column = data.spec.categorical_names.index("day")
    assert (
        data.train.sparse[:, column].tolist() == [1 + days.index("2026-12-01")] * 5 + [1 + days.index("2026-12-02")] * 5
    )
    # the eval day, named by its own directory, has its partition column too: a day training never saw (id 0)
    assert data.eval.sparse[:, column].tolist() == [0] * 5


def test_partition_values_are_the_directories_text_and_a_column_of_the_files_wins(tmp_path):
    for hour in ("03", "x"):
        (tmp_path / f"hour={hour}").mkdir()
        table = day_table(1, rows=2).append_column("c2", pa.array(["own", "own"]))
        pq.write_table(table, tmp_path / f"hour={hour}" / "p.parquet")
    (tmp_path / "hour=03" / "c2=dir").mkdir()
    pq.write_table(day_table(2, rows=1).append_column("c2", pa.array(["own"])), tmp_path / "hour=03/c2=dir/p.parquet")
    source = FileSource(str(tmp_path), ParquetFormat())
    assert source.schema.names == ["label", "a", "c", "c2", "hour"]
    table = source.read_all(["hour", "c2"])
    assert table.to_pydict() == {"hour": ["03", "03", "03", "x", "x"], "c2": ["own"] * 5}


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_compressed_csv_reads_as_the_plain_file(tmp_path, suffix):
    rows = "".join(f"{k % 2},{k},c{k % 4}\n" for k in range(30))
    plain = tmp_path / "plain" / "t.csv"
    plain.parent.mkdir()
    plain.write_text("label,a,c\n" + rows)
    packed = tmp_path / "packed"
    packed.mkdir()
    with pa.CompressedOutputStream(str(packed / f"t.csv{suffix}"), "gzip" if suffix == ".gz" else "zstd") as out:
        out.write(plain.read_bytes())
    if suffix == ".gz":  # pyarrow detects the codec from the extension: this is a real gzip file
        assert gzip.decompress((packed / "t.csv.gz").read_bytes()) == plain.read_bytes()
    a, b = CSVData(FEATURES, str(plain), str(plain)), CSVData(FEATURES, str(packed), str(packed))
    a.setup()
    b.setup()
    assert torch.equal(a.train.dense, b.train.dense) and torch.equal(a.train.sparse, b.train.sparse)
    assert b.train.dense[:, 0].tolist() == [float(k) for k in range(30)]


def test_headerless_compressed_tsv_files_take_the_given_columns(tmp_path):
    for part in range(2):
        with gzip.open(tmp_path / f"part-{part}.tsv.gz", "wt") as out:
            out.write("".join(f"{k % 2}\tc{k}\t{part * 10 + k}\n" for k in range(3)))
    data = CSVData(FEATURES, str(tmp_path / "*.tsv.gz"), str(tmp_path), delimiter="\t", header=False,
                   columns=["label", "c", "a"])  # fmt: skip
    data.setup()
    assert data.train.dense[:, 0].tolist() == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]
    assert data.train.source == f"{tmp_path / '*.tsv.gz'} (2 files)"


def test_csv_files_may_order_their_columns_differently(tmp_path):
    (tmp_path / "a.csv").write_text("label,a,c\n0,1,x\n")
    (tmp_path / "b.csv").write_text("c,label,a,extra\ny,1,2,z\n")
    data = CSVData(FEATURES, str(tmp_path), str(tmp_path))
    data.setup()
    assert data.train.dense[:, 0].tolist() == [1.0, 2.0] and data.train.labels.tolist() == [0.0, 1.0]


# ---------------------------------------------------------------------------------------------- bad input


def message(action) -> str:
    with pytest.raises(DataError) as info:
        action()
    text = str(info.value)
    assert "\n" not in text
    return text


def test_a_glob_that_matches_nothing_names_the_pattern(logs, monkeypatch):
    monkeypatch.chdir(logs.parent)
    data = ParquetData(FEATURES, "logs/day=2027-*/*.parquet", "logs")
    assert message(data.check_files) == (
        f"logs/day=2027-*/*.parquet: no file matches this pattern (relative paths are taken from {logs.parent})"
    )
    assert message(FileSource("nowhere/*.parquet", ParquetFormat()).pieces).startswith("nowhere/*.parquet: no file")


def test_a_file_whose_columns_or_types_differ_from_the_first_ones_is_named(logs):
    second = logs / "day=2026-12-02" / "part-0.parquet"
    table = day_table(2)
    pq.write_table(table.set_column(1, "a", table["a"].cast(pa.int64())), second)
    first = logs / "day=2026-12-01" / "part-0.parquet"
    text = message(ParquetData(FEATURES, str(logs), str(logs)).check_files)
    assert text == f"{second}: column 'a' is int64, but double in the first file {first}"
    pq.write_table(table.drop_columns(["c"]), second)
    text = message(ParquetData(FEATURES, str(logs), str(logs)).setup)
    assert text == f"{second}: column 'c' not found; the columns are: label, a"
    pq.write_table(table.append_column("new", pa.array(range(5))), second)  # a column the spec does not read
    ParquetData(FEATURES, str(logs), str(logs)).check_files()


def test_check_files_reads_headers_only_and_names_a_csv_file_without_a_column(tmp_path):
    (tmp_path / "a.csv").write_text("label,a,c\n0,oops,x\n")  # bad data: check_files does not read it
    (tmp_path / "b.csv").write_text("label,a\n0,1\n")
    data = CSVData(FEATURES, str(tmp_path / "a.csv"), str(tmp_path / "a.csv"))
    data.check_files()
    assert message(data.setup) == f"{tmp_path / 'a.csv'}: column 'a', row 1: 'oops' is not a number"
    both = CSVData(FEATURES, str(tmp_path), str(tmp_path))
    assert message(both.check_files) == f"{tmp_path / 'b.csv'}: column 'c' not found; the columns are: label, a"


def test_a_conversion_error_names_the_file_and_its_data_row(tmp_path):
    (tmp_path / "a.csv").write_text("label,a,c\n0,1,x\n1,2,y\n")
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(b"label,c,a\n0,x,1\n1,y,2\n0,z,12.5.3\n"))
    data = CSVData(FEATURES, str(tmp_path), str(tmp_path))
    assert message(data.setup) == f"{tmp_path / 'b.csv.gz'}: column 'a', row 3: '12.5.3' is not a number"


def truncated_parquet(path: Path) -> None:
    pq.write_table(day_table(9), path)
    path.write_bytes(path.read_bytes()[:-20])


def test_a_truncated_parquet_file_is_an_error_or_is_skipped_and_counted(logs, caplog):
    bad = logs / "day=2026-12-02" / "part-0.parquet"
    truncated_parquet(bad)
    text = message(ParquetData(FEATURES, str(logs), str(logs)).check_files)
    assert text.startswith(f"{bad}: not a readable Parquet file (")
    data = ParquetData(FEATURES, str(logs), str(logs / "day=2026-12-01"), on_bad_piece="skip")
    with caplog.at_level(logging.WARNING, logger="easyrec.data.sources"):
        data.setup()
    assert data.train.dense[:, 0].tolist() == day_values(1, 3)
    assert data.skipped_pieces == 1 and data.train_source.skipped_pieces == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"data: skipped a file that cannot be read (data.on_bad_piece=skip): {text}"
    ]
    assert data.train.source == f"{logs} (2 files)"


def test_a_corrupt_row_group_is_named_and_skipping_it_keeps_the_others(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(day_table(1, rows=6), path, row_group_size=3)
    damage_row_group(path, group=1, column=1)  # column a of the second row group
    source = FileSource(str(path), ParquetFormat())  # the footer is whole: the file lists
    first, second = source.pieces(by="row_group")
    assert pa.Table.from_batches(list(source.reader(first, ["a"])))["a"].to_pylist() == [100.0, 101.0, 102.0]
    with pytest.raises(DataError) as info:
        list(source.reader(second, ["a"]))
    assert str(info.value).startswith(f"{path} (row group 1): not a readable Parquet file (")
    skipping = FileSource(str(path), ParquetFormat(), on_bad_piece="skip").reader
    assert [len(list(skipping(piece, ["a", "c"]))) for piece in (first, second)] == [1, 0]
    assert list(skipping.skipped) == [second]


def test_a_corrupt_csv_piece_is_an_error_naming_it_or_yields_nothing_when_skipped(tmp_path, caplog):
    (tmp_path / "a.csv").write_text("label,a,c\n0,1,x\n1,2,y\n")
    (tmp_path / "b.csv").write_text("label,a,c\n0,3,x\n1,4\n0,5,z\n")  # row 2 of b.csv lacks a cell
    packed = gzip.compress(b"label,a,c\n" + b"".join(b"0,%d,x\n" % k for k in range(100_000)))
    (tmp_path / "c.csv.gz").write_bytes(packed[: len(packed) // 2])  # truncated: its header reads, its end does not
    (tmp_path / "d.csv").write_text("label,a,c\n1,7,w\n")
    text = message(CSVData(FEATURES, str(tmp_path), str(tmp_path)).setup)
    assert text == f"{tmp_path / 'b.csv'}: row 2: 2 columns, expected 3: '1,4'"
    source = FileSource(str(tmp_path), CSVFormat(types={"a": pa.float64()}), on_bad_piece="skip")
    with caplog.at_level(logging.WARNING, logger="easyrec.data.sources"):
        assert list(source.reader(source.pieces()[1], ["a"])) == []
        assert values(source) == [1.0, 2.0, 7.0]  # b.csv again, and c.csv.gz: neither yields a row
    assert source.skipped_pieces == 2
    skipped = "data: skipped a piece that cannot be read (data.on_bad_piece=skip): "
    assert [r.getMessage() for r in caplog.records] == [  # once each
        f"{skipped}{tmp_path / 'b.csv'}: row 2: 2 columns, expected 3: '1,4'",
        f"{skipped}{tmp_path / 'c.csv.gz'}: Truncated compressed stream",
    ]
    with pytest.raises(DataError, match=r"c\.csv\.gz: .*[Tt]runcated"):
        list(FileSource(str(tmp_path / "c.csv.gz"), CSVFormat()).reader(source.pieces()[2], ["a"]))


def test_an_empty_file_in_a_directory_is_named(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"")
    pq.write_table(day_table(1), tmp_path / "b.parquet")
    assert message(ParquetData(FEATURES, str(tmp_path), str(tmp_path)).check_files) == (
        f"{tmp_path / 'a.parquet'}: the file is empty"
    )


def test_paths_on_two_filesystems_and_unknown_uris_are_refused(tmp_path):
    pq.write_table(day_table(1), tmp_path / "a.parquet")
    elsewhere = "s3://bucket/b.parquet?endpoint_override=127.0.0.1:9&scheme=http"  # not contacted
    mixed = FileSource([str(tmp_path / "a.parquet"), elsewhere], ParquetFormat())
    assert message(mixed.pieces) == (
        f"s3://bucket/b.parquet: not on the filesystem of {tmp_path / 'a.parquet'}; the paths of a split must share one"
    )
    assert message(FileSource("nofs://x/y", ParquetFormat()).pieces).startswith("nofs://x/y: Unrecognized filesystem")


# ---------------------------------------------------------------------------------------------- S3


def s3_uri(path: str, endpoint: str) -> str:
    return f"s3://{path}?endpoint_override={endpoint}&scheme=http"


@pytest.fixture(scope="module")
def s3_endpoint():
    """``host:port`` of moto's S3 server on loopback, with a bucket ``data``; skipped where it cannot start."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed (the test extra has it)")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")]:
            patch.setenv(name, value)
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
        server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        try:
            server.start()
        except Exception as error:  # noqa: BLE001 (whatever stops the server, the reason is the skip's)
            pytest.skip(f"moto's S3 server did not start: {error}")
        host, port = server.get_host_and_port()
        endpoint = f"{host}:{port}"
        pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", allow_bucket_creation=True).create_dir("data")
        yield endpoint
        server.stop()


def upload(endpoint: str, tables: dict[str, pa.Table]) -> None:
    """Write each table to its key of bucket ``data``: ``.parquet`` as Parquet, ``.csv`` as CSV."""
    s3 = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http")
    for key, table in tables.items():
        if key.endswith(".parquet"):
            pq.write_table(table, f"data/{key}", filesystem=s3, row_group_size=3)
        else:
            with s3.open_output_stream(f"data/{key}") as out:
                pv.write_csv(table, out)


def test_parquet_and_csv_on_a_real_s3_server(s3_endpoint, tmp_path):
    tables = {f"logs/day=2026-12-0{d}/part-0.parquet": day_table(d) for d in (1, 2)}
    tables |= {"logs/_SUCCESS": pa.table({"x": [1]}), "csv/a.csv": day_table(3), "csv/b.csv": day_table(4)}
    upload(s3_endpoint, tables)
    source = FileSource(s3_uri("data/logs", s3_endpoint), ParquetFormat())
    assert [(p.path, p.row_group, p.rows) for p in source.pieces(by="row_group")] == [
        (f"data/logs/day=2026-12-0{d}/part-0.parquet", group, rows) for d in (1, 2) for group, rows in ((0, 3), (1, 2))
    ]
    assert source.pieces()[0].mtime_ns > 0 and source.pieces()[0].size > 0
    assert values(source, "day") == ["2026-12-01"] * 5 + ["2026-12-02"] * 5
    reader = pickle.loads(pickle.dumps(source.reader))
    assert pa.Table.from_batches(list(reader(source.pieces(by="row_group")[3], ["a"])))["a"].to_pylist() == [203, 204]

    data = ParquetData(DAY_FEATURES, s3_uri("data/logs/day=*/*.parquet", s3_endpoint), s3_uri("data/logs", s3_endpoint))
    data.setup()
    assert data.train.dense[:, 0].tolist() == day_values(1, 2)
    assert data.train.source == f"{s3_uri('data/logs/day=*/*.parquet', s3_endpoint)} (2 files)"
    csv = CSVData(FEATURES, s3_uri("data/csv/*.csv", s3_endpoint), s3_uri("data/csv/b.csv", s3_endpoint))
    csv.setup()
    assert csv.train.dense[:, 0].tolist() == day_values(3, 4) and csv.eval.dense[:, 0].tolist() == day_values(4)


def test_bad_s3_paths_are_one_line(s3_endpoint, monkeypatch):
    upload(s3_endpoint, {"bad/x.parquet": day_table(1)})
    s3 = pafs.S3FileSystem(endpoint_override=s3_endpoint, scheme="http")
    with s3.open_output_stream("data/bad/y.parquet") as out:
        out.write(b"PAR1 not really")
    assert message(FileSource(s3_uri("nobucket/x.parquet", s3_endpoint), ParquetFormat()).pieces) == (
        "s3://nobucket/x.parquet: file not found"
    )
    assert message(FileSource(s3_uri("data/bad/*.csv", s3_endpoint), ParquetFormat()).pieces) == (
        "s3://data/bad/*.csv: no file matches this pattern"
    )
    text = message(FileSource(s3_uri("data/bad", s3_endpoint), ParquetFormat()).pieces)
    assert text.startswith("s3://data/bad/y.parquet: not a readable Parquet file (")
    from moto import settings

    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # the server checks credentials: ours are unknown
    text = message(FileSource(s3_uri("data/bad", s3_endpoint), ParquetFormat()).pieces)
    assert text.startswith("s3://data/bad: cannot list the files: ") and "AWS Error ACCESS_DENIED" in text


def test_an_unreachable_s3_endpoint_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    data = ParquetData(FEATURES, s3_uri("data/logs", f"127.0.0.1:{closed}"), "eval.parquet", io_timeout=2)
    text = message(data.check_files)
    assert text.startswith("s3://data/logs: cannot list the files: ")
    assert "Could not connect to server" in text and text.endswith("(data.io_timeout=2 s)")


def test_the_s3_timeouts_and_the_uri_options_reach_the_filesystem():
    filesystem, path = open_filesystem("s3://bucket/key", "endpoint_override=127.0.0.1:9&scheme=http", io_timeout=6)
    options = filesystem.__reduce__()[1][0]  # how pyarrow pickles it: its options
    assert (path, options["connect_timeout"], options["request_timeout"]) == ("bucket/key", 2.0, 6.0)
    assert options["endpoint_override"] == "127.0.0.1:9" and options["scheme"] == "http"


@pytest.mark.slow
def test_easyrec_train_reads_s3_with_the_endpoint_from_the_environment(
    s3_endpoint, easyrec_main, tmp_path, monkeypatch
):
    from easyrec.data import generate_clicks

    table, _ = generate_clicks(1200, seed=1)
    upload(
        s3_endpoint,
        {"clicks/train/part-0.parquet": table.slice(0, 500), "clicks/train/part-1.parquet": table.slice(500, 500)},
    )
    upload(s3_endpoint, {"clicks/eval/part-0.parquet": table.slice(1000)})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3_endpoint}")  # what a user of MinIO or another S3 sets
    paths = ["data=parquet", "data.train_path=s3://data/clicks/train", "data.eval_path=s3://data/clicks/eval/*.parquet"]
    tiny = [
        "data.batch_size=128",
        "model.hidden_units=[8]",
        "model.embedding_dim=4",
        "logger=none",
        "trainer.max_steps=3",
    ]
    code, _, err = easyrec_main("train", *paths, *tiny, "data.cache_dir=null")
    assert code == 0, err
    [metrics] = tmp_path.rglob("metrics.json")  # the run trained to the end
    assert '"step": 3' in metrics.read_text()
    train, eval_ = "s3://data/clicks/train (2 files)", "s3://data/clicks/eval/*.parquet (1 file)"
    assert f"data: 1,000 train rows ({train}), 200 eval rows ({eval_})" in err
