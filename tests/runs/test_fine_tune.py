"""trainer.init_from: a new run starts from another run's weights and keeps its id encoding, grown by new ids."""

from __future__ import annotations

import logging

import pytest
import torch

from easyrec.checkpoints import load_checkpoint
from easyrec.errors import CheckpointError, ConfigError
from easyrec.run import train

pytestmark = pytest.mark.slow

SMALL = [
    "data.num_rows=6000",
    "data.batch_size=256",
    "model.embedding_dim=4",
    "logger=none",
    "trainer.progress_bar=false",
]


def test_fine_tuning_loads_what_fits_grows_vocabularies_and_reports_the_rest(compose_train, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    train(compose_train(*SMALL, "model.hidden_units=[32]"), tmp_path / "base")
    base = load_checkpoint(tmp_path / "base")
    overrides = [
        *SMALL,
        "model.hidden_units=[16]",  # a new MLP: skipped
        "seed=7",  # other data: its own vocabularies would differ
        "optimizer.lr=1e-12",
        "trainer.max_steps=1",
        f"trainer.init_from={tmp_path / 'base'}",
    ]
    train(compose_train(*overrides), tmp_path / "tuned")
    tuned = load_checkpoint(tmp_path / "tuned")
    for name, vocabulary in base["data"]["encoder"]["vocabularies"].items():  # kept, grown by seed 7's new ids
        assert tuned["data"]["encoder"]["vocabularies"][name][: len(vocabulary)] == vocabulary
    old_rows, new_rows = base["input_spec"]["cardinalities"], tuned["input_spec"]["cardinalities"]
    assert sum(new_rows) > sum(old_rows)
    tables = [name for name in base["model"] if name.endswith("table.weight")]
    assert tables
    for name in tables:  # the fused table of every field: each field's old rows kept
        old_start = new_start = 0
        for old, new in zip(old_rows, new_rows, strict=True):
            kept = tuned["model"][name][new_start : new_start + old]
            torch.testing.assert_close(kept, base["model"][name][old_start : old_start + old], atol=1e-6, rtol=0)
            old_start, new_start = old_start + old, new_start + new
    assert "fine-tune: skipped mlp.layers.0.weight: shape" in caplog.text
    assert "fine-tuning from" in caplog.text
    # the same command run again (a daily job's retry) with resume=auto continues its own checkpoint, encoded alike
    caplog.clear()
    train(compose_train(*overrides, "trainer.resume=auto", "trainer.max_steps=2"), tmp_path / "tuned")
    assert "resumed from" in caplog.text and "fine-tuning from" not in caplog.text
    again = load_checkpoint(tmp_path / "tuned")
    assert again["step"] == 2 and again["data"]["encoder"] == tuned["data"]["encoder"]


def test_init_from_and_resume_together_or_a_missing_path_are_refused(compose_train, tmp_path):
    with pytest.raises(ConfigError, match="give one"):
        train(compose_train(*SMALL, "trainer.resume=true", f"trainer.init_from={tmp_path}"), tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint file or run directory"):
        train(compose_train(*SMALL, f"trainer.init_from={tmp_path / 'nope'}"), tmp_path / "run")


def test_missing_ok_starts_the_first_day_from_scratch_with_a_warning(compose_train, tmp_path, caplog):
    overrides = [
        *SMALL,
        "trainer.max_steps=2",
        f"trainer.init_from={tmp_path / 'yesterday'}",
        "trainer.init.missing_ok=true",
    ]
    train(compose_train(*overrides), tmp_path / "today")
    assert (
        "no such checkpoint file or run directory; starting from scratch (trainer.init.missing_ok=true)" in caplog.text
    )
    assert load_checkpoint(tmp_path / "today")["step"] == 2
