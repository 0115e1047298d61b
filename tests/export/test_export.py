"""``easyrec export``: the exported model, loaded in a fresh process that never imports easyrec, gives the trainer's
predictions from raw feature values (TorchScript and MLflow pyfunc); hashing parity; bad inputs are one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest
import torch
from hydra.utils import instantiate
from mlflow.models import Model

from easyrec.data import generate_clicks
from easyrec.data.hashing import fnv1a64, splitmix64
from easyrec.export.serving import fnv1a64 as script_fnv1a64
from easyrec.export.serving import splitmix64 as script_splitmix64
from easyrec.export.serving import unsigned_mod
from easyrec.run import train
from easyrec.saved_run import SavedRun
from tests.conftest import QUICK, compose_config, copy_mlflow_store

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [*QUICK[1:], "trainer.progress_bar=false", "trainer.num_threads=1", "trainer.max_epochs=1"]
VOCAB = ",".join(f"C{i}" for i in range(3, 27))
# C1, C2 hashed into 97 buckets, C3..C26 by vocabulary
FIELDS = (
    f"data.features.categorical=[{{names:[C1,C2],encoding:hash,num_buckets:97}},{{names:[{VOCAB}],encoding:vocab}}]"
)
UNSEEN = ["日本語-é", "zzz-unseen", "🙂"]


def only_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def trainer_predictions(run: Path) -> np.ndarray:
    """sigmoid(model) over the eval batches of the data set up as training sets it up: ``(N,)``."""
    saved = SavedRun.load(run)
    data = instantiate(saved.config.data, _convert_="all")
    data.setup()
    with torch.no_grad():
        return torch.cat([torch.sigmoid(saved.model(b.dense, b.sparse)) for b in data.eval_batches()]).numpy()


def with_holes(table: pa.Table, unseen: list) -> pa.Table:
    """``table`` with empty cells (rows 0-2: I1, C1, C3) and ids training never saw (rows 3-5: C1, C2, C3)."""
    for name, rows, values in [
        ("I1", [0, 1, 2], [None] * 3),
        ("C1", [0, 1, 2, 3, 4, 5], [None, None, None, *unseen]),
        ("C2", [3, 4, 5], unseen),
        ("C3", [0, 1, 2, 3, 4, 5], [None, None, None, *unseen]),
    ]:
        column = table[name].to_pylist()
        for row, value in zip(rows, values, strict=True):
            column[row] = value
        index = table.column_names.index(name)
        table = table.set_column(index, name, pa.array(column, type=table.schema.field(name).type))
    return table


@pytest.fixture(scope="module")
def int_run(tmp_path_factory):
    """Synthetic data as Parquet (integer ids), not tracked; eval rows with empty cells and unseen ids."""
    root = tmp_path_factory.mktemp("ints")
    table, _ = generate_clicks(6000, seed=5)
    pq.write_table(table.slice(0, 5000), root / "train.parquet")
    pq.write_table(with_holes(table.slice(5000), [2_000_000_000, -5, 123_456_789]), root / "eval.parquet")
    data = ["data=parquet", f"data.train_path={root}/train.parquet", f"data.eval_path={root}/eval.parquet"]
    train(compose_config(*data, FIELDS, *SMALL, "logger=none"), root / "run")
    return root, trainer_predictions(root / "run")


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory, mlflow_template):
    """The same on CSV files (ids read as strings), tracked in MLflow."""
    root = tmp_path_factory.mktemp("strings")
    table, _ = generate_clicks(6000, seed=6)
    string_ids = table.select([n for n in table.column_names if n.startswith("C")]).cast(
        pa.schema([pa.field(n, pa.string()) for n in table.column_names if n.startswith("C")])
    )
    for name in string_ids.column_names:
        table = table.set_column(table.column_names.index(name), name, string_ids[name])
    pv.write_csv(table.slice(0, 5000), root / "train.csv")
    pv.write_csv(with_holes(table.slice(5000), UNSEEN), root / "eval.csv")
    data = ["data=csv", f"data.train_path={root}/train.csv", f"data.eval_path={root}/eval.csv"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # MLflow keeps artifacts under ./mlruns
        uri = copy_mlflow_store(mlflow_template, root)
        train(compose_config(*data, FIELDS, *SMALL, f"logger.tracking_uri={uri}"), root / "run")
    return root, trainer_predictions(root / "run")


FRESH_TORCH = """
import sys, json
import numpy as np, pandas as pd, torch
export, eval_path, expected_path = sys.argv[1:4]
signature = json.load(open(f"{export}/signature.json"))
if eval_path.endswith(".csv"):
    frame = pd.read_csv(eval_path, dtype={name: str for name in signature["string_ids"]}, keep_default_na=False,
                        na_values={name: [""] for name in signature["dense"] + signature["int_ids"]})
else:
    frame = pd.read_parquet(eval_path)
model = torch.jit.load(f"{export}/model.pt")
dense = torch.tensor(frame[signature["dense"]].to_numpy(dtype=np.float64))
ints = frame[signature["int_ids"]]
int_ids = torch.tensor(np.where(ints.isna(), -2**63, ints.fillna(0)).astype(np.int64))
str_ids = [frame[name].tolist() for name in signature["string_ids"]]
with torch.no_grad():
    got = model(dense, int_ids, str_ids)[:, 0].numpy()
expected = np.load(expected_path)
difference = float(np.abs(got - expected).max())
print("max abs diff", difference)
assert got.shape == expected.shape and difference < 1e-6, difference
assert not any(m == "easyrec" or m.startswith("easyrec.") for m in sys.modules), "easyrec was imported"
"""

FRESH_PYFUNC = """
import sys
import numpy as np, pandas as pd, mlflow.pyfunc
model_uri, eval_path, expected_path, columns = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
frame = pd.read_csv(eval_path, dtype={name: str for name in columns}) if eval_path.endswith(".csv") else (
    pd.read_parquet(eval_path))
predictions = mlflow.pyfunc.load_model(model_uri).predict(frame)
assert list(predictions.columns) == ["prediction"], list(predictions.columns)
difference = float(np.abs(predictions["prediction"].to_numpy() - np.load(expected_path)).max())
print("max abs diff", difference)
assert difference < 1e-6, difference
assert not any(m == "easyrec" or m.startswith("easyrec.") for m in sys.modules), "easyrec was imported"
"""


SCRIPTS = """
import json, sys
for script, args in json.load(sys.stdin):
    sys.argv = ["-c", *args]
    exec(compile(script, "<script>", "exec"), {"__name__": "__main__"})
"""


def fresh(*scripts: tuple[str, list], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run each ``(script, args)`` in turn, with ``args`` as its ``sys.argv[1:]``, in one new Python (one start of
    torch, pandas and MLflow), from a directory where easyrec's checkout is not on the path."""
    todo = [(textwrap.dedent(script), list(map(str, args))) for script, args in scripts]
    return subprocess.run(
        [sys.executable, "-c", SCRIPTS],
        input=json.dumps(todo),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.mark.slow
@pytest.mark.parametrize("which", ["int_run", "csv_run"])
def test_the_exported_model_gives_the_trainers_predictions_in_a_fresh_process(which, request, easyrec_main):
    root, expected = request.getfixturevalue(which)
    eval_path = root / ("eval.csv" if which == "csv_run" else "eval.parquet")
    np.save(root / "expected.npy", expected)
    code, out, err = easyrec_main("export", root / "run", "--no-mlflow")
    assert code == 0, err
    export = root / "run" / "export" / "best"
    signature = json.loads((export / "signature.json").read_text())
    kind = "string_ids" if which == "csv_run" else "int_ids"
    assert signature[kind] == [f"C{i}" for i in range(1, 27)] and signature["outputs"] == ["prediction"]
    columns = ",".join(signature[kind])
    done = fresh(
        (FRESH_TORCH, [export, eval_path, root / "expected.npy"]),
        (FRESH_PYFUNC, [export / "mlflow_model", eval_path, root / "expected.npy", columns]),
        cwd=root,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert done.stdout.count("max abs diff") == 2, done.stdout  # both scripts ran


@pytest.mark.slow
def test_the_model_is_logged_to_the_runs_mlflow_run_and_served(csv_run, easyrec_main, monkeypatch):
    root, expected = csv_run
    np.save(root / "expected.npy", expected)
    monkeypatch.chdir(root)
    output = root / "logged"
    code, out, err = easyrec_main("export", root / "run", "--output", output)
    assert code == 0, err
    signature = json.loads((output / "signature.json").read_text())
    run_id = signature["run_id"]
    assert f"runs:/{run_id}/model" in out
    model = Model.load(output / "mlflow_model")
    columns = [*signature["dense"], *signature["string_ids"]]
    assert model.signature.inputs.input_names() == columns and model.signature.outputs.input_names() == ["prediction"]
    assert {c["name"]: c["type"] for c in json.loads(model.signature.to_dict()["inputs"])} == {
        **{name: "any" for name in signature["dense"]},
        **{name: "string" for name in signature["string_ids"]},
    }
    assert list(model.load_input_example(output / "mlflow_model").columns) == columns
    script = f"import mlflow\nmlflow.set_tracking_uri('sqlite:///{root}/mlflow.db')\n" + FRESH_PYFUNC
    ids = ",".join(signature["string_ids"])
    done = fresh((script, [f"runs:/{run_id}/model", root / "eval.csv", root / "expected.npy", ids]), cwd=root)
    assert done.returncode == 0, done.stderr + done.stdout

    # `mlflow models serve` on the logged model answers a request of raw rows with `easyrec predict`'s scores
    rows = pd.read_csv(root / "eval.csv", dtype={name: str for name in signature["string_ids"]}, nrows=8)
    rows.to_csv(root / "rows.csv", index=False)  # empty cells and unseen ids in rows 0-5
    code, _, err = easyrec_main(
        "predict", root / "run", "--input", root / "rows.csv", "--output", root / "rows.out.csv"
    )
    assert code == 0, err
    request = {
        "dataframe_split": {
            "columns": columns,
            "data": rows[columns].astype(object).where(rows[columns].notna(), None).values.tolist(),
        }
    }
    with served(f"runs:/{run_id}/model", f"sqlite:///{root}/mlflow.db", root) as url:
        answer = http_json(f"{url}/invocations", request)
    scores = [row["prediction"] for row in answer["predictions"]]
    assert np.abs(np.array(scores) - pd.read_csv(root / "rows.out.csv")["prediction"].to_numpy()).max() < 1e-6


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_json(url: str, body: dict | None = None, timeout: float = 60) -> dict:
    """GET ``url`` (POST ``body`` as JSON when given) and return the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        text = answer.read().decode()
    return json.loads(text) if text.strip() else {}


@contextmanager
def served(model_uri: str, tracking_uri: str, cwd: Path, wait: float = 240) -> Iterator[str]:
    """``mlflow models serve`` of ``model_uri`` on loopback in this Python's environment: its base URL; skips the
    test, with the server's last words, when it does not start."""
    port, bin_dir, path = free_port(), Path(sys.executable).parent, os.environ.get("PATH", "")
    log_path = cwd / f"serve-{port}.log"
    with log_path.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=cwd,
            # the server runs `uvicorn` from PATH: this Python's, as in an activated venv
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{bin_dir}{os.pathsep}{path}"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the server and its workers, stopped together below
        )  # fmt: skip
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                http_json(f"http://127.0.0.1:{port}/ping", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    last = (log_path.read_text().strip().splitlines() or ["no output"])[-1]
                    pytest.skip(f"mlflow models serve did not start (exit code {server.poll()}): {last}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def test_hashing_matches_the_training_hashes():
    values = np.random.default_rng(0).integers(-(2**63), 2**63 - 1, size=2000, dtype=np.int64)
    values = np.concatenate([values, [0, -1, 1, 2**63 - 1, -(2**63), -5, 7]])
    for buckets in (97, 1 << 20, 1_000_003):
        expected = (splitmix64(values) % np.uint64(buckets)).astype(np.int64)
        got = unsigned_mod(script_splitmix64(torch.from_numpy(values)), buckets, (1 << 64) % buckets)
        np.testing.assert_array_equal(got.numpy(), expected)
    strings = ["", "a", "abc", "日本語", "é", "🙂x", "Ω" * 40, "mixed ascii и кириллица"]
    np.testing.assert_array_equal(script_fnv1a64(strings).numpy(), fnv1a64(pa.array(strings)).astype(np.int64))
    scripted = torch.jit.script(script_fnv1a64)  # TorchScript strings iterate over their UTF-8 bytes
    np.testing.assert_array_equal(scripted(strings).numpy(), fnv1a64(pa.array(strings)).astype(np.int64))


def test_bad_inputs_are_one_line_and_overwrite_nothing(int_run, easyrec_main, tmp_path):
    root, _ = int_run
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine").write_text("mine")
    cases = [
        ([tmp_path / "nope"], 1, f"{tmp_path / 'nope'}: no such checkpoint file or run directory"),
        ([tmp_path / "corrupt.pt"], 1, f"{tmp_path / 'corrupt.pt'}: not a readable checkpoint ("),
        ([root / "run", "--output", taken], 1, f"{taken}: already exists; pass --overwrite to replace it"),
        ([root / "run", "--checkpoint", "first"], 2, "argument --checkpoint: invalid choice: 'first'"),
    ]
    for args, code, message in cases:
        done, out, err = easyrec_main("export", *args, "--no-mlflow")
        assert (done, out) == (code, ""), (args, err)
        assert only_line(err).startswith(f"easyrec export: error: {message}"), (args, err)
    assert (taken / "mine").read_text() == "mine" and not list(tmp_path.glob("*.partial-*"))
    done, _, err = easyrec_main("export", root / "run", "--output", taken, "--overwrite", "--no-mlflow")
    assert done == 0, err
    assert sorted(p.name for p in taken.iterdir()) == ["mlflow_model", "model.pt", "signature.json"]


def test_old_checkpoints_without_kinds_infer_them():
    from easyrec.data.features import FeatureEncoder, FeatureSpec

    spec = FeatureSpec.from_config(
        {"categorical": [{"names": ["a"]}, {"names": ["b"]}, {"names": ["h"], "encoding": "hash", "num_buckets": 8}]}
    )
    encoder = FeatureEncoder(spec)
    encoder.load_state_dict({"vocabularies": {"a": [3, 1], "b": ["x"]}, "mean": {}, "std": {}})
    assert encoder.kinds == {"a": "int", "b": "string", "h": "string"}
