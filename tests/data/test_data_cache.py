"""The on-disk cache of encoded splits (easyrec.data.cache): hits equal fresh encodings, any change of the files,
reader options or features misses, damaged entries and unwritable directories never stop a run."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hydra.utils import instantiate

from easyrec.config import validate
from easyrec.data import CSVData, FeatureSpec, ParquetData, TabularData, cache
from easyrec.data.cache import cache_key
from easyrec.errors import DataError

FEATURES = {
    "dense": [{"names": ["a"], "transform": "log1p", "standardize": True}, {"names": ["b"]}],
    "categorical": [{"names": ["c"]}, {"names": ["h"], "encoding": "hash", "num_buckets": 16}],
    "weight": "w",
    "session": "s",
}
FIELDS = ("dense", "sparse", "labels", "weights", "sessions")


def table(seed: int, rows: int = 40) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "label": rng.integers(0, 2, rows).astype(np.float64),
            "a": rng.integers(0, 100, rows).astype(np.float64),
            "b": rng.normal(size=rows).round(3),
            "c": [f"c{v}" for v in rng.integers(0, 8, rows)],
            "h": [f"h{v}" for v in rng.integers(0, 30, rows)],
            "w": rng.choice([0.5, 1.0, 2.0], rows),
            "s": np.arange(rows) // 4,
        }
    )


def write_csv(t: pa.Table, path: Path) -> None:
    lines = [",".join(t.column_names)] + [",".join(str(v) for v in row.values()) for row in t.to_pylist()]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    write_csv(table(0), tmp_path / "train.csv")
    write_csv(table(1, rows=12), tmp_path / "eval.csv")
    return tmp_path


def csv_data(directory: Path, features: dict = FEATURES, cache_dir: Path | None = None, **kwargs) -> CSVData:
    """CSVData on ``directory``'s train.csv and eval.csv, cached in ``directory/cache`` unless told otherwise."""
    cache_dir = cache_dir if cache_dir is not None else directory / "cache"
    train, eval_ = str(directory / "train.csv"), str(directory / "eval.csv")
    return CSVData(features, train, eval_, cache_dir=str(cache_dir), **kwargs)


def entries(cache_dir: Path) -> list[Path]:
    """Every name in the cache directory, hidden ones (staging, dropped entries) included."""
    return sorted(cache_dir.iterdir()) if cache_dir.exists() else []


def assert_same(a: TabularData, b: TabularData) -> None:
    for x, y in ((a.train, b.train), (a.eval, b.eval)):
        for name in FIELDS:
            s, t = getattr(x, name), getattr(y, name)
            assert (s is None) == (t is None), name
            assert s is None or (s.dtype == t.dtype and torch.equal(s, t)), name
        assert x.source == y.source
    assert a.encoder.state_dict() == b.encoder.state_dict()
    assert a.input_spec == b.input_spec


def without_cache(data: TabularData) -> TabularData:
    return type(data)(data.spec, data.train_path, data.eval_path, cache_dir=None, **data.reader_options)


def fresh(data: TabularData) -> TabularData:
    """What ``data`` encodes without a cache."""
    copy = without_cache(data)
    copy.setup()
    return copy


def no_read(*args):
    raise AssertionError("read() called on a cache hit")


def test_a_second_setup_is_a_hit_with_equal_tensors_and_encoder_state(files, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="easyrec.data")
    first = csv_data(files)
    first.setup()
    (entry,) = entries(files / "cache")
    assert f"data: encoded splits cached in {entry}" in caplog.text
    caplog.clear()
    second = csv_data(files)
    monkeypatch.setattr(second, "read", no_read)
    second.setup()
    assert f"data: encoded splits from cache {entry}" in caplog.text
    assert "data: 40 train rows" in caplog.text
    assert_same(first, second)
    assert_same(fresh(first), second)
    assert entries(files / "cache") == [entry]
    second.train.dense[0, 0] = 123.0  # copy-on-write: the entry keeps its data
    third = csv_data(files)
    third.setup()
    assert_same(first, third)


def test_a_rewritten_train_file_is_encoded_again(files, caplog):
    caplog.set_level(logging.INFO, logger="easyrec.data")
    csv_data(files).setup()
    changed = table(0).to_pylist()
    changed[3]["c"] = "new"
    write_csv(pa.Table.from_pylist(changed), files / "train.csv")
    caplog.clear()
    data = csv_data(files)
    data.setup()
    assert "cached in" in caplog.text and "from cache" not in caplog.text
    assert "new" in data.encoder.vocabularies["c"].to_pylist()
    assert_same(fresh(data), data)
    assert len(entries(files / "cache")) == 2


def test_a_rewrite_of_the_same_size_with_the_old_mtime_is_encoded_again(files):
    csv_data(files).setup()
    path = files / "eval.csv"
    before = path.stat()
    header, first, *rest = path.read_text().splitlines()
    path.write_text("\n".join([header, first.replace(",c", ",d", 1), *rest]) + "\n")  # one id changed, same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    data = csv_data(files)
    data.setup()
    assert_same(fresh(data), data)
    assert len(entries(files / "cache")) == 2


@pytest.mark.parametrize(
    "change",
    [
        {"categorical": [{"names": ["c"], "min_count": 3}, FEATURES["categorical"][1]]},
        {"dense": [{"names": ["a"], "standardize": True}, {"names": ["b"]}]},
        {"dense": [{"names": ["a"], "transform": "log1p"}, {"names": ["b"], "fill_value": 1.0}]},
        {"categorical": [{"names": ["c", "h"]}]},
        {"weight": None},
    ],
    ids=["min_count", "transform", "standardize_fill_value", "encoding", "weight"],
)
def test_a_changed_feature_config_is_encoded_again(files, change):
    csv_data(files).setup()
    data = csv_data(files, features={**FEATURES, **change})
    calls = []
    data.read = lambda path, read=data.read: calls.append(path) or read(path)
    data.setup()
    assert len(calls) == 2
    assert_same(fresh(data), data)
    assert len(entries(files / "cache")) == 2


def test_the_reader_options_are_the_arguments_a_subclass_adds(files):
    assert csv_data(files, delimiter=";").reader_options == {"delimiter": ";", "header": True, "columns": None}
    assert ParquetData(FEATURES, "t.parquet", "e.parquet").reader_options == {}


def test_other_reader_options_are_another_entry(tmp_path):
    rows = "0\t1\t5\tx\n1\t2\t6\ty\n0\t3\t7\tx\n"
    for name in ("train.csv", "eval.csv"):
        (tmp_path / name).write_text(rows)
    features = {"dense": [{"names": ["a"]}, {"names": ["b"]}], "categorical": [{"names": ["c"]}]}
    options = {"delimiter": "\t", "header": False}
    first = csv_data(tmp_path, features, columns=["label", "a", "b", "c"], **options)
    first.setup()
    swapped = csv_data(tmp_path, features, columns=["label", "b", "a", "c"], **options)
    swapped.setup()
    assert first.train.dense[:, 0].tolist() == [1, 2, 3] and swapped.train.dense[:, 0].tolist() == [5, 6, 7]
    assert len(entries(tmp_path / "cache")) == 2


def test_parquet_hit_with_integer_ids_and_several_labels(tmp_path, monkeypatch):
    features = {
        "dense": [{"names": ["a"], "standardize": True}],
        "categorical": [{"names": ["c"], "min_count": 2}, {"names": ["h"], "encoding": "hash", "num_buckets": 8}],
        "label": ["label", "conversion"],
    }
    for name, seed in (("train", 0), ("eval", 1)):
        t = table(seed)
        t = t.set_column(3, "c", pa.array(np.random.default_rng(seed).integers(0, 9, len(t))))
        pq.write_table(t.append_column("conversion", t["label"]), tmp_path / f"{name}.parquet")

    def parquet_data() -> ParquetData:
        train, eval_ = str(tmp_path / "train.parquet"), str(tmp_path / "eval.parquet")
        return ParquetData(features, train, eval_, cache_dir=str(tmp_path / "cache"))

    first = parquet_data()
    first.setup()
    second = parquet_data()
    monkeypatch.setattr(second, "read", no_read)
    second.setup()
    assert second.encoder.vocabularies["c"].type == pa.int64() and second.train.labels.shape == (40, 2)
    assert_same(first, second)


def damage_truncate(entry: Path) -> None:
    path = entry / "train-sparse.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_shape(entry: Path) -> None:
    np.save(entry / "eval-dense.npy", np.zeros((12, 3), np.float32))


def damage_dtype(entry: Path) -> None:
    np.save(entry / "train-sessions.npy", np.zeros(40, np.int32))


def damage_vocabulary(entry: Path) -> None:
    (entry / "vocabulary-0.arrow").unlink()


def damage_manifest(entry: Path) -> None:
    (entry / "manifest.json").write_text('{"format": 1, "ke')


@pytest.mark.parametrize(
    "damage,problem",
    [
        (damage_truncate, "mmap length is greater than file size"),
        (damage_shape, "eval-dense.npy holds float32 (12, 3), expected float32 (12, 2)"),
        (damage_dtype, "train-sessions.npy holds int32 (40,), expected int64 (40,)"),
        (damage_vocabulary, "vocabulary-0.arrow"),
        (damage_manifest, "Unterminated string"),
    ],
    ids=["truncated", "shape", "dtype", "missing_file", "manifest"],
)
def test_a_damaged_entry_is_warned_about_encoded_again_and_replaced(files, caplog, damage, problem):
    first = csv_data(files)
    first.setup()
    (entry,) = entries(files / "cache")
    damage(entry)
    caplog.set_level(logging.INFO, logger="easyrec.data")
    second = csv_data(files)
    second.setup()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"data: cache entry {entry} is unreadable (")
    assert problem in warnings[0]
    assert_same(first, second)
    assert entries(files / "cache") == [entry]
    caplog.clear()
    third = csv_data(files)
    third.read = no_read
    third.setup()
    assert "from cache" in caplog.text and "WARNING" not in caplog.text
    assert_same(first, third)


def test_an_unwritable_cache_dir_is_warned_about_and_the_data_is_encoded(files, caplog):
    (files / "file").write_text("")
    caplog.set_level(logging.INFO, logger="easyrec.data")
    data = csv_data(files, cache_dir=files / "file" / "cache")
    data.setup()
    assert f"data.cache_dir={files / 'file' / 'cache'}: not writable (" in caplog.text
    assert_same(fresh(data), data)


def test_concurrent_setups_end_with_equal_data_and_one_entry(files, monkeypatch):
    """Both jobs finish their staging directories before either renames it: one rename loses and is dropped."""
    ready = threading.Barrier(2, timeout=60)
    write_entry = cache.write_entry

    def write_then_wait(*args):
        write_entry(*args)
        ready.wait()

    monkeypatch.setattr(cache, "write_entry", write_then_wait)
    results, errors = [], []

    def job() -> None:
        try:
            data = csv_data(files)
            data.setup()
            results.append(data)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(results) == 2
    assert_same(results[0], results[1])
    assert len(entries(files / "cache")) == 1  # no staging directory left
    monkeypatch.setattr(cache, "write_entry", write_entry)
    hit = csv_data(files)
    hit.read = no_read
    hit.setup()
    assert_same(results[0], hit)


def test_bad_data_gives_the_same_error_and_is_never_cached(files):
    (files / "train.csv").write_text("label,a,b,c,h,w,s\n0,1,2,x,y,1,0\n1,oops,2,x,y,1,0\n")
    for data in (csv_data(files), without_cache(csv_data(files))):
        with pytest.raises(DataError) as info:
            data.setup()
        assert str(info.value) == f"{files / 'train.csv'}: column 'a', row 2: 'oops' is not a number"
    (files / "eval.csv").unlink()
    with pytest.raises(DataError, match="row 2: 'oops' is not a number"):  # the train file's error comes first
        csv_data(files).setup()
    assert entries(files / "cache") == []


def test_fine_tuning_bypasses_the_cache(files):
    first = csv_data(files)
    first.setup()
    (entry,) = entries(files / "cache")
    state = first.encoder.state_dict()
    state["vocabularies"]["c"] = ["c9"]  # an earlier run's vocabulary (an id this data lacks: it keeps its row), grown
    tuned = csv_data(files)
    tuned.setup(keep_encoding=state)
    vocabulary = tuned.encoder.state_dict()["vocabularies"]["c"]
    assert vocabulary[0] == "c9" and sorted(vocabulary[1:]) == sorted(first.encoder.state_dict()["vocabularies"]["c"])
    assert entries(files / "cache") == [entry]


def test_the_key_covers_pieces_reader_spec_and_code(files):
    spec = FeatureSpec.from_config(FEATURES)
    data = csv_data(files)
    paths = data.train_source.pieces() + data.eval_source.pieces()
    assert [piece.path for piece in paths] == [str(files / "train.csv"), str(files / "eval.csv")]
    code = [files / "code.py"]
    code[0].write_text("x = 1\n")
    key = cache_key(paths, {"delimiter": ","}, spec, code)
    assert cache_key(paths, {"delimiter": ","}, FeatureSpec.from_config(FEATURES), code) == key
    assert cache_key(paths[::-1], {"delimiter": ","}, spec, code) != key
    assert cache_key(paths, {"delimiter": ";"}, spec, code) != key
    assert cache_key(paths, {"delimiter": ","}, FeatureSpec.from_config({**FEATURES, "session": None}), code) != key
    row_group = [dataclasses.replace(paths[0], row_group=0), paths[1]]  # a Parquet row group is another piece
    assert cache_key(row_group, {"delimiter": ","}, spec, code) != key
    code[0].write_text("x = 2\n")
    assert cache_key(paths, {"delimiter": ","}, spec, code) != key


@pytest.mark.parametrize("data", ["csv", "parquet"])
def test_the_configs_cache_under_xdg_cache_home_and_null_turns_it_off(
    compose_train, files, tmp_path, data, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if data == "parquet":
        for name in ("train", "eval"):
            pq.write_table(table(0), files / f"{name}.parquet")
    paths = [f"data.train_path={files / f'train.{data}'}", f"data.eval_path={files / f'eval.{data}'}"]
    features = ["data.features.weight=w", "data.features.session=s"]
    features += ["data.features.dense=[{names:[a]},{names:[b]}]", "data.features.categorical=[{names:[c,h]}]"]
    cfg = compose_train(f"data={data}", *paths, *features)
    validate(cfg)
    assert cfg.data.cache_dir == str(tmp_path / "xdg" / "easyrec" / "data")
    instantiate(cfg.data, _convert_="all").setup()
    assert len(entries(tmp_path / "xdg" / "easyrec" / "data")) == 1
    cfg = compose_train(f"data={data}", *paths, *features, "data.cache_dir=null")
    validate(cfg)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "off"))
    instantiate(cfg.data, _convert_="all").setup()
    assert not (tmp_path / "off").exists()
