"""``easyrec generate``: shards of the synthetic data with its true probabilities, the same rows for a seed
whatever the shards, no half file after a stop, one-line refusals of bad arguments; and ``eval/oracle_auc`` on the
files it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import roc_auc_score

from easyrec.commands import generate as generate_command
from easyrec.data import ParquetData, generate_clicks
from easyrec.losses import BinaryCrossEntropy
from easyrec.metrics import EvalMetrics
from tests.conftest import compose_config

ROWS, EVAL_ROWS = 3000, 700


@pytest.fixture(autouse=True)
def small_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    """A calibration sample of 20,000 rows (not 200,000): a second per data set, not several."""
    monkeypatch.setattr(generate_command, "CALIBRATION_ROWS", 20_000)


def written(directory: Path, file_format: str = "parquet") -> pa.Table:
    """The rows of a split directory, its files in name order."""
    return ds.dataset(sorted(map(str, directory.iterdir())), format=file_format).to_table()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 train rows in 3 shards and 700 eval rows, drawn in chunks of 1,000 rows."""
    output = tmp_path_factory.mktemp("generated")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(generate_command, "CALIBRATION_ROWS", 20_000)
        generate_command.generate(output, ROWS, EVAL_ROWS, files=3, seed=5, chunk_rows=1000, progress=False)
    return output


def test_shards_hold_every_column_of_synthetic_data_and_the_true_probabilities(generated):
    names = sorted(path.name for path in (generated / "train").iterdir())
    assert names == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.ParquetFile(generated / "train" / name).metadata.num_rows for name in names] == [1000, 1000, 1000]
    assert sorted(path.name for path in (generated / "eval").iterdir()) == ["part-00000.parquet"]
    train, synthetic = written(generated / "train"), generate_clicks(200, 0)[0]
    assert train.column_names == [*synthetic.column_names, "label_probability", "conversion_probability"]
    assert train.schema.remove(47).remove(46) == synthetic.schema  # the same types as data=synthetic
    assert written(generated / "eval").num_rows == EVAL_ROWS


def test_the_probability_columns_match_the_labels_rates(generated):
    table = pa.concat_tables([written(generated / "train"), written(generated / "eval")])
    p, label = table["label_probability"].to_numpy(), table["label"].to_numpy()
    q, conversion = table["conversion_probability"].to_numpy(), table["conversion"].to_numpy()
    assert ((p >= 0) & (p <= 1)).all() and (q <= p).all()
    assert label.mean() == pytest.approx(0.25, abs=0.03) and p.mean() == pytest.approx(0.25, abs=0.02)
    # each label's rate is its probability's mean, within 4 standard errors
    assert abs(label.mean() - p.mean()) < 4 * np.sqrt(p.mean() * (1 - p.mean()) / len(p))
    assert abs(conversion.mean() - q.mean()) < 4 * np.sqrt(q.mean() * (1 - q.mean()) / len(q))
    assert roc_auc_score(label, p) > 0.7  # the true probability ranks the clicks
    sessions = table["session"].to_numpy()
    assert (np.diff(sessions[:ROWS]) >= 0).all()  # consecutive runs of rows, across chunks and shards


def test_a_seed_gives_the_same_rows_for_any_number_of_shards_and_another_seed_other_rows(generated, tmp_path):
    generate_command.generate(tmp_path / "one", ROWS, EVAL_ROWS, files=1, seed=5, chunk_rows=1000, progress=False)
    assert written(tmp_path / "one" / "train").equals(written(generated / "train"))
    assert written(tmp_path / "one" / "eval").equals(written(generated / "eval"))
    generate_command.generate(tmp_path / "other", ROWS, EVAL_ROWS, files=3, seed=6, chunk_rows=1000, progress=False)
    assert not written(tmp_path / "other" / "train")["C26"].equals(written(generated / "train")["C26"])


def test_csv_shards_read_back_as_the_parquet_rows(generated, tmp_path):
    generate_command.generate(
        tmp_path, ROWS, EVAL_ROWS, files=2, seed=5, file_format="csv", chunk_rows=1000, progress=False
    )
    assert sorted(path.name for path in (tmp_path / "train").iterdir()) == ["part-00000.csv", "part-00001.csv"]
    table = pv.read_csv(tmp_path / "train" / "part-00001.csv")
    parquet = written(generated / "train").slice(1500)
    assert table.num_rows == 1500 and table["C3"].to_pylist() == parquet["C3"].to_pylist()
    assert table["label_probability"].to_numpy() == pytest.approx(parquet["label_probability"].to_numpy())


def test_the_oracle_auc_on_generated_files(generated, tmp_path):
    """data=parquet with the generated preset: eval batches carry the true probabilities; eval/oracle_auc is that
    of the file's label_probability, computed from the batches alone."""
    features = compose_config("data=parquet", "data/features=generated").data.features
    data = ParquetData(
        features,
        train_path=str(generated / "train" / "part-00000.parquet"),
        eval_path=str(generated / "eval" / "part-00000.parquet"),
        eval_batch_size=256,
    )
    data.setup()
    data.eval = None  # the evaluation needs nothing of the split in memory: what it reads comes with the batches
    evaluation = EvalMetrics().evaluation(BinaryCrossEntropy().heads(["label"]), data)
    assert evaluation.names == ["eval/auc", "eval/logloss", "eval/oracle_auc", "eval/oracle_logloss"]
    table = written(generated / "eval")
    for start in range(0, EVAL_ROWS, 256):
        stop = min(start + 256, EVAL_ROWS)
        evaluation.update(torch.zeros(stop - start), batch_of(data, table.slice(start, stop - start)))
    values = evaluation.compute()
    p, label = table["label_probability"].to_numpy(), table["label"].to_numpy()
    assert values["eval/oracle_auc"] == pytest.approx(roc_auc_score(label, p))
    assert values["eval/oracle_logloss"] == pytest.approx(-np.mean(label * np.log(p) + (1 - label) * np.log1p(-p)))


def batch_of(data: ParquetData, table: pa.Table):
    """The rows of ``table`` encoded as one batch."""
    return data.encoder.encode(table, "eval").rows(0, table.num_rows)


def test_a_stopped_run_leaves_no_half_file_under_a_final_name(tmp_path, monkeypatch):
    """A Ctrl-C in the second shard: the first stays whole, the second's temporary file is removed."""
    real = generate_command.ShardWriter.write
    writes = []

    def interrupted(self, table):
        writes.append(self.path.name)
        if self.path.name == "part-00001.parquet":
            raise KeyboardInterrupt
        real(self, table)

    monkeypatch.setattr(generate_command.ShardWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_command.generate(tmp_path, 2000, 100, files=2, chunk_rows=500, progress=False)
    assert sorted(path.name for path in (tmp_path / "train").iterdir()) == ["part-00000.parquet"]
    assert pq.ParquetFile(tmp_path / "train" / "part-00000.parquet").metadata.num_rows == 1000


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--rows", "10", "--files", "11"], "--files 11 is more than --rows 10: every file needs a row"),
        (["--rows", "0"], "argument --rows: invalid positive integer value: '0'"),
        (["--rows", "10", "--format", "orc"], "argument --format: invalid choice: 'orc'"),
        (["--rows", "10", "--positive-rate", "1.5"], "--positive-rate 1.5: must be in (0, 1)"),
        (["--rows", "10", "--seed", "-1"], "--seed -1: must be in [0, 2**32)"),
        (["--rows", "10", "--output", "{full}"], "the directory is not empty; pass --overwrite"),
    ],
    ids=["files-over-rows", "no-rows", "format", "rate", "seed", "not-empty"],
)
def test_bad_arguments_are_one_line_and_exit_2(easyrec_main, tmp_path, arguments, message):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    arguments = [a.replace("{full}", str(full)) for a in arguments]
    if "--output" not in arguments:
        arguments += ["--output", str(tmp_path / "new")]
    code, out, err = easyrec_main("generate", *arguments)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0] and lines[0].startswith("easyrec generate: error:")
    assert not (tmp_path / "new").exists() and (full / "keep.txt").read_text() == "mine"


def test_overwrite_replaces_train_and_eval_and_the_last_line_is_the_command_to_train(easyrec_main, tmp_path):
    output = tmp_path / "data set"
    (output / "train").mkdir(parents=True)
    (output / "train" / "part-00007.parquet").write_text("old")
    (output / "notes.txt").write_text("mine")
    code, out, err = easyrec_main("generate", "--rows", "500", "--output", str(output), "--overwrite")
    assert code == 0, err
    assert sorted(path.name for path in (output / "train").iterdir()) == ["part-00000.parquet"]
    assert (output / "notes.txt").read_text() == "mine"
    assert out.splitlines()[0].startswith("wrote 500 train rows in 1 file and 50 eval rows in 1 file to ")
    assert out.splitlines()[-1].strip() == (
        f"easyrec train data=parquet data/features=generated data.train_path='{output}/train' "
        f"data.eval_path='{output}/eval'"
    )
