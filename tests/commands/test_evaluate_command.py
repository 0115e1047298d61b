"""``easyrec evaluate``: a checkpoint's metrics on its run's eval split are the ones training logged, exactly;
other data through overrides; JSON, MLflow; every bad input is one line and overwrites nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.csv as pv
import pytest
import torch
from mlflow import MlflowClient

from easyrec.checkpoints import find_checkpoint, load_checkpoint
from easyrec.data import generate_clicks
from easyrec.metrics import binary_metrics
from easyrec.run import train
from easyrec.saved_run import SavedRun
from tests.conftest import QUICK, compose_config, copy_mlflow_store

SMALL = [*QUICK, "trainer.progress_bar=false", "trainer.num_threads=1"]


def only_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def files_of(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, mlflow_template) -> Path:
    """A synthetic DeepFM run tracked in MLflow, evaluated every 10 steps; the monitor picks the lowest AUC, so that
    best.pt (step 10) and the last step checkpoint (step 44) differ."""
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # MLflow keeps artifacts under ./mlruns
        overrides = ["trainer.max_epochs=2", "trainer.eval_every_n_steps=10", "trainer.monitor_mode=min"]
        overrides.append(f"logger.tracking_uri={copy_mlflow_store(mlflow_template, root)}")
        train(compose_config(*SMALL, *overrides), root / "run")
    return root / "run"


def store(root: Path) -> str:
    return f"sqlite:///{root}/mlflow.db"


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> Path:
    """A DeepFM run on CSV files (ids read as strings, vocabularies of strings), not tracked."""
    root = tmp_path_factory.mktemp("csv")
    table, _ = generate_clicks(7000, seed=3)
    for name, part in (("train", table.slice(0, 5000)), ("eval", table.slice(5000, 1000)), ("next", table.slice(6000))):
        pv.write_csv(part, root / f"{name}.csv")
    data = ["data=csv", f"data.train_path={root}/train.csv", f"data.eval_path={root}/eval.csv"]
    train(compose_config(*data, *SMALL[1:], "logger=none", "trainer.max_epochs=2"), root / "run")
    return root / "run"


def test_a_run_directory_gives_its_best_or_its_latest_checkpoint(tmp_path):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    for name in ("step-000000010.pt", "step-000000020.pt"):
        (directory / name).write_bytes(b"x")
    assert find_checkpoint(tmp_path, "best") == directory / "step-000000020.pt"  # no best.pt: the latest
    (directory / "best.pt").write_bytes(b"x")
    assert find_checkpoint(tmp_path, "best") == directory / "best.pt"
    assert find_checkpoint(tmp_path, "latest") == find_checkpoint(tmp_path) == directory / "step-000000020.pt"
    assert find_checkpoint(directory / "step-000000010.pt", "best") == directory / "step-000000010.pt"


@pytest.mark.parametrize("which", ["best", "latest"])
def test_evaluate_reproduces_the_metrics_training_logged_and_logs_them_to_mlflow(tracked_run, easyrec_main, which):
    state = load_checkpoint(tracked_run, which)
    code, out, err = easyrec_main("evaluate", tracked_run, "--checkpoint", which)
    assert code == 0, err
    report = json.loads((tracked_run / f"evaluate-{Path(state['path']).stem}.json").read_text())
    assert report["metrics"] == state["metrics"]  # exactly: same weights, encoding, eval batches and loop
    assert set(state["metrics"]) == {"eval/loss", "eval/auc", "eval/logloss", "eval/oracle_auc", "eval/oracle_logloss"}
    assert report["step"] == state["step"] and report["data"] == "synthetic eval split (seed 42)"
    assert "eval/auc" in out and f"{state['metrics']['eval/auc']:.6f}" in out
    client = MlflowClient(store(tracked_run.parent))
    run = client.get_run(state["run"]["id"])
    assert run.info.status == "FINISHED"
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval/auc")}
    evaluated = {
        m.value for m in client.get_metric_history(run.info.run_id, "evaluate/eval/auc") if m.step == state["step"]
    }
    assert evaluated == {logged[state["step"]]} == {report["metrics"]["eval/auc"]}
    assert run.data.tags["easyrec.evaluate.data"] == "synthetic eval split (seed 42)"
    assert run.data.tags["easyrec.evaluate.checkpoint"] == state["path"]


def test_best_and_latest_hold_the_metrics_of_their_step(tracked_run):
    best, latest = load_checkpoint(tracked_run, "best"), load_checkpoint(tracked_run, "latest")
    assert (best["step"], latest["step"]) == (10, 44) and best["metrics"] != latest["metrics"]
    assert best["metrics"] == best["history"][best["step"]] == best["best"]["metrics"]
    assert latest["metrics"] == latest["history"][latest["step"]]
    assert SavedRun.load(tracked_run, which="latest").evaluate() == latest["metrics"]


def test_the_default_output_is_numbered_and_an_explicit_one_is_never_overwritten(tracked_run, easyrec_main, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tracked_run, copy, ignore=shutil.ignore_patterns("evaluate-*"))
    for _ in range(2):
        code, _, err = easyrec_main("evaluate", copy, "--no-mlflow")
        assert code == 0, err
    assert sorted(p.name for p in copy.glob("evaluate-*.json")) == ["evaluate-best-2.json", "evaluate-best.json"]
    output = tmp_path / "metrics.json"
    output.write_text("mine")
    code, _, err = easyrec_main("evaluate", copy, "--output", output, "--no-mlflow")
    assert code == 1
    assert only_line(err) == f"easyrec evaluate: error: {output}: already exists; pass --overwrite to replace it"
    assert output.read_text() == "mine"
    code, _, err = easyrec_main("evaluate", copy, "--output", output, "--no-mlflow", "--overwrite")
    assert code == 0, err
    assert json.loads(output.read_text())["metrics"] == load_checkpoint(copy, "best")["metrics"]


def test_a_run_not_in_the_store_is_a_warning_and_no_store_is_created(tracked_run, easyrec_main, tmp_path):
    elsewhere = tmp_path / "nope.db"
    code, _, err = easyrec_main(
        "evaluate", tracked_run, f"logger.tracking_uri=sqlite:///{elsewhere}", "--output", tmp_path / "m.json"
    )
    assert code == 0
    assert only_line(err).startswith(f"easyrec evaluate: warning: no MLflow store sqlite:///{elsewhere} here")
    assert not elsewhere.exists() and (tmp_path / "m.json").is_file()


def test_evaluate_a_csv_run_on_other_files_with_its_own_encoding(csv_run, easyrec_main, tmp_path):
    root = csv_run.parent
    state = load_checkpoint(csv_run, "best")
    (root / "train.csv").rename(tmp_path / "train.csv")  # not needed: nothing is refitted
    shutil.copy(root / "eval.csv", tmp_path / "same.csv")
    try:
        code, _, err = easyrec_main(
            "evaluate", csv_run, f"data.eval_path={tmp_path / 'same.csv'}", "--output", tmp_path / "same.json"
        )
        assert code == 0, err
        same = json.loads((tmp_path / "same.json").read_text())
        assert same["metrics"] == state["metrics"] and same["data"] == str(tmp_path / "same.csv")
        saved = SavedRun.load(csv_run, [f"data.eval_path={root / 'next.csv'}", "data.eval_batch_size=100"])
        metrics = saved.evaluate()
    finally:
        (tmp_path / "train.csv").rename(root / "train.csv")
    assert saved.data.train is None and len(saved.data.eval) == 1000
    assert metrics != state["metrics"]
    # by hand: the checkpoint's encoding (vocabularies of strings) of the CSV read as training reads it
    table = saved.source.read(root / "next.csv")
    split = saved.encoder.encode(table, "next.csv")
    with torch.no_grad():
        probabilities = torch.sigmoid(saved.model(split.dense, split.sparse))
    expected = binary_metrics(probabilities, split.labels)
    assert metrics["eval/auc"] == pytest.approx(expected["auc"], abs=1e-6)
    assert metrics["eval/logloss"] == pytest.approx(expected["logloss"], abs=1e-6)


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=multi_task", "model.expert_units=[16]", "model.tower_units=[8]"],
        ["experiment=multiclass"],
        ["experiment=retrieval", "model.hidden_units=[16]"],
    ],
    ids=["multi_task", "multiclass", "retrieval"],
)
def test_every_kind_of_head_is_reproduced(tmp_path, overrides):
    settings = [*overrides, *QUICK[:2], "model.embedding_dim=4", "logger=none", "trainer.progress_bar=false"]
    train(compose_config(*settings, "trainer.max_steps=8", "trainer.num_threads=1"), tmp_path)
    state = load_checkpoint(tmp_path, "best")
    assert SavedRun.load(tmp_path).evaluate() == state["metrics"]


@pytest.fixture
def broken(tracked_run, tmp_path) -> dict[str, Path]:
    """Bad inputs: a corrupt and a foreign checkpoint, an eval file without column C3."""
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    table, _ = generate_clicks(200, seed=1)
    pv.write_csv(table.drop_columns(["C3"]), tmp_path / "no_c3.csv")
    return {"corrupt": corrupt, "foreign": foreign, "no_c3": tmp_path / "no_c3.csv"}


def test_bad_inputs_are_one_line_and_write_nothing(tracked_run, csv_run, broken, easyrec_main, tmp_path):
    cases = [
        ([tmp_path / "nope"], 1, f"{tmp_path / 'nope'}: no such checkpoint file or run directory"),
        ([broken["corrupt"]], 1, f"{broken['corrupt']}: not a readable checkpoint ("),
        ([broken["foreign"]], 1, f"{broken['foreign']}: not an easyrec checkpoint"),
        ([tracked_run, "--checkpoint", "worst"], 2, "argument --checkpoint: invalid choice: 'worst'"),
        ([tracked_run, "data.num_rows"], 2, "Error parsing override 'data.num_rows'"),
        ([tracked_run, "data.nrows=10"], 2, "data.nrows: no such key in the run's config"),
        ([tracked_run, "data.eval_batch_size=0"], 2, "data.eval_batch_size=0: must be > 0"),
        ([tracked_run, "model=wide_deep"], 2, "model=wide_deep: model is a config group"),
        ([tracked_run, "+data.extra=1"], 2, "+data.extra=1: only key=value overrides of existing keys"),
        (
            [tracked_run, "model.embedding_dim=8"],
            1,
            f"{tracked_run}/checkpoints/best.pt: does not fit the model its config builds (DeepFM): "
            "embedding.table.weight has shape",
        ),
        ([csv_run, f"data.eval_path={broken['no_c3']}"], 1, f"{broken['no_c3']}: column 'C3' not found; the columns"),
        ([csv_run, f"data.eval_path={tmp_path / 'none.csv'}"], 1, f"{tmp_path / 'none.csv'}: file not found"),
        (
            [csv_run, "data.features.categorical.0.names=[C1,extra]"],
            1,
            f"{csv_run}/checkpoints/best.pt: does not fit this data config: the checkpoint has no encoding of column "
            "'extra'",
        ),
        ([], 2, "the following arguments are required: PATH"),
    ]
    before = {run: files_of(run) for run in (tracked_run, csv_run)}
    for args, code, message in cases:
        done, out, err = easyrec_main("evaluate", *args, "--no-mlflow")
        assert (done, out) == (code, ""), (args, err)
        assert only_line(err).startswith(f"easyrec evaluate: error: {message}"), (args, err)
    assert {run: files_of(run) for run in (tracked_run, csv_run)} == before


@pytest.mark.slow
def test_evaluate_through_the_real_cli(tracked_run, easyrec_cli, tmp_path):
    state = load_checkpoint(tracked_run, "best")
    done = easyrec_cli("evaluate", str(tracked_run), "--output", "metrics.json", "--no-mlflow")
    assert done.returncode == 0, done.stderr
    assert "eval/oracle_auc" in done.stdout and "metrics written to metrics.json" in done.stdout
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"] == state["metrics"]
    helped = easyrec_cli("evaluate", "--help")
    assert helped.returncode == 0 and "--checkpoint {best,latest}" in helped.stdout
    listed = easyrec_cli("--help")
    assert "evaluate" in listed.stdout and "predict" in listed.stdout
