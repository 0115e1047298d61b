"""A checkpoint's config builds only trusted code: every ``_target_`` (and code path) at every depth is checked
before evaluate / predict / export / trainer.resume / trainer.init_from build anything; the user trusts more by name.

Each payload is first shown to be live (Hydra's instantiate of it writes the marker file), then shown refused
through the real commands, with the marker never written.
"""

from __future__ import annotations

import base64
import contextlib
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from easyrec.checkpoints import find_checkpoint, write_atomically
from easyrec.config.trust import ENV, TrustedTargets, check_stored_config, code_references, shipped_targets
from easyrec.errors import CheckpointError
from easyrec.run import train
from tests.conftest import QUICK, compose_config

SMALL = [*QUICK, "data.num_rows=3000", "trainer.progress_bar=false", "trainer.num_threads=1", "logger=none"]

pytestmark = pytest.mark.usefixtures("one_thread")


class WritesFile:
    """Unpickling it writes ``path`` (what a pickle payload does: any call, here a harmless one)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return Path.write_text, (self.path, "pwned")


def payloads(marker: Path) -> dict[str, tuple[str, dict]]:
    """name: (the config key a payload replaces, the payload), each writing ``marker`` when instantiated."""
    pickled = base64.b64encode(pickle.dumps(WritesFile(marker))).decode()
    buffer = io.BytesIO()
    np.save(buffer, np.array([WritesFile(marker)], dtype=object), allow_pickle=True)
    numpy_pickled = base64.b64encode(buffer.getvalue()).decode()
    path = {"_target_": "pathlib.Path", "_args_": [str(marker)]}

    def data_of(text: str) -> dict:  # a nested _args_ chain: io.BytesIO(base64.b64decode(text))
        return {"_target_": "io.BytesIO", "_args_": [{"_target_": "base64.b64decode", "_args_": [text]}]}

    return {
        "torch.load": ("model", {"_target_": "torch.load", "weights_only": False, "f": data_of(pickled)}),
        "numpy.load": ("model", {"_target_": "numpy.load", "allow_pickle": True, "file": data_of(numpy_pickled)}),
        "write_text": ("model", {"_target_": "pathlib.Path.write_text", "_args_": [path, "pwned"]}),
        # deep inside a node easyrec ships
        "nested": (
            "loss",
            {
                "_target_": "easyrec.losses.BinaryCrossEntropy",
                "extra": {"x": [{"_target_": "pathlib.Path.write_text", "_args_": [path, "pwned"]}]},
            },
        ),
        "partial": ("model", {"_target_": "pathlib.Path.write_text", "_partial_": True, "data": "pwned", "self": path}),
        "call_false": ("metrics", {"_target_": "pathlib.Path.write_text", "_call_": False, "_args_": [path, "pwned"]}),
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trust")
    train(compose_config(*SMALL), root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def own_model_run(tmp_path_factory) -> Path:
    """A run of a model of the user's own (tests.trusted_models.OwnDeepFM)."""
    root = tmp_path_factory.mktemp("own")
    train(compose_config(*SMALL, "model._target_=tests.trusted_models.OwnDeepFM"), root / "run")
    return root / "run"


def crafted(run_dir: Path, directory: Path, key: str, node: object) -> Path:
    """A copy of ``run_dir``'s latest checkpoint whose stored config has ``node`` at ``key``."""
    state = torch.load(find_checkpoint(run_dir, "latest"), weights_only=True)
    state["config"][key] = node
    # written with a new checksum, as anyone can: the checksum finds damage, it is no signature
    return write_atomically(state, directory / "crafted.pt")


def test_easyrec_ships_the_targets_of_its_config_groups_and_no_others():
    shipped = shipped_targets()
    assert {"easyrec.models.DeepFM", "torch.optim.Adam", "easyrec.losses.BinaryFocalLoss"} <= shipped
    assert "easyrec.early_stopping.examples.metric_above" in shipped  # early_stopping=custom's fn: a code path
    assert not {"torch.load", "numpy.load", "pathlib.Path.write_text", "os.system", "builtins.eval"} & shipped
    assert all(name.split(".")[0] in {"easyrec", "torch", "optuna", "hydra_plugins"} for name in shipped)


def test_a_trusted_module_trusts_what_is_below_it_and_nothing_beside_it(monkeypatch):
    monkeypatch.setenv(ENV, "other.pkg , ")
    trusted = TrustedTargets.from_env(["my_models", "tools.build"])
    assert "my_models.deep.TwoTower" in trusted and "tools.build" in trusted and "other.pkg.X" in trusted
    assert "my_models_evil.X" not in trusted and "my_models" not in TrustedTargets.from_env(["my_models.deep"])
    assert "tools.build_evil" not in trusted and "torch.load" not in trusted and None not in trusted
    assert "easyrec.models.DeepFM" in trusted


def test_every_target_at_every_depth_is_found(tmp_path):
    found = dict(code_references({"model": payloads(tmp_path / "m")["torch.load"][1]}))
    assert found == {
        "model._target_": "torch.load",
        "model.f._target_": "io.BytesIO",
        "model.f._args_[0]._target_": "base64.b64decode",
    }
    custom = {"_target_": "easyrec.early_stopping.CustomStop", "fn": "os.system"}
    assert dict(code_references({"early_stopping": custom}))["early_stopping.fn"] == "os.system"


@pytest.mark.parametrize("name", ["torch.load", "numpy.load", "write_text", "nested", "partial"])
def test_each_payload_is_live_when_built_without_the_check(name, tmp_path):
    marker = tmp_path / "pwned.txt"
    key, node = payloads(marker)[name]
    if name == "nested":
        node = node["extra"]["x"][0]
    with contextlib.suppress(Exception):  # torch.load runs the pickle, then finds no checkpoint in it
        built = instantiate(node)
        if name == "partial":
            built()
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("name", ["torch.load", "numpy.load", "write_text", "nested", "partial", "call_false"])
@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_a_payload_in_a_checkpoint_is_refused_by_every_command_and_runs_nothing(
    name, command, run_dir, tmp_path, easyrec_main
):
    marker = tmp_path / "pwned.txt"
    key, node = payloads(marker)[name]
    checkpoint = crafted(run_dir, tmp_path, key, node)
    extra = {
        "evaluate": ["--output", tmp_path / "m.json"],
        "export": ["--output", tmp_path / "export"],
        "predict": ["--input", tmp_path / "in.csv", "--output", tmp_path / "out.csv"],
    }[command]
    (tmp_path / "in.csv").write_text("I1\n1\n")
    code, out, err = easyrec_main(command, checkpoint, *extra)
    assert code == 1 and "Traceback" not in err
    [line] = err.strip().splitlines()
    first = next(k for k, t in code_references({key: node}) if t not in TrustedTargets.from_env())
    target = dict(code_references({key: node}))[first]
    assert line == (
        f"easyrec {command}: error: {checkpoint}: {first}={target} is not a component easyrec ships, so a config read "
        f"from a file may not build it; if you trust this file's code, pass --trust-target {target} "
        f"(or set {ENV}={target})"
    )
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crafted.pt", "in.csv"]


def test_a_code_path_an_interpolation_and_a_target_that_is_no_name_are_refused(tmp_path):
    trusted = TrustedTargets.from_env()
    custom = {"_target_": "easyrec.early_stopping.CustomStop", "fn": "os.system", "params": {}}
    with pytest.raises(CheckpointError, match=r"^x.pt: early_stopping.fn=os.system is not a component"):
        check_stored_config({"early_stopping": custom}, "x.pt", trusted)
    decoded = "${oc.decode:'{_target_: os.system, _args_: [touch /tmp/x]}'}"
    with pytest.raises(CheckpointError, match=r"^x.pt: config key model.hidden_units\[0\] holds an interpolation"):
        check_stored_config(
            {"model": {"_target_": "easyrec.models.DeepFM", "hidden_units": [decoded]}}, "x.pt", trusted
        )
    with pytest.raises(CheckpointError, match=r"^x.pt: model._target_=\['os.system'\] is not a component"):
        check_stored_config({"model": {"_target_": ["os.system"]}}, "x.pt", trusted)
    check_stored_config(
        {"early_stopping": {**custom, "fn": "easyrec.early_stopping.examples.metric_above"}}, "x", trusted
    )


def test_a_model_of_the_users_own_evaluates_once_trusted(own_model_run, tmp_path, easyrec_main, monkeypatch):
    code, _, err = easyrec_main("evaluate", own_model_run, "--no-mlflow", "--output", tmp_path / "a.json")
    assert code == 1
    assert "model._target_=tests.trusted_models.OwnDeepFM is not a component easyrec ships" in err
    assert "--trust-target tests.trusted_models.OwnDeepFM" in err and not (tmp_path / "a.json").exists()
    for i, trust in enumerate(["tests.trusted_models", "tests.trusted_models.OwnDeepFM", "tests"]):
        code, out, err = easyrec_main(
            "evaluate", own_model_run, "--no-mlflow", "--trust-target", trust, "--output", tmp_path / f"{i}.json"
        )
        assert code == 0, err
        assert "eval/auc" in out
    monkeypatch.setenv(ENV, "numpy,tests.trusted_models")
    code, _, err = easyrec_main(
        "predict", own_model_run, "--input", tmp_path / "in.csv", "--output", tmp_path / "o.csv"
    )
    assert "is not a component" not in err  # trusted; the input is missing
    assert err.startswith("easyrec predict: error:") and "in.csv" in err


def test_train_trusts_its_own_config_when_resuming_and_refuses_a_crafted_init_from(own_model_run, run_dir, tmp_path):
    marker = tmp_path / "pwned.txt"
    # its own run, resumed with the same command line: the user's own model is trusted by that command line
    resumed = compose_config(
        *SMALL,
        "model._target_=tests.trusted_models.OwnDeepFM",
        "trainer.max_epochs=2",
        f"trainer.resume={find_checkpoint(own_model_run)}",
    )
    train(resumed, tmp_path / "resumed")
    key, node = payloads(marker)["write_text"]
    checkpoint = crafted(run_dir, tmp_path, "metrics", node)  # a key an exact resume does not compare
    for option in ("init_from", "resume"):
        with pytest.raises(CheckpointError, match=rf"^{checkpoint}: metrics._target_=pathlib.Path.write_text is not"):
            train(compose_config(*SMALL, f"trainer.{option}={checkpoint}"), tmp_path / option)
    assert not marker.exists()
