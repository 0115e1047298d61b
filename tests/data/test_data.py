"""The data layer: feature encoding, batches, CSV / Parquet sources, data errors and synthetic data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import roc_auc_score

from easyrec.data import (
    Batch,
    CategoricalFeatures,
    CSVData,
    DenseFeatures,
    EncodedSplit,
    FeatureEncoder,
    FeatureSpec,
    InputSpec,
    ParquetData,
    SyntheticCTRData,
    TabularData,
    generate_clicks,
)
from easyrec.data.hashing import hash_buckets
from easyrec.errors import DataError

# ---------------------------------------------------------------------------------------------- helpers


class InMemoryData(TabularData):
    """A TabularData over two given tables."""

    def __init__(self, features, train: pa.Table, eval: pa.Table, **kwargs) -> None:
        super().__init__(features, **kwargs)
        self.tables = (train, eval)

    def read_splits(self):
        return (self.tables[0], "train-table"), (self.tables[1], "eval-table")


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def encode(spec: FeatureSpec, train: pa.Table, other: pa.Table | None = None) -> EncodedSplit:
    encoder = FeatureEncoder(spec).fit(train, source="train")
    return encoder.encode(train if other is None else other, source="other")


def indexed_table(n: int, with_weight: bool = False) -> pa.Table:
    """``n`` rows whose dense column ``i`` is the row number (and ``w`` = 2 * i + 1)."""
    columns = {
        "i": pa.array(np.arange(n, dtype=np.float64)),
        "c": pa.array([f"id{k % 5}" for k in range(n)]),
        "label": pa.array((np.arange(n) % 2).astype(np.float64)),
    }
    if with_weight:
        columns["w"] = pa.array(2.0 * np.arange(n) + 1.0)
    return pa.table(columns)


INDEXED = FeatureSpec(dense=[DenseFeatures(["i"])], categorical=[CategoricalFeatures(["c"])])
CSV_FEATURES = {"dense": [{"names": ["a"]}], "categorical": [{"names": ["c"]}]}


# ---------------------------------------------------------------------------------------------- FeatureSpec


def test_feature_spec_from_dict_and_column_order():
    spec = FeatureSpec.from_config(
        {
            "dense": [{"names": ["d1", "d2"], "transform": "log1p"}, {"names": ["d3"], "standardize": True}],
            "categorical": [{"names": ["c1"]}, {"names": ["c2"], "encoding": "hash", "num_buckets": 8}],
            "label": "y",
            "weight": "w",
        }
    )
    assert spec.dense_names == ["d1", "d2", "d3"]
    assert spec.categorical_names == ["c1", "c2"]
    assert spec.columns == ["d1", "d2", "d3", "c1", "c2", "y", "w"]
    assert spec.dense[0].transform == "log1p" and spec.dense[1].standardize
    assert spec.categorical[1].num_buckets == 8
    assert FeatureSpec.from_config(spec) is spec


def test_hash_encoding_needs_num_buckets():
    with pytest.raises(ValueError, match="num_buckets"):
        CategoricalFeatures(["c"], encoding="hash")


# ---------------------------------------------------------------------------------------------- vocab encoding


def test_vocab_is_built_from_the_training_split_only():
    spec = FeatureSpec(categorical=[CategoricalFeatures(["c"])])
    train = pa.table({"c": ["b", "a", "b", "c", "a", "b", None], "label": [0.0] * 7})
    eval_ = pa.table({"c": ["a", "b", "c", "z", None, "zz"], "label": [1.0] * 6})
    encoder = FeatureEncoder(spec).fit(train, source="train")
    # counts: b=3, a=2, c=1 -> rows 1, 2, 3; nulls are not in the vocabulary
    assert encoder.vocabularies["c"].to_pylist() == ["b", "a", "c"]
    assert encoder.encode(train, "train").sparse[:, 0].tolist() == [1, 2, 1, 3, 2, 1, 0]
    # ids never seen in train ("z", "zz") and empty cells take row 0
    assert encoder.encode(eval_, "eval").sparse[:, 0].tolist() == [2, 1, 3, 0, 0, 0]
    assert encoder.input_spec.cardinalities == (4,)


def test_vocab_ties_are_ordered_by_value():
    spec = FeatureSpec(categorical=[CategoricalFeatures(["c"])])
    train = pa.table({"c": ["y", "x", "z", "z", "x", "y", "w"], "label": [0.0] * 7})
    encoder = FeatureEncoder(spec).fit(train, "train")
    assert encoder.vocabularies["c"].to_pylist() == ["x", "y", "z", "w"]
    assert encoder.encode(train, "train").sparse[:, 0].tolist() == [2, 1, 3, 3, 1, 2, 4]


def test_vocab_of_integer_ids_orders_ties_numerically():
    spec = FeatureSpec(categorical=[CategoricalFeatures(["c"])])
    train = pa.table({"c": pa.array([10, 9, 100, 9, 10, 100, 7, 7, 7], pa.int32()), "label": [0.0] * 9})
    encoder = FeatureEncoder(spec).fit(train, "train")
    assert encoder.vocabularies["c"].to_pylist() == [7, 9, 10, 100]
    # an eval split of another integer width is looked up by value
    eval_ = pa.table({"c": pa.array([100, 5, None, 7], pa.int64()), "label": [0.0] * 4})
    assert encoder.encode(eval_, "eval").sparse[:, 0].tolist() == [4, 0, 0, 1]


@pytest.mark.parametrize(
    "min_count,max_size,expected_vocab",
    [
        (1, None, ["a", "b", "c", "d", "e"]),
        (2, None, ["a", "b", "c", "d"]),
        (4, None, ["a", "b"]),
        (1, 3, ["a", "b", "c"]),
        (3, 2, ["a", "b"]),
        (3, 10, ["a", "b", "c"]),
        (6, None, []),
    ],
)
def test_vocab_min_count_and_max_vocab_size(min_count, max_size, expected_vocab):
    ids = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2 + ["e"]
    train = pa.table({"c": ids, "label": [0.0] * len(ids)})
    spec = FeatureSpec(categorical=[CategoricalFeatures(["c"], min_count=min_count, max_vocab_size=max_size)])
    encoder = FeatureEncoder(spec).fit(train, "train")
    assert encoder.vocabularies["c"].to_pylist() == expected_vocab
    assert encoder.input_spec.cardinalities == (len(expected_vocab) + 1,)
    probe = pa.table({"c": ["a", "b", "c", "d", "e"], "label": [0.0] * 5})
    expected_rows = [expected_vocab.index(v) + 1 if v in expected_vocab else 0 for v in "abcde"]
    assert encoder.encode(probe, "probe").sparse[:, 0].tolist() == expected_rows


def test_vocab_column_of_another_type_than_in_training_is_a_data_error():
    spec = FeatureSpec(categorical=[CategoricalFeatures(["c"])])
    encoder = FeatureEncoder(spec).fit(pa.table({"c": [1, 2], "label": [0.0, 1.0]}), "train.parquet")
    with pytest.raises(DataError, match=r"eval\.parquet: column 'c' has type string, the training split had int64"):
        encoder.encode(pa.table({"c": ["x", "y"], "label": [0.0, 1.0]}), "eval.parquet")


# ---------------------------------------------------------------------------------------------- hash encoding


def test_hash_encoding_of_strings_is_deterministic_in_range_and_nulls_go_to_zero():
    spec = FeatureSpec(categorical=[CategoricalFeatures(["c"], encoding="hash", num_buckets=97)])
    ids = [f"user{k % 40}" for k in range(200)] + [None] * 5
    table = pa.table({"c": ids, "label": [0.0] * len(ids)})
    first = encode(spec, table).sparse[:, 0]
    again = FeatureEncoder(spec).fit(table, "t").encode(table, "t").sparse[:, 0]
    assert torch.equal(first, again)
    assert first.dtype == torch.int32
    assert int(first.min()) >= 0 and int(first.max()) < 97
    assert first[-5:].tolist() == [0] * 5
    # the same id lands in the same bucket wherever and whenever it appears
    by_id: dict[str, set[int]] = {}
    for value, bucket in zip(ids, first.tolist(), strict=True):
        by_id.setdefault(value, set()).add(bucket)
    assert all(len(buckets) == 1 for buckets in by_id.values())
    other = pa.table({"c": ["user7", "user3"], "label": [1.0, 1.0]})
    encoder = FeatureEncoder(spec).fit(table, "t")
    assert encoder.encode(other, "o").sparse[:, 0].tolist() == [by_id["user7"].pop(), by_id["user3"].pop()]
    # hashing learns nothing from the training split
    assert encoder.vocabularies == {}
    assert len(set(first[:200].tolist())) > 25


def test_hash_encoding_of_integer_ids():
    spec = FeatureSpec(categorical=[CategoricalFeatures(["c"], encoding="hash", num_buckets=1000)])
    table = pa.table({"c": pa.array([3, None, 3, 999_999_999, 42], pa.int64()), "label": [0.0] * 5})
    buckets = encode(spec, table).sparse[:, 0].tolist()
    assert buckets == hash_buckets(pa.array([3, None, 3, 999_999_999, 42]), 1000).tolist()
    assert buckets[0] == buckets[2] and buckets[1] == 0
    assert all(0 <= b < 1000 for b in buckets)
    assert len({buckets[0], buckets[3], buckets[4]}) == 3


# ---------------------------------------------------------------------------------------------- dense features


def test_dense_log1p_is_signed():
    spec = FeatureSpec(dense=[DenseFeatures(["x"], transform="log1p")])
    values = [-3.0, -0.5, 0.0, 2.5, 100.0, 1e6]
    dense = encode(spec, pa.table({"x": values, "label": [0.0] * len(values)})).dense
    expected = [math.copysign(math.log1p(abs(v)), v) for v in values]
    assert dense.dtype == torch.float32 and dense.shape == (len(values), 1)
    np.testing.assert_allclose(dense[:, 0].numpy(), expected, rtol=1e-6)


def test_dense_none_transform_keeps_values():
    spec = FeatureSpec(dense=[DenseFeatures(["x"])])
    dense = encode(spec, pa.table({"x": pa.array([-2, 0, 7], pa.int64()), "label": [0.0] * 3})).dense
    assert dense[:, 0].tolist() == [-2.0, 0.0, 7.0]


def test_standardize_uses_the_training_mean_and_std_only():
    spec = FeatureSpec(dense=[DenseFeatures(["x"], standardize=True), DenseFeatures(["y"], transform="log1p")])
    train = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "y": [0.0, 1.0, 2.0, 3.0], "label": [0.0, 1.0, 0.0, 1.0]})
    eval_ = pa.table({"x": [0.0, 10.0, 2.5], "y": [9.0, 0.0, -1.0], "label": [1.0, 1.0, 0.0]})
    encoder = FeatureEncoder(spec).fit(train, "train")
    mean, std = 2.5, math.sqrt(1.25)  # population std of 1, 2, 3, 4
    assert encoder.mean == {"x": pytest.approx(mean)} and encoder.std == {"x": pytest.approx(std)}
    dense = encoder.encode(eval_, "eval").dense
    np.testing.assert_allclose(dense[:, 0].numpy(), [(0 - mean) / std, (10 - mean) / std, 0.0], atol=1e-6)
    np.testing.assert_allclose(dense[:, 1].numpy(), [math.log1p(9), 0.0, -math.log1p(1)], rtol=1e-6)
    # refitting on another split moves the statistics, so they really come from the fitted table
    assert FeatureEncoder(spec).fit(eval_, "eval").mean["x"] == pytest.approx(12.5 / 3)


def test_standardize_after_log1p_uses_the_transformed_training_values():
    spec = FeatureSpec(dense=[DenseFeatures(["x"], transform="log1p", standardize=True)])
    train_values = np.array([0.0, 1.0, 10.0, 100.0, 1000.0])
    train = pa.table({"x": train_values, "label": [0.0] * 5})
    eval_ = pa.table({"x": [5.0, -5.0], "label": [0.0, 1.0]})
    logs = np.log1p(train_values)
    expected = (np.array([math.log1p(5), -math.log1p(5)]) - logs.mean()) / logs.std()
    np.testing.assert_allclose(encode(spec, train, eval_).dense[:, 0].numpy(), expected, rtol=1e-5)


def test_standardize_of_a_constant_column_divides_by_one():
    spec = FeatureSpec(dense=[DenseFeatures(["x"], standardize=True)])
    train = pa.table({"x": [3.0, 3.0, 3.0], "label": [0.0] * 3})
    encoder = FeatureEncoder(spec).fit(train, "train")
    assert encoder.std["x"] == 1.0
    assert encoder.encode(pa.table({"x": [5.0], "label": [0.0]}), "e").dense[:, 0].tolist() == [2.0]


def test_fill_value_replaces_empty_and_nan_dense_cells_before_transform_and_statistics():
    spec = FeatureSpec(
        dense=[
            DenseFeatures(["x"], fill_value=-1.0),
            DenseFeatures(["y"], transform="log1p", fill_value=9.0),
            DenseFeatures(["z"], standardize=True, fill_value=4.0),
        ]
    )
    train = pa.table(
        {
            "x": [1.0, None, float("nan")],
            "y": [None, 0.0, 1.0],
            "z": [None, 0.0, 2.0],  # filled -> 4, 0, 2: mean 2, std sqrt(8/3)
            "label": [0.0, 1.0, 0.0],
        }
    )
    encoder = FeatureEncoder(spec).fit(train, "train")
    assert encoder.mean["z"] == pytest.approx(2.0) and encoder.std["z"] == pytest.approx(math.sqrt(8 / 3))
    dense = encoder.encode(train, "train").dense.numpy()
    np.testing.assert_allclose(dense[:, 0], [1.0, -1.0, -1.0])
    np.testing.assert_allclose(dense[:, 1], [math.log1p(9), 0.0, math.log1p(1)], rtol=1e-6)
    np.testing.assert_allclose(dense[:, 2], np.array([2.0, -2.0, 0.0]) / math.sqrt(8 / 3), rtol=1e-6)
    all_empty = pa.table({"x": pa.nulls(2), "y": pa.nulls(2), "z": pa.nulls(2), "label": [1.0, 0.0]})
    np.testing.assert_allclose(encoder.encode(all_empty, "e").dense[:, 0].numpy(), [-1.0, -1.0])


def test_dense_string_column_of_numbers_is_parsed():
    spec = FeatureSpec(dense=[DenseFeatures(["x"])])
    table = pa.table({"x": ["1.5", "-2", "1e3", None, ".5"], "label": ["0", "1", "1", "0", "1"]})
    split = encode(spec, table)
    assert split.dense[:, 0].tolist() == [1.5, -2.0, 1000.0, 0.0, 0.5]
    assert split.labels.tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]


# ------------------------------------------------------------------------------------- encoder outputs, spec, state


MIXED = FeatureSpec(
    dense=[DenseFeatures(["d1", "d2"], transform="log1p", standardize=True), DenseFeatures(["d3"], fill_value=7.0)],
    categorical=[
        CategoricalFeatures(["s"], min_count=2),
        CategoricalFeatures(["h"], encoding="hash", num_buckets=13),
        CategoricalFeatures(["n"], max_vocab_size=3),
    ],
)


def mixed_table(seed: int, n: int = 60) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "d1": rng.exponential(20, n),
            "d2": rng.normal(0, 3, n),
            "d3": pa.array([None if k % 7 == 0 else float(k) for k in range(n)]),
            "s": pa.array([None if k % 11 == 0 else f"s{v}" for k, v in enumerate(rng.integers(0, 12, n))]),
            "h": pa.array([f"h{v}" for v in rng.integers(0, 50, n)]),
            "n": pa.array(rng.integers(0, 6, n).astype(np.int32)),
            "label": (rng.random(n) < 0.3).astype(np.float64),
        }
    )


def test_encoded_split_shapes_and_dtypes():
    train, eval_ = mixed_table(0), mixed_table(1, n=25)
    split = FeatureEncoder(MIXED).fit(train, "train").encode(eval_, "eval.csv")
    assert split.dense.shape == (25, 3) and split.dense.dtype == torch.float32
    assert split.sparse.shape == (25, 3) and split.sparse.dtype == torch.int32
    assert split.labels.shape == (25,) and split.labels.dtype == torch.float32
    assert split.labels.tolist() == eval_["label"].to_pylist()
    assert split.weights is None and split.source == "eval.csv" and len(split) == 25


def test_input_spec_cardinalities():
    encoder = FeatureEncoder(MIXED).fit(mixed_table(0), "train")
    spec = encoder.input_spec
    assert isinstance(spec, InputSpec)
    assert spec.dense_names == ("d1", "d2", "d3") and spec.num_dense == 3
    assert spec.categorical_names == ("s", "h", "n") and spec.num_fields == 3
    assert spec.cardinalities == (len(encoder.vocabularies["s"]) + 1, 13, 4)
    assert 1 < len(encoder.vocabularies["s"]) <= 12
    sparse = encoder.encode(mixed_table(1), "eval").sparse
    assert (sparse.max(0).values < torch.tensor(spec.cardinalities)).all()


def test_state_dict_round_trip_gives_identical_encodings():
    train, eval_ = mixed_table(0), mixed_table(1, n=40)
    fitted = FeatureEncoder(MIXED).fit(train, "train")
    state = json.loads(json.dumps(fitted.state_dict()))  # plain types only
    assert state["spec"]["categorical"][1]["num_buckets"] == 13
    restored = FeatureEncoder(FeatureSpec.from_config(state["spec"]))
    restored.load_state_dict(state)
    for table in (train, eval_):
        a, b = fitted.encode(table, "x"), restored.encode(table, "x")
        assert torch.equal(a.dense, b.dense) and torch.equal(a.sparse, b.sparse) and torch.equal(a.labels, b.labels)
    assert restored.input_spec == fitted.input_spec


def test_state_dict_round_trip_of_an_empty_vocabulary():
    spec = FeatureSpec(categorical=[CategoricalFeatures(["c"], min_count=10), CategoricalFeatures(["i"], min_count=10)])
    table = pa.table({"c": ["a", "b", "a"], "i": pa.array([1, 2, 1], pa.int32()), "label": [0.0, 1.0, 0.0]})
    fitted = FeatureEncoder(spec).fit(table, "train")
    restored = FeatureEncoder(spec)
    restored.load_state_dict(json.loads(json.dumps(fitted.state_dict())))
    assert restored.encode(table, "t").sparse.tolist() == fitted.encode(table, "t").sparse.tolist() == [[0, 0]] * 3
    assert restored.input_spec.cardinalities == (1, 1)


def test_encode_before_fit_is_refused():
    with pytest.raises(RuntimeError, match="before fit"):
        FeatureEncoder(INDEXED).encode(indexed_table(3), "t")


def test_encoder_reports_missing_columns_and_empty_tables():
    encoder = FeatureEncoder(INDEXED)
    with pytest.raises(DataError, match=r"^train\.csv: column 'c', 'label' not found; the columns are: i, x$"):
        encoder.fit(pa.table({"i": [1.0], "x": [2.0]}), "train.csv")
    with pytest.raises(DataError, match=r"^train\.csv: no data rows$"):
        encoder.fit(indexed_table(3).slice(0, 0), "train.csv")


def test_empty_label_cell_in_a_table_is_a_data_error():
    table = pa.table({"i": [1.0, 2.0, 3.0], "c": ["a", "b", "c"], "label": [0.0, 1.0, None]})
    encoder = FeatureEncoder(INDEXED).fit(indexed_table(3), "train.parquet")
    with pytest.raises(DataError, match=r"^eval\.parquet: column 'label', row 3: empty value$"):
        encoder.encode(table, "eval.parquet")


# ---------------------------------------------------------------------------------------------- batches


def test_encoded_split_batches_in_order_with_a_smaller_last_batch():
    n = 10
    split = EncodedSplit(
        dense=torch.arange(n, dtype=torch.float32).unsqueeze(1),
        sparse=torch.arange(n, dtype=torch.int32).unsqueeze(1),
        labels=torch.arange(n, dtype=torch.float32),
        weights=None,
        source="s",
    )
    batches = list(split.batches(4))
    assert split.num_batches(4) == len(batches) == 3
    assert [len(b) for b in batches] == [4, 4, 2]
    assert torch.cat([b.labels for b in batches]).tolist() == list(range(n))
    assert all(b.weights is None for b in batches)
    assert split.num_batches(5) == 2 and split.num_batches(1) == 10 and split.num_batches(100) == 1
    order = torch.tensor([9, 0, 8, 1, 7, 2, 6, 3, 5, 4])
    reordered = list(split.batches(3, order))
    assert [len(b) for b in reordered] == [3, 3, 3, 1]
    assert torch.cat([b.sparse[:, 0] for b in reordered]).tolist() == order.tolist()
    assert torch.cat([b.dense[:, 0] for b in reordered]).tolist() == order.float().tolist()


def test_batch_to_device_keeps_every_field():
    batch = Batch(torch.ones(2, 3), torch.zeros(2, 1, dtype=torch.int32), torch.tensor([0.0, 1.0]))
    moved = batch.to(torch.device("cpu"))
    assert moved.weights is None and len(moved) == 2
    assert torch.equal(moved.dense, batch.dense) and moved.sparse.dtype == torch.int32
    weighted = Batch(batch.dense, batch.sparse, batch.labels, torch.tensor([2.0, 3.0])).to(torch.device("cpu"))
    assert weighted.weights.tolist() == [2.0, 3.0]


def test_first_bad_label():
    split = EncodedSplit(torch.zeros(4, 0), torch.zeros(4, 0), torch.tensor([0.0, 1.0, 0.5, 2.0]), None, "s")
    assert split.first_bad_label(None, (0.0, 1.0), None) == 2
    assert split.first_bad_label(None, (0.0, 1.0, 0.5), None) == 3
    assert split.first_bad_label(None, (0.0, 0.5, 1.0, 2.0), None) is None
    assert split.first_bad_label(None, None, (0.0, 1.0)) == 3
    assert split.first_bad_label(None, None, (0.5, 2.0)) == 0
    several = EncodedSplit(
        torch.zeros(3, 0), torch.zeros(3, 0), torch.tensor([[0.0, 5.0], [1.0, -1.0], [1, 0]]), None, "s"
    )
    assert several.first_bad_label(0, (0.0, 1.0), None) is None
    assert several.first_bad_label(1, None, (0.0, float("inf"))) == 1


def epoch_rows(data: TabularData, epoch: int) -> list[list[int]]:
    return [batch.dense[:, 0].long().tolist() for batch in data.train_batches(epoch)]


def test_train_batches_cover_every_row_once_per_epoch():
    data = InMemoryData(INDEXED, indexed_table(103), indexed_table(20), batch_size=10, seed=3)
    data.setup()
    assert data.num_train_batches() == 11
    for epoch in range(3):
        batches = list(data.train_batches(epoch))
        assert [len(b) for b in batches] == [10] * 10 + [3]
        rows = [r for batch in batches for r in batch.dense[:, 0].long().tolist()]
        assert sorted(rows) == list(range(103))
        for batch in batches:  # the fields of a row stay together
            rows = batch.dense[:, 0].long()
            assert torch.equal(batch.labels, (rows % 2).float())
            assert torch.equal(batch.sparse[:, 0], data.train.sparse[rows, 0])


def test_train_batches_order_depends_on_seed_and_epoch_only():
    def make(seed: int) -> InMemoryData:
        data = InMemoryData(INDEXED, indexed_table(200), indexed_table(5), batch_size=32, seed=seed)
        data.setup()
        return data

    a, b, other_seed = make(7), make(7), make(8)
    assert epoch_rows(a, 0) == epoch_rows(b, 0) == epoch_rows(a, 0)
    assert epoch_rows(a, 4) == epoch_rows(b, 4)
    assert epoch_rows(a, 0) != epoch_rows(a, 1)
    assert epoch_rows(a, 0) != epoch_rows(other_seed, 0)
    assert epoch_rows(a, 0) != [list(range(k, min(k + 32, 200))) for k in range(0, 200, 32)]


def test_train_batches_without_shuffle_follow_the_file_order():
    data = InMemoryData(INDEXED, indexed_table(25), indexed_table(9), batch_size=10, eval_batch_size=4, shuffle=False)
    data.setup()
    expected = [list(range(0, 10)), list(range(10, 20)), list(range(20, 25))]
    assert epoch_rows(data, 0) == epoch_rows(data, 5) == expected
    eval_rows = [b.dense[:, 0].long().tolist() for b in data.eval_batches()]
    assert eval_rows == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]


def test_a_training_split_moved_to_a_device_gathers_each_step_there():
    data = InMemoryData(INDEXED, indexed_table(25), indexed_table(9), batch_size=10, seed=3)
    data.setup()
    assert data.train.nbytes == 25 * (4 + 4 + 4)  # dense float32, sparse int32, label float32 per row
    cpu_rows = epoch_rows(data, 0)
    data.train_to(torch.device("meta"))  # a device with shapes and no values stands in for a GPU here
    assert data.train.device.type == "meta" and data.train.nbytes == 25 * 12
    assert data.epoch_order(0).device.type == "meta"  # drawn on the CPU (the same rows), moved once per epoch
    steps = list(data.train_steps(0))
    assert [len(step.batches[0]) for step in steps] == [len(rows) for rows in cpu_rows] == [10, 10, 5]
    assert all(t.device.type == "meta" for step in steps for b in step.batches for t in (b.dense, b.sparse, b.labels))
    assert data.eval.device.type == "cpu"  # evaluation batches are moved one at a time


def test_weights_are_carried_through_with_their_rows():
    spec = FeatureSpec(dense=[DenseFeatures(["i"])], categorical=[CategoricalFeatures(["c"])], weight="w")
    data = InMemoryData(spec, indexed_table(50, with_weight=True), indexed_table(7, with_weight=True), batch_size=8)
    data.setup()
    assert data.train.weights.dtype == torch.float32 and data.train.weights.shape == (50,)
    seen = 0
    for batch in data.train_batches(1):
        assert torch.equal(batch.weights, 2 * batch.dense[:, 0] + 1)
        seen += len(batch)
    assert seen == 50
    eval_weights = torch.cat([b.weights for b in data.eval_batches()])
    assert eval_weights.tolist() == [2.0 * k + 1 for k in range(7)]
    # without a weight in the spec there are no weights, even if the table has the column
    plain = InMemoryData(INDEXED, indexed_table(10, with_weight=True), indexed_table(3), batch_size=4)
    plain.setup()
    assert all(b.weights is None for b in plain.train_batches(0))


def test_missing_weight_cell_is_a_data_error():
    spec = FeatureSpec(dense=[DenseFeatures(["i"])], weight="w")
    table = pa.table({"i": [1.0, 2.0], "w": [1.0, None], "label": [0.0, 1.0]})
    with pytest.raises(DataError, match=r"column 'w', row 2: empty value"):
        encode(spec, table)


def test_tabular_state_dict_is_the_encoder_state():
    data = InMemoryData(INDEXED, indexed_table(10), indexed_table(3))
    data.setup()
    assert data.state_dict()["encoder"]["vocabularies"]["c"] == ["id0", "id1", "id2", "id3", "id4"]
    assert data.eval.oracle is None  # the spec names no true probabilities


def test_check_labels_names_the_source_column_and_row():
    eval_ = pa.table({"i": [0.0, 1.0, 2.0, 3.0], "c": ["a"] * 4, "label": [0.0, 1.0, 3.0, -1.0]})
    data = InMemoryData(INDEXED, indexed_table(6), eval_)
    data.setup()
    data.check_labels("nothing", (0.0, 1.0, 3.0, -1.0))
    with pytest.raises(DataError) as info:
        data.check_labels("loss X", (0.0, 1.0))
    assert str(info.value) == "eval-table: column 'label', row 3: label 3 is not one of {0, 1} (required by loss X)"


# ---------------------------------------------------------------------------------------------- CSV


def test_csv_with_header(tmp_path):
    train = write(tmp_path / "train.csv", "label,a,extra,c\n0,1.5,zz,x\n1,,zz,y\n0,-2,zz,x\n1,4e1,zz,\n")
    eval_ = write(tmp_path / "eval.csv", "label,a,extra,c\n1,3,q,y\n0,0,q,w\n")
    data = CSVData(CSV_FEATURES, train, eval_, batch_size=2, shuffle=False)
    data.setup()
    assert data.train.dense[:, 0].tolist() == [1.5, 0.0, -2.0, 40.0]
    assert data.train.sparse[:, 0].tolist() == [1, 2, 1, 0]  # x (2 times), y; empty cell -> 0
    assert data.train.labels.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert data.eval.sparse[:, 0].tolist() == [2, 0]
    assert data.train.source == train and data.eval.source == eval_
    assert data.input_spec.cardinalities == (3,)


def test_csv_categorical_columns_are_read_as_strings(tmp_path):
    text = "label,a,c\n0,1,007\n1,2,7\n0,3,7.0\n1,4,007\n"
    path = write(tmp_path / "t.csv", text)
    data = CSVData(CSV_FEATURES, path, path)
    data.setup()
    # "007", "7" and "7.0" stay three different ids
    assert data.encoder.vocabularies["c"].type == pa.string()
    assert data.encoder.vocabularies["c"].to_pylist() == ["007", "7", "7.0"]
    assert data.train.sparse[:, 0].tolist() == [1, 2, 3, 1]


CRITEO_COLUMNS = ["label", "I1", "I2", "C1", "C2"]
CRITEO_FEATURES = {
    "dense": [{"names": ["I1", "I2"], "transform": "log1p"}],
    "categorical": [{"names": ["C1"]}, {"names": ["C2"], "encoding": "hash", "num_buckets": 64}],
}


def test_tsv_without_header_uses_the_given_columns(tmp_path):
    rows = ["0\t1\t\t68fd1e64\t80e26c9b", "1\t\t5\t68fd1e64\t", "0\t3\t0\t05db9164\t0b153874"]
    train = write(tmp_path / "train.txt", "\n".join(rows) + "\n")
    eval_ = write(tmp_path / "eval.txt", "1\t7\t2\t05db9164\t80e26c9b\n")
    data = CSVData(CRITEO_FEATURES, train, eval_, delimiter="\t", header=False, columns=CRITEO_COLUMNS)
    data.setup()
    assert len(data.train) == 3  # the first line is data, not a header
    assert data.train.labels.tolist() == [0.0, 1.0, 0.0]
    np.testing.assert_allclose(
        data.train.dense.numpy(), np.log1p([[1.0, 0.0], [0.0, 5.0], [3.0, 0.0]]).astype(np.float32)
    )
    assert data.encoder.vocabularies["C1"].to_pylist() == ["68fd1e64", "05db9164"]
    assert data.train.sparse[:, 0].tolist() == [1, 1, 2]
    expected = hash_buckets(pa.array(["80e26c9b", None, "0b153874"]), 64).tolist()
    assert data.train.sparse[:, 1].tolist() == expected and expected[1] == 0
    assert data.eval.sparse.tolist() == [[2, expected[0]]]
    assert data.input_spec.cardinalities == (3, 64)


def test_csv_and_parquet_give_the_same_tensors(tmp_path):
    def table(seed: int, n: int) -> pa.Table:
        rng = np.random.default_rng(seed)
        return pa.table(
            {
                "label": (rng.random(n) < 0.4).astype(np.float64),
                "I1": pa.array([None if k % 9 == 0 else float(v) for k, v in enumerate(rng.integers(0, 500, n))]),
                "I2": rng.normal(0, 10, n).round(3),
                "C1": pa.array([None if k % 13 == 0 else f"a{v:x}" for k, v in enumerate(rng.integers(0, 30, n))]),
                "C2": pa.array([f"{v:08x}" for v in rng.integers(0, 1 << 20, n)]),
            }
        )

    def to_csv(t: pa.Table, path: Path) -> str:
        lines = [",".join(t.column_names)]
        for row in t.to_pylist():
            lines.append(",".join("" if v is None else repr(v) if isinstance(v, float) else v for v in row.values()))
        return write(path, "\n".join(lines) + "\n")

    features = {
        "dense": [{"names": ["I1"], "transform": "log1p", "standardize": True}, {"names": ["I2"], "fill_value": 1.0}],
        "categorical": [{"names": ["C1"], "min_count": 2}, {"names": ["C2"], "encoding": "hash", "num_buckets": 101}],
    }
    train, eval_ = table(0, 300), table(1, 80)
    pq.write_table(train, tmp_path / "train.parquet")
    pq.write_table(eval_, tmp_path / "eval.parquet")
    csv = CSVData(features, to_csv(train, tmp_path / "train.csv"), to_csv(eval_, tmp_path / "eval.csv"))
    parquet = ParquetData(features, str(tmp_path / "train.parquet"), str(tmp_path / "eval.parquet"))
    csv.setup()
    parquet.setup()
    for a, b in ((csv.train, parquet.train), (csv.eval, parquet.eval)):
        assert torch.equal(a.dense, b.dense)
        assert torch.equal(a.sparse, b.sparse)
        assert torch.equal(a.labels, b.labels)
    assert csv.input_spec == parquet.input_spec
    assert csv.input_spec.cardinalities[1] == 101 and csv.input_spec.cardinalities[0] > 10
    assert (csv.eval.sparse[:, 0] == 0).any()  # null and rare ids


def test_parquet_reads_only_the_spec_columns(tmp_path):
    table = pa.table({"a": [1.0, 2.0], "c": ["x", "y"], "label": [0.0, 1.0], "unused": [[1, 2], [3]]})
    pq.write_table(table, tmp_path / "t.parquet")
    data = ParquetData(CSV_FEATURES, str(tmp_path / "t.parquet"), str(tmp_path / "t.parquet"))
    assert data.read(tmp_path / "t.parquet").column_names == ["a", "c", "label"]
    data.setup()
    assert data.train.dense[:, 0].tolist() == [1.0, 2.0]


def test_check_files_reads_only_names_and_finds_what_setup_would(tmp_path):
    # the data rows are bad (setup refuses them): check_files reads no further than the header or schema
    good = write(tmp_path / "good.csv", "label,a,c\n0,oops,x\n")
    no_a = write(tmp_path / "no_a.csv", "label,b,c\n0,1,x\n")
    CSVData(CSV_FEATURES, good, good).check_files()
    with pytest.raises(DataError, match="column 'a', row 1: 'oops' is not a number"):
        CSVData(CSV_FEATURES, good, good).setup()
    missing = tmp_path / "missing.csv"
    cases = [
        (CSVData(CSV_FEATURES, good, str(missing)), f"{missing}: file not found"),
        (CSVData(CSV_FEATURES, good, no_a), f"{no_a}: column 'a' not found; the columns are: label, b, c"),
        (
            CSVData(CSV_FEATURES, good, good, header=False, columns=["label", "b", "c"]),
            f"{good}: column 'a' not found; the columns are: label, b, c",
        ),
    ]
    pq.write_table(pa.table({"a": [1.0], "label": [0.0]}), tmp_path / "t.parquet")
    parquet = str(tmp_path / "t.parquet")
    cases.append((ParquetData(CSV_FEATURES, parquet, parquet), f"{parquet}: column 'c' not found"))
    cases.append((ParquetData(CSV_FEATURES, good, parquet), f"{good}: not a readable Parquet file ("))
    for data, message in cases:
        with pytest.raises(DataError) as info:
            data.check_files()
        assert str(info.value).startswith(message)
    SyntheticCTRData(CSV_FEATURES, num_rows=100).check_files()  # reads no file: nothing to check


def test_csv_header_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefflabel,a,c\n0,1,x\n1,2,y\n".encode())
    data = CSVData(CSV_FEATURES, str(path), str(path))
    data.setup()
    assert data.train.labels.tolist() == [0.0, 1.0] and data.train.dense[:, 0].tolist() == [1.0, 2.0]


def test_csv_header_with_quoted_names(tmp_path):
    path = write(tmp_path / "q.csv", '"label","a","c"\n0,1,x\n')
    data = CSVData(CSV_FEATURES, path, path)
    data.setup()
    assert data.train.dense[:, 0].tolist() == [1.0]


# ---------------------------------------------------------------------------------------------- bad data


def csv_error(tmp_path: Path, train_text: str | None, eval_text: str = "label,a,c\n0,1,x\n", **kwargs) -> str:
    """The message of the DataError raised by setting up CSVData on these files (None: no train file)."""
    train = tmp_path / "train.csv"
    if train_text is not None:
        write(train, train_text)
    eval_ = write(tmp_path / "eval.csv", eval_text)
    data = CSVData(kwargs.pop("features", CSV_FEATURES), str(train), eval_, **kwargs)
    with pytest.raises(DataError) as info:
        data.setup()
    return str(info.value)


def test_missing_file(tmp_path):
    message = csv_error(tmp_path, None)
    assert message.startswith(f"{tmp_path / 'train.csv'}: file not found")


def test_a_directory_without_data_files(tmp_path):
    # a directory is read as its files (tests/data/test_sources.py); one with none to read is an error
    (tmp_path / "train.csv").mkdir()
    (tmp_path / "train.csv" / "_SUCCESS").write_text("")
    data = CSVData(CSV_FEATURES, str(tmp_path / "train.csv"), str(tmp_path / "train.csv"))
    with pytest.raises(DataError) as info:
        data.setup()
    assert str(info.value) == (
        f"{tmp_path / 'train.csv'}: a directory without data files (names that start with '.' or '_' are ignored)"
    )


def test_empty_file(tmp_path):
    assert csv_error(tmp_path, "") == f"{tmp_path / 'train.csv'}: the file is empty"


def test_header_only_csv(tmp_path):
    assert csv_error(tmp_path, "label,a,c\n") == f"{tmp_path / 'train.csv'}: no data rows"
    eval_message = csv_error(tmp_path, "label,a,c\n0,1,x\n", eval_text="label,a,c\n")
    assert eval_message == f"{tmp_path / 'eval.csv'}: no data rows"


def test_missing_column_lists_the_columns_that_exist(tmp_path):
    message = csv_error(tmp_path, "label,b,c\n0,1,x\n")
    assert message == f"{tmp_path / 'train.csv'}: column 'a' not found; the columns are: label, b, c"
    message = csv_error(tmp_path, "label,a,c\n0,1,x\n", eval_text="a,c,y\n1,x,0\n")
    assert message == f"{tmp_path / 'eval.csv'}: column 'label' not found; the columns are: a, c, y"


def test_missing_column_without_header(tmp_path):
    message = csv_error(tmp_path, "0,1,x\n", header=False, columns=["label", "b", "c"])
    assert message == f"{tmp_path / 'train.csv'}: column 'a' not found; the columns are: label, b, c"


def test_header_name_with_spaces_is_a_data_error(tmp_path):
    message = csv_error(tmp_path, "label, a,c\n0,1,x\n")
    assert message.startswith(f"{tmp_path / 'train.csv'}: column 'a' not found")


def test_non_numeric_dense_value_with_header_names_column_and_data_row(tmp_path):
    text = "label,c,a\n0,x,1\n1,y,2\n0,z,oops\n1,w,nope\n"
    message = csv_error(tmp_path, text)
    assert message == f"{tmp_path / 'train.csv'}: column 'a', row 3: 'oops' is not a number"


def test_non_numeric_dense_value_without_header_names_column_and_data_row(tmp_path):
    text = "0\tx\t1\n1\ty\t2\n0\tz\toops\n"
    message = csv_error(tmp_path, text, delimiter="\t", header=False, columns=["label", "c", "a"])
    assert message == f"{tmp_path / 'train.csv'}: column 'a', row 3: 'oops' is not a number"


def test_non_numeric_value_far_down_a_large_file(tmp_path):
    lines = ["label,a,c"] + [f"{k % 2},{k},id{k % 97}" for k in range(150_000)]
    lines[123_457] = "1,12.5.3,id1"  # data row 123,457 (the header is line 0)
    message = csv_error(tmp_path, "\n".join(lines) + "\n")
    assert (tmp_path / "train.csv").stat().st_size > 2**20  # more than one pyarrow block (1 MiB)
    assert message == f"{tmp_path / 'train.csv'}: column 'a', row 123457: '12.5.3' is not a number"


def test_non_numeric_label_and_weight(tmp_path):
    message = csv_error(tmp_path, "label,a,c\n0,1,x\nyes,2,y\n")
    assert message == f"{tmp_path / 'train.csv'}: column 'label', row 2: 'yes' is not a number"
    features = {**CSV_FEATURES, "weight": "w"}
    message = csv_error(tmp_path, "label,a,c,w\n0,1,x,1\n1,2,y,heavy\n", features=features)
    assert message == f"{tmp_path / 'train.csv'}: column 'w', row 2: 'heavy' is not a number"


def test_empty_label_cell(tmp_path):
    message = csv_error(tmp_path, "label,a,c\n0,1,x\n1,2,y\n,3,z\n")
    assert message == f"{tmp_path / 'train.csv'}: column 'label', row 3: empty value"
    message = csv_error(tmp_path, ",1,x\n", eval_text="0,1,x\n", header=False, columns=["label", "a", "c"])
    assert message == f"{tmp_path / 'train.csv'}: column 'label', row 1: empty value"


def test_wrong_number_of_cells_names_the_file(tmp_path):
    message = csv_error(tmp_path, "label,a,c\n0,1,x\n1,2\n")
    assert message.startswith(f"{tmp_path / 'train.csv'}: ") and "columns" in message


def test_label_outside_zero_one(tmp_path):
    train = write(tmp_path / "train.csv", "label,a,c\n0,1,x\n1,2,y\n")
    eval_ = write(tmp_path / "eval.csv", "label,a,c\n1,1,x\n0,2,y\n0.5,3,z\n2,4,w\n")
    data = CSVData(CSV_FEATURES, train, eval_)
    data.setup()
    data.check_labels("loss Y", (0.0, 0.5, 1.0, 2.0))
    with pytest.raises(DataError) as info:
        data.check_labels("loss X", (0.0, 1.0))
    message = str(info.value)
    assert message == f"{eval_}: column 'label', row 3: label 0.5 is not one of {{0, 1}} (required by loss X)"


def test_non_parquet_file_passed_to_parquet_data(tmp_path):
    path = write(tmp_path / "train.parquet", "label,a,c\n0,1,x\n")
    data = ParquetData(CSV_FEATURES, path, path)
    with pytest.raises(DataError) as info:
        data.setup()
    assert str(info.value).startswith(f"{path}: not a readable Parquet file (")


def test_parquet_missing_column_and_empty_file(tmp_path):
    pq.write_table(pa.table({"label": [0.0], "a": [1.0], "d": ["x"]}), tmp_path / "t.parquet")
    data = ParquetData(CSV_FEATURES, str(tmp_path / "t.parquet"), str(tmp_path / "t.parquet"))
    with pytest.raises(DataError, match=r"t\.parquet: column 'c' not found; the columns are: label, a, d$"):
        data.setup()
    (tmp_path / "empty.parquet").write_bytes(b"")
    data = ParquetData(CSV_FEATURES, str(tmp_path / "empty.parquet"), str(tmp_path / "t.parquet"))
    with pytest.raises(DataError, match=r"empty\.parquet: the file is empty"):
        data.setup()


def test_parquet_string_dense_column_with_a_non_numeric_value(tmp_path):
    table = pa.table({"label": [0.0, 1.0, 0.0], "a": ["1", "2.5", "n/a?"], "c": ["x", "y", "z"]})
    pq.write_table(table, tmp_path / "t.parquet")
    path = str(tmp_path / "t.parquet")
    data = ParquetData(CSV_FEATURES, path, path)
    with pytest.raises(DataError) as info:
        data.setup()
    assert str(info.value) == f"{path}: column 'a', row 3: 'n/a?' is not a number"


def test_parquet_non_numeric_dense_type(tmp_path):
    table = pa.table({"label": [0.0, 1.0], "a": pa.array([[1], [2]]), "c": ["x", "y"]})
    pq.write_table(table, tmp_path / "t.parquet")
    data = ParquetData(CSV_FEATURES, str(tmp_path / "t.parquet"), str(tmp_path / "t.parquet"))
    with pytest.raises(DataError, match=r"t\.parquet: column 'a' of type list<.*> is not numeric"):
        data.setup()


def test_csv_config_errors():
    with pytest.raises(ValueError, match="^columns: required when header=false"):
        CSVData(CSV_FEATURES, "train.csv", "eval.csv", header=False, columns=None)
    with pytest.raises(ValueError, match=r"^delimiter=\|\|: must have length 1"):
        CSVData(CSV_FEATURES, "train.csv", "eval.csv", delimiter="||")


# ---------------------------------------------------------------------------------------------- synthetic data


SYNTHETIC_FEATURES = {
    "dense": [{"names": [f"I{j}" for j in range(1, 14)], "transform": "log1p", "standardize": True}],
    "categorical": [{"names": [f"C{f}" for f in range(1, 27)]}],
}


def test_generate_clicks_is_deterministic_for_a_seed():
    table, probs = generate_clicks(3000, seed=5)
    again, probs_again = generate_clicks.__wrapped__(3000, seed=5)  # drawn anew, not the kept result
    assert generate_clicks(3000, seed=5)[0] is table
    p = probs["label"]
    assert table.equals(again) and np.array_equal(p, probs_again["label"])
    other, probs_other = generate_clicks(3000, seed=6)
    assert not table.equals(other) and not np.array_equal(p, probs_other["label"])
    assert table.column_names == [f"I{j}" for j in range(1, 14)] + [f"C{f}" for f in range(1, 27)] + [
        "label",
        "session",
        "conversion",
        "value",
        "action",
        "teacher",
        "weight",
    ]
    assert table.num_rows == 3000 and p.shape == (3000,) and p.dtype == np.float32
    sessions = table["session"].to_numpy()
    assert sessions[0] == 0 and np.all(np.diff(sessions) >= 0) and np.all(np.diff(sessions) <= 1)  # consecutive runs
    assert 5 < 3000 / (sessions[-1] + 1) < 20  # mean length about 10
    assert set(pc.unique(table["label"]).to_pylist()) == {0.0, 1.0}
    assert all(pc.min(table[f"I{j}"]).as_py() >= 0 for j in range(1, 14))


def test_generate_clicks_conversions_value_action_teacher_and_weight():
    table, probs = generate_clicks(50_000, seed=7)
    click, conversion = table["label"].to_numpy(), table["conversion"].to_numpy()
    value, action, teacher = table["value"].to_numpy(), table["action"].to_numpy(), table["teacher"].to_numpy()
    assert np.all(conversion <= click)  # a conversion follows a click
    assert conversion[click > 0].mean() == pytest.approx(0.2, abs=0.03)
    assert float(probs["conversion"].mean()) == pytest.approx(conversion.mean(), abs=0.005)
    assert np.all((value > 0) == (conversion > 0))  # zero-inflated: a value only for converters
    log_value = np.log(value[value > 0])
    assert 2.0 < log_value.mean() < 4.0 and 0.7 < log_value.std() < 1.3  # lognormal, sigma 0.8 plus the mean's spread
    assert np.array_equal(action, click + conversion) and set(np.unique(action)) == {0.0, 1.0, 2.0}
    assert np.all((teacher > 0) & (teacher < 1))
    assert np.corrcoef(teacher, probs["label"])[0, 1] > 0.9  # a good but imperfect teacher
    weight = table["weight"].to_numpy()
    assert set(np.unique(weight)) == {0.5, 1.0, 2.0} and (weight == 1.0).mean() == pytest.approx(0.8, abs=0.01)
    assert roc_auc_score(conversion, probs["conversion"]) > 0.75


@pytest.mark.parametrize("rate", [0.25, 0.1])
def test_generate_clicks_positive_rate(rate):
    table, probs = generate_clicks(20_000, seed=11, positive_rate=rate)
    p = probs["label"]
    assert float(p.mean()) == pytest.approx(rate, abs=1e-3)
    assert float(pc.mean(table["label"]).as_py()) == pytest.approx(rate, abs=0.015)
    assert p.min() > 0 and p.max() < 1


def test_generate_clicks_categorical_vocab_sizes():
    table, _ = generate_clicks(20_000, seed=2)
    sizes = np.round(np.geomspace(10, 100_000, 26)).astype(int)
    assert sizes[0] == 10 and sizes[-1] == 100_000
    distinct = []
    for f in range(26):
        column = table[f"C{f + 1}"]
        assert column.null_count == 0
        assert pc.min(column).as_py() >= 0 and pc.max(column).as_py() < sizes[f]
        distinct.append(pc.count_distinct(column).as_py())
    assert distinct[0] == 10  # every id of the smallest field shows up in 20,000 rows
    assert all(10 <= d <= 100_000 for d in distinct)
    assert distinct[-1] > 100  # heavy-tailed large fields still have many ids


def test_synthetic_data_splits_and_oracle_auc():
    features = {**SYNTHETIC_FEATURES, "label": ["label", "conversion", "value"]}
    data = SyntheticCTRData(features, num_rows=20_000, eval_fraction=0.2, seed=4, batch_size=4096)
    assert data.spec.oracle == {"label": "label_probability", "conversion": "conversion_probability"}
    data.setup()
    assert len(data.train) == 16_000 and len(data.eval) == 4000
    table, probs = generate_clicks(20_000, seed=4)
    assert data.eval.oracle.shape == (4000, 3) and data.eval.oracle.dtype == torch.float32
    oracle = data.eval.oracle[:, 0]
    assert torch.equal(oracle, torch.from_numpy(probs["label"][16_000:]))
    assert torch.equal(data.eval.oracle[:, 1], torch.from_numpy(probs["conversion"][16_000:]))
    assert bool(data.eval.oracle[:, 2].isnan().all())  # value: a regression label has no probability
    assert next(data.train_batches(0)).oracle.shape == (4096, 3)  # batches carry it
    assert data.eval.labels[:, 0].tolist() == table["label"].to_pylist()[16_000:]
    assert data.input_spec.num_dense == 13 and data.input_spec.num_fields == 26
    assert data.input_spec.cardinalities[0] == 11  # C1: 10 ids + the out-of-vocabulary row
    auc = roc_auc_score(data.eval.labels[:, 0].numpy(), oracle.numpy())
    assert auc > 0.7
    data.check_labels("bce", (0.0, 1.0), column="label")
    assert sum(len(b) for b in data.train_batches(0)) == 16_000


def test_sessions_are_encoded_and_whole_sessions_are_shuffled_together():
    features = {"categorical": [{"names": ["c"]}], "session": "visit"}
    data = SessionsData(features, batch_size=4, seed=1)
    data.setup()
    assert data.train.sessions.tolist() == [0, 0, 1, 1, 1, -1, 0, 2]  # strings by distinct value, nulls share -1
    for epoch in range(3):
        order = torch.cat([b.sessions for b in data.train_batches(epoch)]).tolist()
        runs = [s for i, s in enumerate(order) if i == 0 or order[i - 1] != s]
        assert sorted(order) == sorted(data.train.sessions.tolist())
        assert len(runs) == len(set(runs)), order  # each session's rows are consecutive


class SessionsData(TabularData):
    def read_splits(self):
        table = pa.table(
            {
                "c": ["a", "b", "a", "c", "a", "b", "a", "d"],
                "visit": ["u", "u", "v", "v", "v", None, "u", "w"],
                "label": [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0],
            }
        )
        return (table, "train"), (table, "eval")


# ---------------------------------------------------------------------------------------------- several labels


def test_several_label_columns_give_labels_of_shape_n_by_l(tmp_path):
    text = "click,buy,value,a,c\n1,1,3.5,1,x\n1,0,0,2,y\n0,0,0,3,x\n"
    train, eval_ = write(tmp_path / "train.csv", text), write(tmp_path / "eval.csv", text)
    data = CSVData({**CSV_FEATURES, "label": ["click", "buy", "value"]}, train, eval_, batch_size=2, shuffle=False)
    data.setup()
    assert data.spec.label_names == ["click", "buy", "value"]
    assert data.train.labels.tolist() == [[1.0, 1.0, 3.5], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert next(iter(data.train_batches(0))).labels.shape == (2, 3)
    data.check_labels("bce", (0.0, 1.0), column="buy")
    data.check_labels("ziln", value_range=(0.0, float("inf")), column="value")
    with pytest.raises(DataError) as info:
        data.check_labels("loss X", (0.0, 1.0), column="value")
    assert str(info.value) == f"{train}: column 'value', row 1: label 3.5 is not one of {{0, 1}} (required by loss X)"


def test_a_label_outside_the_range_a_loss_needs_names_column_and_row(tmp_path):
    train = write(tmp_path / "train.csv", "value,a,c\n0,1,x\n2.5,2,y\n")
    eval_ = write(tmp_path / "eval.csv", "value,a,c\n1,1,x\n-0.5,2,y\n")
    data = CSVData({**CSV_FEATURES, "label": "value"}, train, eval_)
    data.setup()
    with pytest.raises(DataError) as info:
        data.check_labels("loss ZILNLoss", value_range=(0.0, float("inf")))
    assert (
        str(info.value) == f"{eval_}: column 'value', row 2: label -0.5 is not in [0, inf] (required by loss ZILNLoss)"
    )


@pytest.mark.parametrize("label", [[], ["click", "click"]])
def test_a_bad_label_list_is_refused(label):
    with pytest.raises(ValueError, match="^label"):
        FeatureSpec.from_config({**CSV_FEATURES, "label": label})


def test_parquet_with_click_conversion_value_weight_and_session(tmp_path):
    table = pa.table(
        {
            "c": ["x", "y", "x", "z"],
            "click": [1.0, 1.0, 0.0, 0.0],
            "buy": [1, 0, 0, 0],
            "value": [12.5, 0.0, 0.0, 0.0],
            "w": [1.0, 2.0, 0.5, 1.0],
            "visit": ["a", "a", "b", "b"],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    features = {
        "categorical": [{"names": ["c"]}],
        "label": ["click", "buy", "value"],
        "weight": "w",
        "session": "visit",
    }
    data = ParquetData(features, str(tmp_path / "t.parquet"), str(tmp_path / "t.parquet"), shuffle=False)
    data.setup()
    batch = next(iter(data.train_batches(0)))
    assert batch.labels.tolist() == [[1.0, 1.0, 12.5], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert batch.weights.tolist() == [1.0, 2.0, 0.5, 1.0] and batch.sessions.tolist() == [0, 0, 1, 1]
