"""Shared fixtures: compose easyrec's config with Hydra's compose API, run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

# Small and quick: every CLI test run uses these unless it overrides them.
QUICK = ["data.num_rows=6000", "data.batch_size=256", "model.hidden_units=[32]", "model.embedding_dim=4"]


@pytest.fixture
def compose_train() -> Callable[..., DictConfig]:
    """``compose_train("optimizer=sgd", ...)`` -> the composed ``train`` config."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_module(config_module="easyrec.conf", version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides))

    return _compose


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
