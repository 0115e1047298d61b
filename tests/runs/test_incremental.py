"""Incremental training: day 2 starts from day 1's checkpoint (trainer.init_from) with its optimizer state, and the
ids new on day 2 get rows of their own."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from easyrec.checkpoints import load_checkpoint
from easyrec.data.synthetic import generate_clicks
from easyrec.run import train
from easyrec.trainer import Trainer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

FIELD = "C9"  # 166 ids: day 1 sees the half of them below the median id, day 2 all of them
ADAGRAD_START = 0.1  # conf/optimizer/adagrad.yaml's initial_accumulator_value
RUN = [
    "data=parquet",
    "data.cache_dir=null",
    "data.batch_size=256",
    "model.embedding_dim=4",
    "model.hidden_units=[16]",
    "optimizer=adagrad",
    "logger=none",
    "trainer.progress_bar=false",
    "trainer.restore_best=false",
]


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    """Parquet files of two days of synthetic clicks: day 1 (train, eval) has only half of FIELD's ids, day 2
    (train, eval) has them all."""
    directory = tmp_path_factory.mktemp("days")
    table, _ = generate_clicks(26_000, seed=5)
    table = table.drop_columns(["session"])
    day1 = table.slice(0, 20_000)
    day1 = day1.filter(pc.less(day1[FIELD], int(np.median(np.unique(table[FIELD].to_numpy())))))
    files = {
        "day1_train": day1.slice(0, len(day1) - 500),
        "day1_eval": day1.slice(len(day1) - 500),
        "day2_train": table.slice(20_000, 4_000),
        "day2_eval": table.slice(24_000),
    }
    for name, part in files.items():
        pq.write_table(part, directory / f"{name}.parquet")
    return directory


def day(days, number: int) -> list[str]:
    return [
        *RUN,
        f"data.train_path={days / f'day{number}_train.parquet'}",
        f"data.eval_path={days / f'day{number}_eval.parquet'}",
    ]


def test_day_two_keeps_day_one_rows_and_accumulators_grows_the_vocabulary_to_its_bound_and_beats_a_cold_start(
    compose_train, days, tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.INFO)
    train(compose_train(*day(days, 1), "trainer.max_epochs=2"), tmp_path / "day1")
    before = load_checkpoint(tmp_path / "day1")  # its latest step checkpoint, as trainer.init_from resolves it
    started = {}
    fit = Trainer.fit

    def fit_recording_the_start(trainer: Trainer) -> dict[str, float]:
        if not started:  # day 2's state as training starts
            started.update(model=trainer.model.state_dict(), optimizer=trainer.optimizer.state_dict())
            started["model"] = {name: value.clone() for name, value in started["model"].items()}
            started["optimizer"] = {
                k: {s: v.clone() for s, v in slots.items()} for k, slots in started["optimizer"]["state"].items()
            }
        return fit(trainer)

    monkeypatch.setattr(Trainer, "fit", fit_recording_the_start)
    warm = train(compose_train(*day(days, 2), f"trainer.init_from={tmp_path / 'day1'}"), tmp_path / "day2")
    monkeypatch.undo()
    after = load_checkpoint(tmp_path / "day2")

    old_vocab = before["data"]["encoder"]["vocabularies"][FIELD]
    new_vocab = after["data"]["encoder"]["vocabularies"][FIELD]
    assert new_vocab[: len(old_vocab)] == old_vocab  # every day-1 id keeps its row
    assert len(new_vocab) > 1.5 * len(old_vocab)  # the new ids got rows of their own
    old_rows, new_rows = before["input_spec"]["cardinalities"], after["input_spec"]["cardinalities"]
    field = int(FIELD[1:]) - 1
    assert new_rows[field] == len(new_vocab) + 1 and old_rows[field] == len(old_vocab) + 1
    tables = [name for name in before["model"] if name.endswith("table.weight")]
    assert tables
    names = [group["param_names"] for group in before["optimizer"]["param_groups"]][0]
    for name in tables:
        sum_at_start = started["optimizer"][names.index(name)]["sum"]
        sum_before = before["optimizer"]["state"][names.index(name)]["sum"]
        old_start = new_start = 0
        for old, new in zip(old_rows, new_rows, strict=True):  # the fused table, field by field
            assert torch.equal(
                started["model"][name][new_start : new_start + old], before["model"][name][old_start : old_start + old]
            )
            assert torch.equal(sum_at_start[new_start : new_start + old], sum_before[old_start : old_start + old])
            fresh = sum_at_start[new_start + old : new_start + new]
            assert torch.equal(fresh, torch.full_like(fresh, ADAGRAD_START))  # Adagrad's start for the new rows
            old_start, new_start = old_start + old, new_start + new
    dense = [name for name in before["model"] if name.startswith("mlp.")]
    for name in dense:
        assert torch.equal(started["model"][name], before["model"][name])
        assert torch.equal(
            started["optimizer"][names.index(name)]["sum"], before["optimizer"]["state"][names.index(name)]["sum"]
        )

    cold = train(compose_train(*day(days, 2)), tmp_path / "cold")
    assert warm > cold + 0.03, (warm, cold)  # eval/auc on day 2's eval split, the same steps (0.680 vs 0.619)

    # a bound on the vocabularies: day 1's ids all kept, new ones appended up to it (C9's group holds every field)
    bound = len(old_vocab) + 5
    bounded = [
        *day(days, 2),
        f"trainer.init_from={tmp_path / 'day1'}",
        f"data.features.categorical.0.max_vocab_size={bound}",
    ]
    train(compose_train(*bounded, "trainer.max_steps=2"), tmp_path / "bounded")
    vocab = load_checkpoint(tmp_path / "bounded")["data"]["encoder"]["vocabularies"][FIELD]
    assert vocab[: len(old_vocab)] == old_vocab and len(vocab) == bound
