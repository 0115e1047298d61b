"""The estimator's options: trainer.ema in the loop, checkpoint_every_epoch, keep_best_n, eval_every_n_seconds,
eval_max_rows."""

from __future__ import annotations

import math

import pytest
import torch

from easyrec.checkpoints import best_steps, load_checkpoint
from easyrec.errors import ConfigError
from easyrec.trainer import Trainer
from tests import test_checkpoints
from tests.test_checkpoints import STEPS_PER_EPOCH

pytestmark = pytest.mark.usefixtures("one_thread")
data = test_checkpoints.data  # the same module-scoped fixture: 15,000 synthetic rows, 512 a batch


def make_trainer(data, output_dir, **kwargs) -> Trainer:
    """test_checkpoints' trainer, one epoch, evaluating at its end unless told otherwise."""
    return test_checkpoints.make_trainer(data, output_dir, **{"max_epochs": 1, "eval_every_n_steps": None, **kwargs})


@pytest.fixture(scope="module")
def plain(data, tmp_path_factory):
    trainer = make_trainer(data, tmp_path_factory.mktemp("plain"), eval_every_n_steps=10, restore_best=False)
    return trainer, trainer.fit()


@pytest.fixture(scope="module")
def averaged(data, tmp_path_factory):
    trainer = make_trainer(
        data,
        tmp_path_factory.mktemp("ema"),
        eval_every_n_steps=10,
        restore_best=False,
        checkpoint_every_n_steps=10,
        keep_best_n=2,
        ema={"decay": 0.8},
    )
    return trainer, trainer.fit()


def test_ema_changes_no_training_step_and_logs_both_weights_metrics(plain, averaged):
    (raw_trainer, raw_metrics), (trainer, metrics) = plain, averaged
    assert "eval/raw/auc" in trainer.metric_names() and "eval/raw/auc" not in raw_trainer.metric_names()
    # the raw weights train as without an average: their metrics are the run without one's
    assert {k.replace("raw/", ""): v for k, v in metrics.items() if "/raw/" in k} == raw_metrics
    assert metrics["eval/auc"] != metrics["eval/raw/auc"]
    for a, b in zip(trainer.model.parameters(), raw_trainer.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_best_pt_holds_the_averaged_weights_and_a_step_checkpoint_both(averaged):
    trainer, _ = averaged
    folder = trainer.output_dir / "checkpoints"
    best = load_checkpoint(folder / "best.pt")
    assert best["ema"] is None and best["best"]["step"] in (10, 20, 27)  # each has a step checkpoint
    at_best = load_checkpoint(folder / f"best-{best['best']['step']:09d}.pt")
    step = load_checkpoint(folder / f"step-{best['best']['step']:09d}.pt")
    for name, value in step["ema"]["weights"].items():  # averaged dense weights in best.pt, raw tables
        assert torch.equal(best["model"][name], value) and torch.equal(at_best["model"][name], value)
    tables = [name for name in step["model"] if name not in step["ema"]["weights"] and "embedding" in name]
    assert tables and all(torch.equal(best["model"][name], step["model"][name]) for name in tables)


def test_keep_best_n_keeps_the_n_best_evaluations_by_step(averaged):
    trainer, _ = averaged
    kept = best_steps(trainer.history, "eval/auc", "max", 2)
    names = sorted(p.name for p in (trainer.output_dir / "checkpoints").glob("best-*.pt"))
    assert names == [f"best-{step:09d}.pt" for step in sorted(kept)]
    assert kept[0] == trainer.best["step"]


def test_resume_with_ema_equals_the_uninterrupted_run(data, averaged, tmp_path):
    whole, metrics = averaged
    options = {"checkpoint_every_n_steps": 10, "keep_best_n": 2, "restore_best": False, "ema": {"decay": 0.8}}
    make_trainer(data, tmp_path, eval_every_n_steps=10, max_steps=13, **options).fit()
    resumed = make_trainer(data, tmp_path / "again", eval_every_n_steps=10, **options)
    resumed.load_state_dict(load_checkpoint(tmp_path / "checkpoints" / "step-000000010.pt"))
    assert resumed.fit() == metrics and resumed.history == whole.history
    averages = [trainer.ema.state_dict()["weights"] for trainer in (resumed, whole)]
    assert averages[0].keys() == averages[1].keys()
    assert all(torch.equal(averages[0][name], averages[1][name]) for name in averages[0])


def test_best_steps_by_hand():
    history = {5: {"m": 0.5}, 10: {"m": 0.7}, 15: {"m": math.nan}, 20: {"m": 0.7}, 25: {"m": 0.6}}
    assert best_steps(history, "m", "max", 3) == [10, 20, 25]  # of equal values the earlier first; NaN never
    assert best_steps(history, "m", "min", 2) == [5, 25]
    assert best_steps(history, "m", "max", None) == []


def test_keep_best_n_needs_a_monitor(data, tmp_path):
    with pytest.raises(ConfigError, match=r"^trainer.keep_best_n=2: needs trainer.monitor"):
        make_trainer(data, tmp_path, keep_best_n=2, monitor=None)


def test_a_checkpoint_at_the_end_of_every_epoch(data, tmp_path):
    trainer = make_trainer(data, tmp_path, max_epochs=3, checkpoint_every_epoch=True, keep_last_n=10)
    trainer.fit()
    assert [int(p.stem.split("-")[1]) for p in trainer.checkpoints.step_files()] == [27, 54, 81]
    assert load_checkpoint(trainer.checkpoints.step_files()[0])["epoch"] == 1


def test_evaluations_every_n_seconds_replace_those_at_the_end_of_each_epoch(data, tmp_path, monkeypatch):
    clock = iter(range(0, 10_000, 4))  # every call to the clock moves it 4 s on
    monkeypatch.setattr("easyrec.trainer.time.monotonic", lambda: next(clock))
    trainer = make_trainer(data, tmp_path, max_epochs=2, eval_every_n_seconds=14)
    trainer.fit()
    # a step reads the clock once (4 s), an evaluation once more: every 4 steps; none at the epoch's end (27), one
    # at the end of training (54)
    assert sorted(trainer.history) == [*range(4, 2 * STEPS_PER_EPOCH, 4), 2 * STEPS_PER_EPOCH]


class Workers:
    """Three workers, as the data sees them."""

    world_size, accumulate_steps = 3, 1

    def __init__(self, rank: int) -> None:
        self.rank = rank


def test_eval_max_rows_evaluates_the_first_rows_split_between_workers(data, tmp_path):
    whole = torch.cat([b.labels for b in data.eval_batches()])
    for rows in (1000, 1, len(whole), 10**9):
        shares = [list(data.eval_batches(Workers(rank), max_rows=rows)) for rank in range(3)]
        labels = torch.cat([b.labels for share in shares for b in share])
        assert torch.equal(labels, whole[:rows])
    whole_split, first_rows = (make_trainer(data, tmp_path, eval_max_rows=n).evaluate() for n in (10**9, 700))
    assert whole_split == make_trainer(data, tmp_path).evaluate() and first_rows != whole_split


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ("trainer.ema.decay=2", "trainer.ema.decay=2.0: must be in (0, 1)"),
        ("+trainer.ema.rate=1", "trainer.ema.rate: not an option of easyrec.ema.EMASettings; its options are: decay"),
        ("trainer.keep_best_n=0", "trainer.keep_best_n=0: must be > 0"),
        ("trainer.eval_max_rows=-1", "trainer.eval_max_rows=-1: must be > 0"),
        ("trainer.eval_every_n_seconds=0", "trainer.eval_every_n_seconds=0.0: must be > 0"),
    ],
)
def test_bad_values_are_one_line_config_errors(override, error):
    from easyrec.config import validate
    from tests.conftest import compose_config

    with pytest.raises(ConfigError) as raised:
        validate(compose_config(override))
    assert str(raised.value) == error
