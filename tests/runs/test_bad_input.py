"""Bad input that used to get through: non-finite options and data values, out-of-range seeds, an eval split whose
AUC cannot exist, a model larger than the machine's memory, bf16 on a device without native bf16."""

from __future__ import annotations

import subprocess
import sys

import pytest

from easyrec.config import validate
from easyrec.errors import ConfigError
from easyrec.optim import LazyAdam


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optimizer.lr=inf"], "optimizer.lr=inf: must be finite in float32"),
        (["optimizer.lr=1e308"], "optimizer.lr=1e+308: must be finite in float32"),
        (["optimizer.lr=nan"], "optimizer.lr=nan: must be finite in float32"),
        (["loss=focal", "loss.gamma=-inf"], "loss.gamma=-inf: must be finite in float32"),
        # a user's own component (no schema) is checked too, at any depth
        (["+model.extra={a:[1.0,inf]}"], "model.extra.a.1=inf: must be finite in float32"),
        (["seed=-1"], "seed=-1: must be in [0, 4294967295]"),
        (["seed=10000000000000000000"], "seed=10000000000000000000: must be in [0, 4294967295]"),
        (["data.seed=4294967296"], "data.seed=4294967296: must be in [0, 4294967295]"),
    ],
)
def test_non_finite_options_and_bad_seeds_are_refused(compose_train, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_train(*overrides))
    assert str(error.value).startswith(message)


def test_largest_seed_float32_sized_values_and_the_new_options_pass(compose_train):
    validate(compose_train("seed=4294967295", "optimizer.lr=3e38"))
    for precision in ("auto", "bf16_force"):
        validate(compose_train(f"trainer.precision={precision}", "trainer.memory_check=false", "data.non_finite=fill"))
    with pytest.raises(ConfigError, match="trainer.precision=fp8: must be one of: fp32, bf16, bf16_force, fp16, auto"):
        validate(compose_train("trainer.precision=fp8"))


def test_optimizers_refuse_an_lr_float32_cannot_hold():
    import torch

    params = [torch.nn.Parameter(torch.zeros(2))]
    for lr in (float("inf"), 1e308):
        with pytest.raises(ValueError, match="must be > 0 and finite in float32"):
            LazyAdam(params, lr=lr)


def test_data_refuses_a_negative_seed():
    from easyrec.data import SyntheticCTRData
    from tests.conftest import CRITEO_FEATURES

    with pytest.raises(ValueError, match=r"^seed=-1: must be in \[0, 4294967295\]"):
        SyntheticCTRData(CRITEO_FEATURES, num_rows=200, seed=-1)


# ------------------------------------------------------------------------------------- non-finite dense data


def write_csv_with(tmp_path, cell: str) -> tuple:
    """train.csv and eval.csv of the synthetic data (criteo layout), with ``cell`` in column I3 of train row 4."""
    import pyarrow.csv as pv

    from easyrec.data import generate_clicks

    table, _ = generate_clicks(400, seed=3)
    train, test = tmp_path / "train.csv", tmp_path / "eval.csv"
    pv.write_csv(table.slice(0, 300), train)
    pv.write_csv(table.slice(300), test)
    lines = train.read_text().splitlines()
    column = lines[0].replace('"', "").split(",").index("I3")
    cells = lines[4].split(",")
    cells[column] = cell
    lines[4] = ",".join(cells)
    train.write_text("\n".join(lines) + "\n")
    return train, test


def csv_data(train, test, **options):
    from easyrec.data import CSVData
    from tests.conftest import CRITEO_FEATURES

    return CSVData(CRITEO_FEATURES, str(train), str(test), **options)


@pytest.mark.parametrize("cell,shown", [("inf", "inf"), ("-inf", "-inf"), ("1e308", "1e+308")])
def test_an_infinite_dense_value_is_an_error_naming_file_column_and_row(tmp_path, cell, shown):
    from easyrec.errors import DataError

    train, test = write_csv_with(tmp_path, cell)
    with pytest.raises(DataError) as error:
        csv_data(train, test).setup()
    assert str(error.value) == (
        f"{train}: column 'I3', row 4: {shown} is not a finite float32 "
        "(data.non_finite=fill replaces such values with the feature's fill_value)"
    )


def test_non_finite_fill_takes_the_fill_value_and_counts(tmp_path, caplog):
    import math

    train, test = write_csv_with(tmp_path, "1e308")
    data = csv_data(train, test, non_finite="fill")
    with caplog.at_level("WARNING", logger="easyrec.data.features"):
        data.setup()
    assert f"{train}: column 'I3': 1 infinite values replaced by fill_value 0 (data.non_finite=fill)" in caplog.text
    assert caplog.text.count("infinite values replaced") == 1  # fitting the statistics does not count them again
    dense = data.train.dense
    assert bool(dense.isfinite().all())
    # I3 is log1p-transformed and standardized: row 4 holds fill_value 0 -> log1p(0) = 0, standardized
    column = data.spec.dense_names.index("I3")
    expected = (0.0 - data.encoder.mean["I3"]) / data.encoder.std["I3"]
    assert math.isclose(float(dense[3, column]), expected, rel_tol=1e-5)


def test_non_finite_mode_is_part_of_the_cache_key(tmp_path):
    from easyrec.errors import DataError

    train, test = write_csv_with(tmp_path, "inf")
    csv_data(train, test, non_finite="fill", cache_dir=str(tmp_path / "cache")).setup()
    with pytest.raises(DataError, match="row 4: inf is not a finite float32"):
        csv_data(train, test, cache_dir=str(tmp_path / "cache")).setup()  # no cache hit with the filled encoding


def test_bad_non_finite_option_is_refused(compose_train):
    with pytest.raises(ConfigError, match="data.non_finite=drop: must be one of: error, fill"):
        validate(compose_train("data.non_finite=drop"))


# ------------------------------------------------------------------------------------- memory check

TINY = ["data.num_rows=1000", "data.batch_size=128", "model.embedding_dim=4", "logger=none", "trainer.max_steps=2"]


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if "error:" in line]


def test_training_bytes_count_weights_dense_gradients_and_optimizer_state():
    import torch
    from torch import nn

    from easyrec.memory import training_bytes

    with torch.device("meta"):  # nothing is allocated
        model = nn.Sequential(nn.Embedding(1000, 8, sparse=True), nn.Linear(8, 4))
    table, linear = 1000 * 8 * 4, (8 * 4 + 4) * 4  # bytes of the float32 parameters
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    assert training_bytes(model, sgd) == table + 2 * linear  # a sparse gradient holds a batch's rows only
    adam = torch.optim.Adam(model[1].parameters())
    assert training_bytes(model, adam) == table + 2 * linear + 2 * linear
    adagrad = torch.optim.Adagrad(model.parameters())
    assert training_bytes(model, adagrad) == 2 * table + 3 * linear


@pytest.mark.slow
def test_a_model_larger_than_memory_is_refused_in_one_line(easyrec_main, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = easyrec_main("train", *TINY, "model.hidden_units=[100000000]")
    assert code == 2
    [line] = error_lines(err)
    assert line.startswith("easyrec train: error: model: DeepFM needs about ")
    assert "parameters, their gradients and the Adam state, more than the " in line
    assert line.endswith("or skip this check with trainer.memory_check=false")


@pytest.mark.slow
def test_memory_check_false_skips_the_check(easyrec_main, tmp_path, monkeypatch):
    import easyrec.memory

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(easyrec.memory, "available_bytes", lambda device: 1000)  # a machine of 1000 bytes
    code, _, err = easyrec_main("train", *TINY, "model.hidden_units=[8]")
    assert code == 2 and "more than the 0.0 GiB available on cpu" in error_lines(err)[0]
    code, _, err = easyrec_main("train", *TINY, "model.hidden_units=[8]", "trainer.memory_check=false")
    assert code == 0, err
    [metrics] = tmp_path.rglob("metrics.json")  # the run trained to the end
    assert '"step": 2' in metrics.read_text()


# ------------------------------------------------------------------------------------- bf16 without native bf16


@pytest.fixture(scope="module")
def small_data():
    from easyrec.data import SyntheticCTRData
    from tests.conftest import CRITEO_FEATURES

    data = SyntheticCTRData(CRITEO_FEATURES, num_rows=2000, batch_size=256, seed=0)
    data.setup()
    return data


def bf16_trainer(data, output_dir, precision):
    """A trainer of ``precision`` and the dtypes its first layer's output had in training (filled by ``fit``)."""
    import torch

    from easyrec.losses import BinaryCrossEntropy
    from easyrec.models import DeepFM
    from easyrec.trainer import Trainer

    model = DeepFM(data.input_spec, embedding_dim=4, hidden_units=[16])
    trainer = Trainer(
        model=model,
        data=data,
        optimizer=torch.optim.Adam(model.parameters()),
        loss=BinaryCrossEntropy(),
        output_dir=output_dir,
        max_steps=2,
        progress_bar=False,
        device="cpu",
        precision=precision,
    )
    seen = set()
    model.mlp.layers[0].register_forward_hook(lambda m, i, output: seen.add(output.dtype) if m.training else None)
    return trainer, seen


def test_native_bf16_probe_reads_the_cpu_flags():
    from pathlib import Path

    import torch

    from easyrec.trainer import native_bf16

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists() or torch.cpu.get_capabilities().get("architecture") != "x86_64":
        pytest.skip("reads the x86 flags of /proc/cpuinfo")
    flags = set(cpuinfo.read_text().split())
    assert native_bf16(torch.device("cpu")) == bool({"avx512_bf16", "amx_bf16"} & flags)


@pytest.mark.parametrize(
    "precision,native,used",
    [
        ("bf16", False, "fp32"),
        ("bf16", True, "bf16"),
        ("bf16_force", False, "bf16"),
        ("auto", False, "fp32"),
        ("auto", True, "bf16"),
        ("fp32", True, "fp32"),
    ],
)
def test_bf16_falls_back_to_fp32_without_native_bf16_unless_forced(
    small_data, tmp_path, monkeypatch, caplog, precision, native, used
):
    import json

    import torch

    import easyrec.trainer

    monkeypatch.setattr(easyrec.trainer, "native_bf16", lambda device: native)
    with caplog.at_level("WARNING", logger="easyrec.trainer"):
        trainer, seen = bf16_trainer(small_data, tmp_path, precision)
    trainer.fit()
    assert trainer.precision == used
    assert seen == {torch.bfloat16 if used == "bf16" else torch.float32}
    assert json.loads((tmp_path / "metrics.json").read_text())["precision"] == used
    fell_back = precision == "bf16" and not native
    assert ("training in fp32 instead (trainer.precision=bf16_force: bf16 anyway)" in caplog.text) == fell_back
    if fell_back:
        assert "cpu has no native bf16 (no AVX512-BF16 or AMX)" in caplog.text and "18x" in caplog.text


def test_bf16_on_this_machine_is_used_only_where_native(small_data, tmp_path):
    """No probe replaced: the run trains in bf16 exactly when this machine has native bf16."""
    import torch

    from easyrec.trainer import native_bf16

    trainer, seen = bf16_trainer(small_data, tmp_path, "bf16")
    trainer.fit()
    native = native_bf16(torch.device("cpu"))
    assert trainer.precision == ("bf16" if native else "fp32")
    assert seen == {torch.bfloat16 if native else torch.float32}


# ------------------------------------------------------------------------------------- as a user meets them


@pytest.mark.slow
@pytest.mark.parametrize(
    "override,message",
    [
        ("optimizer.lr=1e308", "optimizer.lr=1e+308: must be finite in float32 (|x| <= 3.403e+38)"),
        ("seed=-1", "seed=-1: must be in [0, 4294967295]"),
    ],
)
def test_bad_options_are_one_line_from_the_command(easyrec_cli, override, message):
    done = easyrec_cli("train", override, "logger=none")
    assert done.returncode == 2
    assert done.stderr.strip() == f"easyrec train: error: {message}"


@pytest.mark.slow
def test_an_infinite_value_in_a_csv_file_is_one_line_from_the_command(easyrec_main, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, test = write_csv_with(tmp_path, "inf")
    files = ["data=csv", f"data.train_path={train.name}", f"data.eval_path={test.name}"]
    code, _, err = easyrec_main("train", *files, *TINY[1:])
    assert code == 1
    assert error_lines(err) == [
        "easyrec train: error: train.csv: column 'I3', row 4: inf is not a finite float32 "
        "(data.non_finite=fill replaces such values with the feature's fill_value)"
    ]
    code, _, err = easyrec_main("train", *files, *TINY[1:], "data.non_finite=fill")
    assert code == 0, err


@pytest.mark.slow
@pytest.mark.parametrize("source", ["csv", "parquet"])
def test_a_missing_data_file_is_reported_before_torch_loads(tmp_path, source):
    # torch takes 2 s or more to import: a data error that comes before it comes in about a second
    probe = (
        "import sys\n"
        "from easyrec.cli import main\n"
        "try:\n"
        f"    main(['train', 'data={source}', 'data.train_path=nope.{source}', 'data.eval_path=nope.{source}'])\n"
        "except SystemExit as stop:\n"
        "    print('exit', stop.code, 'torch loaded' if 'torch' in sys.modules else 'torch not loaded')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["exit", "1", "torch", "not", "loaded"], done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"easyrec train: error: nope.{source}: file not found (relative paths are taken from {tmp_path})"
    )
    assert not (tmp_path / "mlflow.db").exists()
