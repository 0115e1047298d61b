"""``easyrec predict``: streamed in batches, one row per input row in order, the trainer's own predictions, kept
id columns; every bad input is one line and leaves no output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest
import torch
from hydra.utils import instantiate

from easyrec.commands import predict as predict_command
from easyrec.data import generate_clicks
from easyrec.run import train
from easyrec.saved_run import SavedRun
from tests.conftest import QUICK, compose_config

TRAINER = ["trainer.progress_bar=false", "trainer.num_threads=1", "logger=none"]
SMALL = [*QUICK[1:], *TRAINER]
LABELS = ["label", "session", "conversion", "value", "action", "teacher"]


def only_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def without_labels(table: pa.Table) -> pa.Table:
    """The feature columns, after an id column ``rid`` of zero-padded text (``000007``)."""
    rid = pa.array([f"{i:06d}" for i in range(table.num_rows)])
    return table.drop_columns(LABELS).add_column(0, "rid", rid)


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    """A DeepFM run on CSV files, its eval rows without labels (``eval_rows.csv``, ``.parquet``), and the trainer's
    predictions for them: sigmoid(model) over the eval batches of the data set up as training sets it up."""
    root = tmp_path_factory.mktemp("csv")
    table, _ = generate_clicks(6000, seed=3)
    pv.write_csv(table.slice(0, 5000), root / "train.csv")
    pv.write_csv(table.slice(5000), root / "eval.csv")
    pv.write_csv(without_labels(table.slice(5000)), root / "eval_rows.csv")
    pq.write_table(without_labels(table.slice(5000)), root / "eval_rows.parquet")
    data = ["data=csv", f"data.train_path={root}/train.csv", f"data.eval_path={root}/eval.csv"]
    train(compose_config(*data, *SMALL, "trainer.max_epochs=2"), root / "run")
    saved = SavedRun.load(root / "run")
    trained = instantiate(saved.config.data, _convert_="all")
    trained.setup()  # fitted on the training file, as in training
    with torch.no_grad():
        expected = torch.cat([torch.sigmoid(saved.model(b.dense, b.sparse)) for b in trained.eval_batches()])
    return root, expected.numpy()


@pytest.fixture
def batch_sizes(monkeypatch) -> list[int]:
    """The size of every batch predicted."""
    sizes: list[int] = []
    original = SavedRun.predict

    def spy(self, batch):
        sizes.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(SavedRun, "predict", spy)
    return sizes


def test_a_csv_without_labels_is_predicted_in_small_batches_in_order(csv_run, easyrec_main, batch_sizes, monkeypatch):
    root, expected = csv_run
    monkeypatch.setattr(predict_command, "CSV_BLOCK_BYTES", 16 << 10)  # about 100 rows per block
    output = root / "out.csv"
    code, out, err = easyrec_main(
        "predict", root / "run", "--input", root / "eval_rows.csv", "--output", output,
        "--keep-columns", "rid,C1", "--batch-size", "64",
    )  # fmt: skip
    assert code == 0, err
    assert out.strip().endswith(f"1,000 rows predicted with {root}/run/checkpoints/best.pt, written to {output}")
    assert len(batch_sizes) > 1000 // 64 + 1 and max(batch_sizes) <= 64 and sum(batch_sizes[1:]) == 1000  # 0: probe
    result = pv.read_csv(
        output, convert_options=pv.ConvertOptions(column_types={"rid": pa.string(), "C1": pa.string()})
    )
    assert result.column_names == ["rid", "C1", "prediction"]
    given = pv.read_csv(root / "eval_rows.csv", convert_options=pv.ConvertOptions(column_types={"C1": pa.string()}))
    assert result["rid"].to_pylist() == [f"{i:06d}" for i in range(1000)]
    assert result["C1"].to_pylist() == given["C1"].to_pylist()
    assert np.abs(result["prediction"].to_numpy() - expected).max() < 1e-6
    assert not list(root.glob("*.partial"))


@pytest.mark.parametrize(("source", "target"), [("parquet", "parquet"), ("csv", "parquet"), ("parquet", "csv")])
def test_parquet_in_or_out(csv_run, easyrec_main, source, target):
    root, expected = csv_run
    output = root / f"from-{source}.{target}"
    code, _, err = easyrec_main(
        "predict", root / "run", "--input", root / f"eval_rows.{source}", "--output", output,
        "--keep-columns", "rid", "--batch-size", "300",
    )  # fmt: skip
    assert code == 0, err
    result = pq.read_table(output) if target == "parquet" else pv.read_csv(output)
    if target == "parquet":
        assert result.schema.field("prediction").type == pa.float32()
        assert result["rid"].to_pylist() == [f"{i:06d}" for i in range(1000)]
    assert np.abs(result["prediction"].to_numpy() - expected).max() < 1e-6


def test_a_file_of_no_rows_gives_the_header(csv_run, tmp_path):
    root, _ = csv_run
    (tmp_path / "empty.csv").write_text((root / "eval_rows.csv").read_text().splitlines()[0] + "\n")
    rows = predict_command.predict_file(
        SavedRun.load(root / "run"), tmp_path / "empty.csv", tmp_path / "o.csv", ["rid"]
    )
    assert rows == 0 and (tmp_path / "o.csv").read_text() == '"rid","prediction"\n'


@pytest.mark.parametrize(
    ("overrides", "columns"),
    [
        (
            ["experiment=multi_task", "model.expert_units=[16]", "model.tower_units=[8]"],
            ["prediction/ctr", "prediction/ctcvr", "prediction/cvr"],
        ),
        (["experiment=multiclass"], ["prediction/0", "prediction/1", "prediction/2"]),
    ],
    ids=["multi_task", "multiclass"],
)
def test_one_column_per_task_or_class(tmp_path, overrides, columns):
    settings = [*overrides, *QUICK[:2], "model.embedding_dim=4", *TRAINER, "trainer.max_steps=8"]
    train(compose_config(*settings), tmp_path / "run")
    table, _ = generate_clicks(6000, seed=42)
    pq.write_table(without_labels(table.slice(5400)), tmp_path / "rows.parquet")
    saved = SavedRun.load(tmp_path / "run")
    assert predict_command.predict_file(saved, tmp_path / "rows.parquet", tmp_path / "p.parquet", ["rid"]) == 600
    result = pq.read_table(tmp_path / "p.parquet")
    assert result.column_names == ["rid", *columns]
    values = np.stack([result[name].to_numpy() for name in columns], 1)
    if columns[0] == "prediction/0":
        np.testing.assert_allclose(values.sum(1), 1.0, atol=1e-5)
    else:
        np.testing.assert_allclose(values[:, 2], np.clip(values[:, 1] / values[:, 0], 0, 1), atol=1e-5)


def test_bad_inputs_are_one_line_and_leave_no_output(csv_run, easyrec_main, tmp_path):
    root, _ = csv_run
    run, rows = root / "run", root / "eval_rows.csv"
    lines = rows.read_text().splitlines()
    header = lines[0].replace('"', "").split(",")
    (tmp_path / "no_c7.csv").write_text(
        "\n".join(",".join(c for c, n in zip(line.split(","), header, strict=True) if n != "C7") for line in lines)
    )
    cells = lines[700].split(",")
    cells[header.index("I4")] = "lots"
    (tmp_path / "text.csv").write_text("\n".join([*lines[:700], ",".join(cells), *lines[701:]]) + "\n")
    (tmp_path / "taken.csv").write_text("mine")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    out = tmp_path / "out.csv"
    cases = [
        (["--input", tmp_path / "no_c7.csv"], 1, f"{tmp_path / 'no_c7.csv'}: column 'C7' not found; the columns are:"),
        (
            ["--input", tmp_path / "text.csv"],
            1,
            f"{tmp_path / 'text.csv'}: column 'I4', row 700: 'lots' is not a number",
        ),
        (["--input", rows, "--keep-columns", "rid,user"], 1, f"{rows}: column 'user' not found"),
        (["--input", tmp_path / "none.csv"], 1, f"{tmp_path / 'none.csv'}: file not found"),
        (["--input", rows, "--output", tmp_path / "taken.csv"], 1, f"{tmp_path / 'taken.csv'}: already exists; pass"),
        (["--input", rows, "--output", rows, "--overwrite"], 1, f"{rows}: is the input file"),
        (["--input", rows, "--keep-columns", "prediction"], 2, "--keep-columns: 'prediction' is also the name of"),
        (["--input", rows, "--batch-size", "0"], 2, "argument --batch-size: 0: must be >= 1"),
        (["--input", rows, "--checkpoint", "first"], 2, "argument --checkpoint: invalid choice: 'first'"),
        (["--input", rows, "model.hidden_units"], 2, "Error parsing override 'model.hidden_units'"),
        (["--input", rows, "model.hidden_units=[8]"], 1, f"{run}/checkpoints/best.pt: does not fit the model"),
    ]
    for args, code, message in cases:
        done, stdout, err = easyrec_main("predict", run, "--output", out, *args)
        assert (done, stdout) == (code, ""), (args, err)
        assert only_line(err).startswith(f"easyrec predict: error: {message}"), (args, err)
    for path, message in [
        (tmp_path / "nope", f"{tmp_path / 'nope'}: no such checkpoint file or run directory"),
        (tmp_path / "corrupt.pt", f"{tmp_path / 'corrupt.pt'}: not a readable checkpoint ("),
    ]:
        done, _, err = easyrec_main("predict", path, "--input", rows, "--output", out)
        assert done == 1 and only_line(err).startswith(f"easyrec predict: error: {message}")
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    assert (tmp_path / "taken.csv").read_text() == "mine"


@pytest.mark.slow
def test_predict_through_the_real_cli(csv_run, easyrec_cli, tmp_path):
    root, expected = csv_run
    done = easyrec_cli("predict", str(root / "run"), "--input", str(root / "eval_rows.csv"), "--output", "p.parquet")
    assert done.returncode == 0, done.stderr
    assert np.abs(pq.read_table(tmp_path / "p.parquet")["prediction"].to_numpy() - expected).max() < 1e-6
    again = easyrec_cli("predict", str(root / "run"), "--input", str(root / "eval_rows.csv"), "--output", "p.parquet")
    assert again.returncode == 1
    assert (
        only_line(again.stderr) == "easyrec predict: error: p.parquet: already exists; pass --overwrite to replace it"
    )


def test_the_output_is_only_ever_a_regular_file_of_its_own(csv_run, easyrec_main, tmp_path):
    """--output never replaces a link, a directory or a device, --overwrite included, and a link planted at
    ``<output>.partial`` is removed, not written through."""
    root, expected = csv_run
    run, rows = root / "run", root / "eval_rows.csv"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "link.csv").symlink_to(victim)
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    (tmp_path / "folder.csv").mkdir()
    cases = [
        (tmp_path / "link.csv", "is a symbolic link; easyrec does not write through links, give the real path"),
        (tmp_path / "dangling.csv", "is a symbolic link; easyrec does not write through links, give the real path"),
        (tmp_path / "folder.csv", "already exists and is not a regular file"),
        (Path("/dev/null"), "already exists and is not a regular file"),
    ]
    for output, message in cases:
        for overwrite in ([], ["--overwrite"]):
            done, _, err = easyrec_main("predict", run, "--input", rows, "--output", output, *overwrite)
            assert done == 1 and only_line(err) == f"easyrec predict: error: {output}: {message}", err
    assert victim.read_text() == "precious" and not (tmp_path / "nowhere.csv").exists()
    assert (tmp_path / "folder.csv").is_dir() and not list((tmp_path / "folder.csv").iterdir())
    (tmp_path / "scores.csv.partial").symlink_to(victim)
    done, _, err = easyrec_main("predict", run, "--input", rows, "--output", tmp_path / "scores.csv")
    assert done == 0, err
    assert victim.read_text() == "precious" and not (tmp_path / "scores.csv.partial").exists()
    written = pv.read_csv(tmp_path / "scores.csv")["prediction"].to_numpy()
    assert np.abs(written - expected).max() < 1e-6
