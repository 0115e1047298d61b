"""Multi-value and sequence features in the data pipeline: the encoder's fit and encoding (separated strings and
list columns, vocabularies shared through ``embedding_name``, truncation, -1 padding), the same ids from CSV and
Parquet, in memory, streamed and cached, and the one-line errors of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest
import torch

from easyrec.config import validate
from easyrec.data import FeatureEncoder, FeatureSpec
from easyrec.data.csv_data import CSVData
from easyrec.data.features import list_ids
from easyrec.data.hashing import hash_buckets
from easyrec.data.parquet_data import ParquetData
from easyrec.data.pieces import Piece
from easyrec.errors import ConfigError, DataError

FEATURES = {
    "categorical": [{"names": ["item"]}],
    "multi_value": [{"names": ["tags"], "max_length": 3}],
    "sequence": [{"names": ["history"], "max_length": 4, "embedding_name": "item"}],
}
SPEC = FeatureSpec.from_config(FEATURES)


def lists_table(rows: list[tuple[str, str | None, str | None]]) -> pa.Table:
    """``(item, tags, history)`` rows as a table of separated strings, with a label."""
    items, tags, history = zip(*rows, strict=True)
    return pa.table(
        {"item": list(items), "tags": list(tags), "history": list(history), "label": [1.0, 0.0] * (len(rows) // 2)}
    )


TRAIN = lists_table(
    [
        ("a", "x|y", "b|c|a|d|e"),  # history truncated to 4: "e" is neither encoded nor counted
        ("b", "y", ""),
        ("c", None, "a"),
        ("a", "x|y|z|w", "zz|a"),
    ]
)


# ---------------------------------------------------------------------------------------------- encoding


def test_list_ids_split_drop_empty_ids_and_truncate():
    column = pa.chunked_array([["a|b|c", None], ["", "|d||e"]])
    ids, rows, positions = list_ids(column, "|", 2, "t")
    assert ids.to_pylist() == ["a", "b", "d", "e"]
    assert rows.tolist() == [0, 0, 3, 3] and positions.tolist() == [0, 1, 0, 1]
    ids, rows, positions = list_ids(pa.array([[3, None, 4, 5], [], None, [6]]), "|", 2, "t")
    assert ids.to_pylist() == [3, 4, 6] and rows.tolist() == [0, 0, 3] and positions.tolist() == [0, 1, 0]
    # no empty id: the places come from the offsets (of a slice here)
    ids, rows, positions = list_ids(pa.array([[9], [1, 2, 3], [4], []]).slice(1), "|", 2, "t")
    assert ids.to_pylist() == [1, 2, 4] and rows.tolist() == [0, 0, 1] and positions.tolist() == [0, 1, 0]


def test_a_hand_computed_encoding_of_multi_value_and_shared_sequence_features():
    encoder = FeatureEncoder(SPEC).fit(TRAIN, "train")
    # history's ids are counted into item's vocabulary: a 3 (1 + 2), b 2, c 2, d 1, zz 1; "e" was truncated away
    assert encoder.vocabularies["item"].to_pylist() == ["a", "b", "c", "d", "zz"]
    assert encoder.vocabularies["tags"].to_pylist() == ["y", "x", "z"]  # "w" truncated away (max_length 3)
    assert "history" not in encoder.vocabularies
    lists = encoder.encode(TRAIN, "train").lists
    assert lists.dtype == torch.int32 and lists.shape == (4, 3 + 4)
    expected = [
        [2, 1, -1, 2, 3, 1, 4],
        [1, -1, -1, -1, -1, -1, -1],
        [-1, -1, -1, 1, -1, -1, -1],
        [2, 1, 3, 5, 1, -1, -1],
    ]
    assert lists.tolist() == expected
    unknown = encoder.encode(lists_table([("q", "new|x", "new|b"), ("a", "", None)]), "other").lists
    assert unknown.tolist() == [[0, 2, -1, 0, 2, -1, -1], [-1] * 7]
    spec = encoder.input_spec
    tags, history = spec.lists
    assert (tags.name, tags.kind, tags.start, tags.max_length, tags.cardinality, tags.table) == (
        "tags",
        "multi_value",
        0,
        3,
        4,
        None,
    )
    assert (history.kind, history.start, history.cardinality, history.table) == ("sequence", 3, 6, "item")
    assert spec.list_width == 7 and history.columns == slice(3, 7)
    assert spec.described == "0 dense + 1 categorical + 2 list features"


def test_parquet_lists_of_integers_share_the_integer_vocabulary_of_their_categorical_feature():
    table = pa.table(
        {
            "item": [1, 2, 3, 1],
            "tags": pa.array([[1, 2], [2], None, [1, 2, 3, 4]], pa.list_(pa.int32())),
            "history": [[2, 3, 1, 4, 5], [], [1], [None, 1]],
            "label": [1.0, 0.0, 1.0, 0.0],
        }
    )
    encoder = FeatureEncoder(SPEC).fit(table, "train")
    assert encoder.kinds == {"item": "int", "tags": "int", "history": "int"}
    assert encoder.vocabularies["item"].to_pylist() == [1, 2, 3, 4]
    # lists given as text at prediction encode as the integers they name
    other = table.set_column(2, "history", pa.array(["2|3|1|4|5", "", "1", "|1"]))
    other = other.set_column(1, "tags", pa.array(["1|2", "2", None, "1|2|3|4"]))
    assert torch.equal(encoder.encode(other, "other").lists, encoder.encode(table, "train").lists)
    other = other.set_column(2, "history", pa.array(["2|x", "", "1", "1"]))
    with pytest.raises(DataError, match="^other: column 'history' holds string ids that are not int ids, as those"):
        encoder.encode(other, "other")


def test_hashed_lists_take_the_buckets_of_their_ids():
    spec = FeatureSpec.from_config({"multi_value": [{"names": ["tags"], "encoding": "hash", "num_buckets": 11}]})
    table = pa.table({"tags": ["x|y", "", "y"], "label": [1.0, 0.0, 1.0]})
    lists = FeatureEncoder(spec).fit(table, "train").encode(table, "train").lists
    x, y = hash_buckets(pa.array(["x", "y"]), 11).tolist()
    assert lists[:, :2].tolist() == [[x, y], [-1, -1], [y, -1]]
    assert (lists[:, 2:] == -1).all()


def test_a_list_column_sharing_a_hashed_table_takes_its_buckets():
    spec = FeatureSpec.from_config(
        {
            "categorical": [{"names": ["item"], "encoding": "hash", "num_buckets": 13}],
            "sequence": [{"names": ["history"], "max_length": 2, "embedding_name": "item"}],
        }
    )
    table = pa.table({"item": ["p", "q"], "history": ["q|p", "p"], "label": [1.0, 0.0]})
    encoded = FeatureEncoder(spec).fit(table, "train").encode(table, "train")
    p, q = encoded.sparse[:, 0].tolist()
    assert encoded.lists.tolist() == [[q, p], [p, -1]]


def test_the_encoder_state_round_trips_with_list_vocabularies():
    encoder = FeatureEncoder(SPEC).fit(TRAIN, "train")
    again = FeatureEncoder(SPEC)
    again.load_state_dict(encoder.state_dict())
    assert again.kinds == encoder.kinds
    assert torch.equal(again.encode(TRAIN, "t").lists, encoder.encode(TRAIN, "t").lists)


def test_a_kept_encoding_keeps_the_rows_of_list_ids_and_appends_new_ones():
    earlier = FeatureEncoder(SPEC).fit(TRAIN, "train").state_dict()
    today = lists_table([("n", "q|x", "n|b"), ("a", "q", "m")])
    encoder = FeatureEncoder(SPEC).fit(today, "today", keep=earlier)
    assert encoder.vocabularies["tags"].to_pylist() == ["y", "x", "z", "q"]
    assert encoder.vocabularies["item"].to_pylist() == ["a", "b", "c", "d", "zz", "n", "m"]


def test_a_fit_over_pieces_fits_what_one_table_fits(tmp_path):
    paths = []
    for index, part in enumerate((TRAIN.slice(0, 2), TRAIN.slice(2, 2))):
        paths.append(tmp_path / f"part-{index}.parquet")
        pq.write_table(part, paths[-1])

    def reader(piece: Piece, columns: list[str]):
        yield from pq.ParquetFile(piece.path).iter_batches(batch_size=1, columns=columns)

    pieces = [Piece(str(path), None, 0, 0, 2) for path in paths]
    streamed = FeatureEncoder(SPEC)
    streamed.fit_pieces(pieces, reader, "train", threads=2, progress=False)
    whole = FeatureEncoder(SPEC).fit(TRAIN, "train")
    assert streamed.state_dict() == whole.state_dict()


# ---------------------------------------------------------------------------------------------- sources


def write_splits(directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The same train and eval rows as CSV files (separated strings) and Parquet files (lists of strings)."""
    rng = np.random.default_rng(0)
    paths: tuple[dict[str, str], dict[str, str]] = ({}, {})
    for split, rows in (("train", 40), ("eval", 12)):
        tags = [[f"t{v}" for v in rng.integers(0, 6, rng.integers(0, 5))] for _ in range(rows)]
        history = [[f"i{v}" for v in rng.integers(0, 9, rng.integers(0, 7))] for _ in range(rows)]
        columns = {
            "x": rng.normal(size=rows).round(3),
            "item": [f"i{v}" for v in rng.integers(0, 9, rows)],
            "tags": tags,
            "history": history,
            "label": rng.integers(0, 2, rows).astype(float),
        }
        pq.write_table(pa.table(columns), directory / f"{split}.parquet")
        lines = ["x,item,tags,history,label"] + [
            f"{x},{item},{'|'.join(t)},{'|'.join(h)},{label}"
            for x, item, t, h, label in zip(*columns.values(), strict=True)
        ]
        (directory / f"{split}.csv").write_text("\n".join(lines) + "\n")
        paths[0][split], paths[1][split] = str(directory / f"{split}.csv"), str(directory / f"{split}.parquet")
    return paths


FILE_FEATURES = {"dense": [{"names": ["x"]}], **FEATURES}


def test_csv_and_parquet_files_give_the_same_ids_in_memory_streamed_and_cached(tmp_path):
    csv, parquet = write_splits(tmp_path)
    from_csv = CSVData(FILE_FEATURES, csv["train"], csv["eval"], batch_size=8, cache_dir=str(tmp_path / "cache"))
    from_csv.setup()
    from_parquet = ParquetData(FILE_FEATURES, parquet["train"], parquet["eval"], batch_size=8)
    from_parquet.setup()
    assert from_csv.train.lists.shape == (40, 7)
    assert (from_csv.train.lists >= 0).any() and (from_csv.train.lists == -1).any()
    assert torch.equal(from_csv.train.lists, from_parquet.train.lists)
    assert torch.equal(from_csv.eval.lists, from_parquet.eval.lists)
    assert from_csv.input_spec == from_parquet.input_spec

    cached = CSVData(FILE_FEATURES, csv["train"], csv["eval"], batch_size=8, cache_dir=str(tmp_path / "cache"))
    cached.setup()
    assert torch.equal(cached.train.lists, from_csv.train.lists) and cached.input_spec == from_csv.input_spec

    streamed = ParquetData(
        FILE_FEATURES, parquet["train"], parquet["eval"], batch_size=5, streaming=True, num_workers=0
    )
    streamed.setup()
    assert streamed.input_spec == from_csv.input_spec
    batches = list(streamed.eval_batches())
    assert all(b.lists.shape == (len(b), 7) and b.lists.dtype == torch.int32 for b in batches)
    assert torch.equal(torch.cat([b.lists for b in batches]), from_csv.eval.lists)
    step = next(iter(streamed.train_steps(0)))
    assert step.batches[0].lists.shape == (5, 7) and len(step.batches[0].inputs) == 3


# ---------------------------------------------------------------------------------------------- bad input


def test_a_list_column_that_is_neither_lists_nor_strings_is_named():
    table = TRAIN.set_column(2, "history", pa.array([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(DataError, match=r"^train: column 'history' \(data.features.sequence.0\): holds double values"):
        FeatureEncoder(SPEC).fit(table, "train")
    table = TRAIN.set_column(1, "tags", pa.array([[0.5], [], None, [1.5]]))
    with pytest.raises(DataError, match=r"column 'tags' \(data.features.multi_value.0\): holds lists of double"):
        FeatureEncoder(SPEC).fit(table, "train")


def test_a_separator_that_occurs_in_no_cell_of_the_training_split_is_named():
    table = TRAIN.set_column(1, "tags", pa.array(["x,y", "y", None, "x,z"]))
    message = (
        r"^data.features.multi_value.0.separator: '\|' occurs in no cell of column 'tags' of train \(such as 'x,y'\)"
    )
    with pytest.raises(DataError, match=message):
        FeatureEncoder(SPEC).fit(table, "train")
    # lists do not need one, nor do strings of single ids in one piece when another piece has the separator
    listed = TRAIN.set_column(1, "tags", pa.array([["x"], ["y"], None, []]))
    FeatureEncoder(SPEC).fit(listed, "train")


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (
            {"categorical": [{"names": ["a"]}], "multi_value": [{"names": ["b", "a"]}]},
            "multi_value.0.names: 'a' is also in categorical.0.names: a column is one feature",
        ),
        (
            {"multi_value": [{"names": ["a"]}], "sequence": [{"names": ["a"]}]},
            "sequence.0.names: 'a' is also in multi_value.0.names",
        ),
        ({"sequence": [{"names": ["h"], "embedding_name": "item"}]}, "sequence.0.embedding_name: 'item' is not a"),
    ],
)
def test_a_spec_that_names_a_column_twice_or_shares_no_table_is_refused(features, message):
    with pytest.raises(ValueError, match=message):
        FeatureSpec.from_config(features)


def test_a_shared_table_takes_the_encoding_of_its_categorical_feature():
    with pytest.raises(ValueError, match=r"^num_buckets: features h share the table of 'item' \(embedding_name\)"):
        FeatureSpec.from_config(
            {
                "categorical": [{"names": ["item"], "encoding": "hash", "num_buckets": 9}],
                "sequence": [{"names": ["h"], "embedding_name": "item", "encoding": "hash", "num_buckets": 9}],
            }
        )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.features.multi_value=[{names: [C1]}]",
            "data.features.multi_value.0.names: 'C1' is also in categorical.0.names: a column is one feature",
        ),
        ("data.features.sequence=[{names: [h], max_length: 0}]", "data.features.sequence.0.max_length=0: must be > 0"),
        ("data.features.sequence=[{names: [h], separator: ''}]", "data.features.sequence.0.separator="),
    ],
)
def test_the_config_check_names_the_key_of_a_bad_list_feature(compose_train, override, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_train(override))
    assert str(error.value).startswith(message)


# ---------------------------------------------------------------------------------------------- a run


@pytest.mark.slow
def test_a_run_with_list_features_predicts_and_exports_what_it_trained(tmp_path):
    """Train a few steps on CSV files with list features, then ``easyrec predict`` on the Parquet files (lists)
    and the exported pyfunc model on a DataFrame of lists give the trained model's predictions."""
    from mlflow.pyfunc import load_model

    from easyrec.commands.export import export
    from easyrec.commands.predict import as_batch, predict_file
    from easyrec.run import train
    from easyrec.saved_run import SavedRun
    from tests.conftest import compose_config

    csv, parquet = write_splits(tmp_path)
    features = [
        "data.features.dense=[{names: [x]}]",
        "data.features.categorical=[{names: [item]}]",
        "data.features.multi_value=[{names: [tags], max_length: 3}]",
        "data.features.sequence=[{names: [history], max_length: 4, embedding_name: item}]",
    ]
    config = compose_config(
        "data=csv",
        f"data.train_path={csv['train']}",
        f"data.eval_path={csv['eval']}",
        "data.cache_dir=null",
        "data.batch_size=8",
        *features,
        "model.hidden_units=[8]",
        "model.embedding_dim=4",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        "trainer.num_threads=1",
        f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
    )
    train(config, tmp_path / "run")
    saved = SavedRun.load(tmp_path / "run")
    encoded = saved.encoder.encode(pq.read_table(parquet["eval"]), "eval", labels=False)
    expected = saved.predict(as_batch(encoded))[0].numpy()

    assert predict_file(saved, parquet["eval"], tmp_path / "predictions.csv") == 12
    written = pv.read_csv(tmp_path / "predictions.csv")["prediction"].to_numpy()
    np.testing.assert_allclose(written, expected, atol=1e-6)

    exported = export(tmp_path / "run", output=tmp_path / "export", mlflow=False)
    frame = pq.read_table(parquet["eval"]).to_pandas()  # tags and history: arrays of ids
    got = load_model(str(exported / "mlflow_model")).predict(frame)["prediction"].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
