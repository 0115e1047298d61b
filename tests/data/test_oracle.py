"""``data.features.oracle``: the true probabilities of label columns, read from the files like labels, encoded as
``oracle (N, L)`` in label order (NaN for a label without one), kept by the encoding cache, refused when bad."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from easyrec.data import FeatureSpec, ParquetData
from easyrec.data.features import FeatureEncoder
from easyrec.errors import DataError

FEATURES = {
    "dense": [{"names": ["x"]}],
    "label": ["click", "value", "buy"],
    "oracle": {"buy": "p_buy", "click": "p_click"},
}


def table(rows: int = 6, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    p_click = rng.uniform(0, 1, rows).astype(np.float32)
    return pa.table(
        {
            "x": rng.normal(size=rows),
            "click": (rng.uniform(size=rows) < p_click).astype(np.float64),
            "value": rng.exponential(size=rows),
            "buy": np.zeros(rows),
            "p_click": p_click,
            "p_buy": (p_click / 4).astype(np.float64),  # any numeric type, as labels
        }
    )


def encoded(spec: FeatureSpec, data: pa.Table):
    encoder = FeatureEncoder(spec).fit(data, "train.parquet")
    return encoder.encode(data, "eval.parquet")


def test_the_oracle_is_encoded_in_label_order_with_nan_for_labels_without_one():
    data = table()
    split = encoded(FeatureSpec.from_config(FEATURES), data)
    assert split.oracle.shape == (6, 3) and split.oracle.dtype == torch.float32
    assert torch.equal(split.oracle[:, 0], torch.tensor(data["p_click"].to_numpy()))
    assert bool(split.oracle[:, 1].isnan().all())
    assert torch.allclose(split.oracle[:, 2], split.oracle[:, 0] / 4)
    same(split.rows(2, 4).oracle, split.oracle[2:4])  # batches carry their rows
    assert encoded(FeatureSpec.from_config({**FEATURES, "oracle": None}), data).oracle is None
    assert FeatureSpec.from_config(FEATURES).columns[-2:] == ["p_click", "p_buy"]  # read like labels, in label order


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    """``a`` and ``b`` hold the same values, NaN where the other has NaN."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_an_oracle_of_a_column_that_is_not_a_label_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"^oracle: 'clicked' is not a label column \(the labels: click\)"):
        FeatureSpec.from_config({"label": "click", "oracle": {"clicked": "p"}})


@pytest.mark.parametrize(
    "values,problem",
    [
        ([0.5, 1.5], "column 'p_click', row 2: 1.5 is not a probability in [0, 1] (data.features.oracle.click)"),
        ([0.5, None], "column 'p_click', row 2: empty value"),
        ([0.5, math.nan], "column 'p_click', row 2: nan is not a probability in [0, 1]"),
    ],
    ids=["above-one", "empty", "nan"],
)
def test_a_bad_probability_is_a_data_error_naming_file_column_and_row(values, problem):
    data = table(rows=2)
    data = data.set_column(data.column_names.index("p_click"), "p_click", pa.array(values, pa.float64()))
    with pytest.raises(DataError) as error:
        encoded(FeatureSpec.from_config(FEATURES), data)
    assert str(error.value).startswith(f"eval.parquet: {problem}")


def test_a_bad_probability_in_a_batch_of_a_piece_is_named_by_its_row_in_the_piece():
    data = table(rows=2)
    data = data.set_column(data.column_names.index("p_buy"), "p_buy", pa.array([0.1, -0.5]))
    encoder = FeatureEncoder(FeatureSpec.from_config(FEATURES)).fit(table(), "train.parquet")
    with pytest.raises(DataError, match=r"^part-00003.parquet: column 'p_buy', row 1002: -0.5 is not a probability"):
        encoder.encode(data, "part-00003.parquet", first_row=1000)


def test_files_without_the_probability_column_are_reported_before_reading_and_the_cache_keeps_the_oracle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pq.write_table(table(40, seed=1), tmp_path / "train.parquet")
    pq.write_table(table(12, seed=2).drop_columns(["p_buy"]), tmp_path / "no_p.parquet")
    pq.write_table(table(12, seed=2), tmp_path / "eval.parquet")
    missing = ParquetData(FEATURES, str(tmp_path / "train.parquet"), str(tmp_path / "no_p.parquet"))
    with pytest.raises(DataError, match=r"no_p.parquet: column 'p_buy' not found"):
        missing.check_files()

    def data() -> ParquetData:
        train, eval_ = str(tmp_path / "train.parquet"), str(tmp_path / "eval.parquet")
        return ParquetData(FEATURES, train, eval_, cache_dir=str(tmp_path / "cache"))

    fresh, cached = data(), data()
    fresh.setup()  # encodes and stores
    monkeypatch.setattr(cached.encoder, "encode", None)  # loads: encoding again would fail
    cached.setup()
    for split in ("train", "eval"):
        same(getattr(fresh, split).oracle, getattr(cached, split).oracle)
    assert cached.eval.oracle.shape == (12, 3)
