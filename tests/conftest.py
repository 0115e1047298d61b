"""Shared fixtures: compose easyrec's config with Hydra's compose API, run the real CLI."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

# Small and quick: every CLI test run uses these unless it overrides them.
QUICK = ["data.num_rows=6000", "data.batch_size=256", "model.hidden_units=[32]", "model.embedding_dim=4"]
# The synthetic data's features (conf/data/features/criteo.yaml), for tests that build components in Python.
CRITEO_FEATURES = {
    "dense": [{"names": [f"I{i}" for i in range(1, 14)], "transform": "log1p", "standardize": True}],
    "categorical": [{"names": [f"C{i}" for i in range(1, 27)], "encoding": "vocab"}],
}


def options(group: str) -> list[str]:
    """The options of config group ``group`` (the names of ``conf/<group>/*.yaml``), sorted: tests take their lists
    of options from here, so that an option added to ``conf/`` is tested without editing a list."""
    return sorted(
        p.name[:-5] for p in resources.files("easyrec.conf").joinpath(group).iterdir() if p.name.endswith(".yaml")
    )


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: as fast for small models, and 50x less slow when other jobs share the
    CPUs. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """XDG_CACHE_HOME in a tmp dir for the whole session, so that the configs' ``data.cache_dir`` (in this process
    and in the CLI processes the tests start, which inherit it) never writes to the real ``~/.cache``."""
    directory = tmp_path_factory.mktemp("cache-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(directory))
        yield directory


_COMPOSED: dict[tuple[str, ...], DictConfig] = {}


def compose_config(*overrides: str) -> DictConfig:
    """The composed ``train`` config with ``overrides``: a copy of the one composed the first time (composing takes
    a quarter of a second, and the same overrides are composed by many tests)."""
    if overrides not in _COMPOSED:
        with initialize_config_module(config_module="easyrec.conf", version_base="1.3"):
            _COMPOSED[overrides] = compose(config_name="train", overrides=list(overrides))
    return copy.deepcopy(_COMPOSED[overrides])


@pytest.fixture
def compose_train() -> Callable[..., DictConfig]:
    """``compose_train("optimizer=sgd", ...)`` -> the composed ``train`` config."""
    return compose_config


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, created once: MLflow's creation of a store's tables (its migrations) takes
    seconds, a copy of this file milliseconds. Use ``copy_mlflow_store`` or the ``mlflow_store`` fixture."""
    from mlflow import MlflowClient

    directory = tmp_path_factory.mktemp("mlflow-template")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)  # the store's default artifact root, ./mlruns, is made where it is created
        MlflowClient(f"sqlite:///{directory}/mlflow.db").search_experiments()
    return directory / "mlflow.db"


def copy_mlflow_store(template: Path, directory: Path) -> str:
    """``directory/mlflow.db``: a copy of the empty store ``template`` (what ``easyrec train`` started in
    ``directory`` would create there, before its first run); return its tracking URI."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, directory / "mlflow.db")
    return f"sqlite:///{directory}/mlflow.db"


@pytest.fixture
def stores(mlflow_template: Path) -> Callable[..., None]:
    """``stores(root, ...)``: an empty MLflow store in each directory (copied: creating one takes seconds)."""

    def make(*roots: Path) -> None:
        for root in roots:
            copy_mlflow_store(mlflow_template, root)

    return make


@pytest.fixture
def mlflow_store(mlflow_template: Path, tmp_path: Path) -> str:
    """An empty MLflow store at ``tmp_path/mlflow.db`` (the default ``sqlite:///mlflow.db`` of a run started in
    ``tmp_path``): its tracking URI."""
    return copy_mlflow_store(mlflow_template, tmp_path)


@pytest.fixture
def easyrec_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Callable[..., tuple]:
    """Run ``easyrec ARGS`` in this process (``easyrec.cli.main``); return ``(exit code, stdout, stderr)``."""
    from easyrec.cli import main

    def _run(*args: str) -> tuple[int, str, str]:
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # main sets it for the app it runs
        monkeypatch.setattr(sys, "argv", list(sys.argv))  # main replaces it
        # `easyrec train` (Hydra) configures the root logger for its job; a separate process would drop that
        # at exit, so put it back for the tests that follow
        handlers, level = logging.root.handlers[:], logging.root.level
        capsys.readouterr()
        try:
            main([str(arg) for arg in args])
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        finally:
            logging.root.handlers[:], logging.root.level = handlers, level
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture
def easyrec_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``easyrec ARGS`` in ``tmp_path`` as a user would; return the finished process."""

    def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "COLUMNS": "200"}
        env.pop("HYDRA_FULL_ERROR", None)
        return subprocess.run(
            [sys.executable, "-m", "easyrec", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return _run


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_mlflow_server(directory: Path, port: int) -> tuple[subprocess.Popen, Callable[[], str]]:
    """``mlflow server`` on 127.0.0.1:``port`` over ``directory/mlflow.db``, started in a session of its own (stop it
    with :func:`stop_server`); and a function that waits until it answers and returns its URL."""
    log = directory / f"server-{time.monotonic_ns()}.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        + ["--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,  # its workers go with it
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> str:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                return url
            except OSError:
                assert server.poll() is None, log.read_text()[-2000:]
                time.sleep(0.5)
        stop_server(server)
        pytest.fail(f"mlflow server did not answer in 2 minutes: {log.read_text()[-2000:]}")

    return server, ready


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM to a server started by :func:`start_mlflow_server` and its workers; wait for it."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
