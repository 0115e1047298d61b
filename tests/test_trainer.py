"""The training loop on small synthetic Criteo-like data: metrics, limits, logging, checkpoint, early stop."""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Mapping

import pytest
import torch
from rich.console import Console

from easyrec.checkpoints import load_checkpoint
from easyrec.console import TrainingReport
from easyrec.data import SyntheticCTRData
from easyrec.data.batches import Batch, TrainStep
from easyrec.early_stopping import StopOnPlateau
from easyrec.errors import ConfigError
from easyrec.loggers import Logger
from easyrec.losses import BinaryCrossEntropy
from easyrec.models import DeepFM
from easyrec.trainer import Trainer, _fits_on, configure_process
from tests.conftest import CRITEO_FEATURES, QUICK, compose_config

pytestmark = pytest.mark.usefixtures("one_thread")
EVAL_KEYS = {"eval/loss", "eval/auc", "eval/logloss", "eval/oracle_auc", "eval/oracle_logloss"}
TRAIN_KEYS = {"train/loss", "train/lr", "train/samples_per_s", "train/grad_norm", "train/skipped_steps"}
BATCHES_PER_EPOCH = 53  # 27,000 train rows / 512


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call as ``(step, metrics)`` and every tag."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, float]]] = []
        self.tags: dict[str, str] = {}

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.calls.append((step, dict(metrics)))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)

    def steps_with(self, key: str) -> list[int]:
        return [step for step, metrics in self.calls if key in metrics]


@pytest.fixture(scope="module")
def data() -> SyntheticCTRData:
    data = SyntheticCTRData(CRITEO_FEATURES, num_rows=30_000, batch_size=512, seed=0)
    data.setup()
    return data


def make_trainer(data, output_dir, seed: int = 0, lr: float = 1e-3, **kwargs) -> Trainer:
    torch.manual_seed(seed)
    model = DeepFM(data.input_spec, embedding_dim=8, hidden_units=[64, 32])
    kwargs.setdefault("progress_bar", False)
    kwargs.setdefault("device", "cpu")
    return Trainer(
        model=model,
        data=data,
        optimizer=torch.optim.Adam(model.parameters(), lr=lr),
        loss=BinaryCrossEntropy(),
        output_dir=output_dir,
        **kwargs,
    )


@pytest.fixture(scope="module")
def two_epoch_runs(data, tmp_path_factory):
    """Two 2-epoch runs with the same seed: ``(trainer, metrics)`` each."""
    runs = []
    for name in ("first", "second"):
        trainer = make_trainer(data, tmp_path_factory.mktemp(name), max_epochs=2, logger=RecordingLogger())
        runs.append((trainer, trainer.fit()))
    return runs


def test_data_layout(data):
    assert data.num_train_batches() == BATCHES_PER_EPOCH
    assert data.input_spec.num_dense == 13 and data.input_spec.num_fields == 26


def test_fit_returns_eval_metrics_well_above_chance(two_epoch_runs):
    trainer, metrics = two_epoch_runs[0]
    assert set(metrics) == EVAL_KEYS
    assert trainer.step == 2 * BATCHES_PER_EPOCH and trainer.epoch == 2
    # Measured 0.68-0.73 over data and model seeds; the oracle is about 0.80.
    assert 0.65 <= metrics["eval/auc"] < metrics["eval/oracle_auc"]
    assert metrics["eval/oracle_logloss"] < metrics["eval/logloss"] < math.log(2)
    # the training loss (BCE) on the eval split: the logloss, but for its clipping of probabilities at 1e-7
    assert metrics["eval/loss"] == pytest.approx(metrics["eval/logloss"], rel=1e-6)


def test_same_seed_gives_identical_metrics(two_epoch_runs):
    (first, first_metrics), (second, second_metrics) = two_epoch_runs
    assert first_metrics == second_metrics
    first_losses = [m["train/loss"] for _, m in first.logger.calls if "train/loss" in m]
    second_losses = [m["train/loss"] for _, m in second.logger.calls if "train/loss" in m]
    assert first_losses == second_losses


def test_evaluates_once_per_epoch_without_eval_every_n_steps(two_epoch_runs):
    trainer, metrics = two_epoch_runs[0]
    eval_calls = [(step, m) for step, m in trainer.logger.calls if "eval/auc" in m]
    assert [step for step, _ in eval_calls] == [BATCHES_PER_EPOCH, 2 * BATCHES_PER_EPOCH]
    assert eval_calls[-1][1] == metrics
    step, summary = trainer.logger.calls[-1]
    assert step == 2 * BATCHES_PER_EPOCH
    assert set(summary) == {
        *("train/seconds", "train/eval_seconds", "train/loop_samples_per_s", "train/steps", "train/rows")
    }  # in memory: no data/wait_fraction
    assert summary["train/steps"] == 2 * BATCHES_PER_EPOCH
    assert summary["train/rows"] == 2 * len(trainer.data.train)
    assert 0 < summary["train/eval_seconds"] < summary["train/seconds"]
    assert json.loads((trainer.output_dir / "metrics.json").read_text()) == {
        "step": 2 * BATCHES_PER_EPOCH,
        "epoch": 2,
        "precision": "fp32",
        **metrics,
        **summary,
    }
    loop_seconds = summary["train/seconds"] - summary["train/eval_seconds"]
    assert summary["train/loop_samples_per_s"] == pytest.approx(2 * len(trainer.data.train) / loop_seconds)


def test_one_epoch_counts_its_final_evaluation_shows_progress_and_ends_with_its_dir(data, tmp_path, capsys):
    trainer = make_trainer(data, tmp_path, max_epochs=1, log_every_n_steps=1000, logger=RecordingLogger())
    screen = io.StringIO()
    trainer.reporter = TrainingReport(
        logging.getLogger("easyrec.trainer"), Console(file=screen, force_terminal=True, width=150)
    )
    trainer.fit()
    assert trainer.logger.steps_with("eval/auc") == [BATCHES_PER_EPOCH]  # one evaluation: after the last step
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 < summary["train/eval_seconds"] < summary["train/seconds"]
    last_drawn = screen.getvalue().rsplit("\r", 1)[-1]
    assert f"step {BATCHES_PER_EPOCH}/{BATCHES_PER_EPOCH}" in last_drawn and "lr 0.001" in last_drawn
    assert "loss 0." in last_drawn  # the loss of the one logging interval, which ended at the last step
    out = capsys.readouterr().out
    assert f"easyrec: {BATCHES_PER_EPOCH} steps, 1 epoch " in out
    assert out.splitlines()[-1] == f"run directory: {tmp_path.resolve()}"  # the logger has nothing to show


def test_checkpoint_loads_safely_and_restores_the_model(two_epoch_runs, data):
    trainer, metrics = two_epoch_runs[0]
    path = trainer.output_dir / "checkpoints" / f"step-{2 * BATCHES_PER_EPOCH:09d}.pt"
    assert path.is_file()
    assert not list(path.parent.glob("*.partial"))
    state = torch.load(path, weights_only=True)
    assert {"model", "optimizer", "step", "epoch"} <= set(state)
    assert state["step"] == 2 * BATCHES_PER_EPOCH and state["epoch"] == 2
    assert state["metrics"] == metrics
    assert state["optimizer"]["state"][0]["step"].item() == 2 * BATCHES_PER_EPOCH

    # the keys easyrec has always written, which evaluate, predict, export, init_from and older versions read
    assert set(state) == {
        *("format", "checksum", "model", "optimizer", "loss", "lr_schedulers", "rng", "gradients", "early_stopping"),
        *("step", "epoch", "rows_in_epoch", "stop_reason", "metrics", "last_eval_step", "history", "best", "run"),
        *("data", "input_spec", "config"),
        *("position", "rows"),  # since streaming input: the data's position in the epoch, the run's rows
    }
    assert state["position"] is None and state["rows"] == 2 * len(data.train)  # at the start of the next epoch

    restored = DeepFM(data.input_spec, embedding_dim=8, hidden_units=[64, 32])
    restored.load_state_dict(state["model"])
    restored.eval()
    trainer.model.eval()
    batch = next(iter(data.eval_batches()))
    with torch.no_grad():
        assert torch.equal(restored(batch.dense, batch.sparse), trainer.model(batch.dense, batch.sparse))


def test_max_steps_stops_at_that_step(data, tmp_path):
    logger = RecordingLogger()
    trainer = make_trainer(data, tmp_path, max_epochs=5, max_steps=7, logger=logger)
    metrics = trainer.fit()
    assert trainer.step == 7 and trainer.epoch == 0
    assert set(metrics) == EVAL_KEYS
    assert logger.steps_with("eval/auc") == [7]  # evaluated once, at the end
    assert load_checkpoint(tmp_path)["step"] == 7


def test_max_steps_without_epoch_limit_runs_across_epochs(data, tmp_path):
    trainer = make_trainer(data, tmp_path, max_epochs=0, max_steps=BATCHES_PER_EPOCH + 3)
    trainer.fit()
    assert trainer.step == BATCHES_PER_EPOCH + 3 and trainer.epoch == 1


def test_needs_an_epoch_or_step_limit(data, tmp_path):
    with pytest.raises(ValueError, match="max_epochs=0 and max_steps=null: set at least one limit"):
        make_trainer(data, tmp_path, max_epochs=0, max_steps=None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_config_error(data, tmp_path):
    with pytest.raises(ConfigError, match="trainer.device=cuda: torch finds no CUDA device"):
        make_trainer(data, tmp_path, device="cuda")


def test_eval_and_train_metrics_are_logged_at_their_steps(data, tmp_path):
    logger = RecordingLogger()
    trainer = make_trainer(data, tmp_path, max_steps=23, eval_every_n_steps=10, log_every_n_steps=4, logger=logger)
    trainer.fit()
    # Every 10 steps, and always at the end.
    assert logger.steps_with("eval/auc") == [10, 20, 23]
    for _, metrics in logger.calls:
        if "eval/auc" in metrics:
            assert set(metrics) == EVAL_KEYS
    # Every 4 steps, and at the last planned step.
    assert logger.steps_with("train/loss") == [4, 8, 12, 16, 20, 23]
    for _, metrics in logger.calls:
        if "train/loss" in metrics:
            assert set(metrics) == TRAIN_KEYS
            assert 0 < metrics["train/loss"] < 1
            assert metrics["train/lr"] == 1e-3
            assert metrics["train/samples_per_s"] > 0
    assert logger.steps_with("train/steps") == [23]


def test_train_metrics_are_logged_with_the_training_loss_of_each_window(data, tmp_path):
    logger = RecordingLogger()
    trainer = make_trainer(
        data, tmp_path, max_steps=8, log_every_n_steps=4, train_metrics=["auc", "logloss"], logger=logger
    )
    trainer.fit()
    assert logger.steps_with("train/auc") == logger.steps_with("train/logloss") == [4, 8]
    for _, metrics in logger.calls:
        if "train/auc" in metrics:
            assert set(metrics) == TRAIN_KEYS | {"train/auc", "train/logloss"}
            # the BCE of the window's rows (4 steps of 512): the mean of its steps' losses
            assert metrics["train/logloss"] == pytest.approx(metrics["train/loss"], rel=1e-5)
            assert 0.4 < metrics["train/auc"] < 0.9
    with pytest.raises(ConfigError, match="trainer.train_metrics: rmse judges none of the loss's tasks"):
        make_trainer(data, tmp_path, train_metrics=["auc", "rmse"])


def test_plateau_stops_early_with_a_reason(data, tmp_path):
    # The oracle AUC never changes, so with patience 1 the second evaluation stops training.
    logger = RecordingLogger()
    rule = StopOnPlateau(monitor="eval/oracle_auc", mode="max", patience=1)
    trainer = make_trainer(data, tmp_path, max_epochs=3, eval_every_n_steps=5, early_stopping=rule, logger=logger)
    metrics = trainer.fit()
    assert trainer.step == 10
    assert logger.steps_with("eval/auc") == [5, 10]
    assert trainer.stop_reason == rule.reason
    assert trainer.stop_reason.startswith("eval/oracle_auc has not improved for 1 evaluation (best 0.80")
    assert trainer.stop_reason.endswith("at step 5)")
    assert logger.tags == {"easyrec.stop_reason": trainer.stop_reason}
    assert set(metrics) == EVAL_KEYS
    state = load_checkpoint(tmp_path)
    assert state["early_stopping"] == rule.state_dict()


def test_unknown_monitor_is_a_config_error_before_training(data, tmp_path):
    with pytest.raises(ConfigError, match="the metrics are: eval/auc, eval/logloss, eval/loss, eval/oracle_auc"):
        make_trainer(data, tmp_path, early_stopping=StopOnPlateau(monitor="eval/accuracy"))


def test_bf16_precision_trains_the_forward_pass_in_bf16_and_evaluates_in_fp32(two_epoch_runs, data, tmp_path):
    trainer = make_trainer(data, tmp_path, max_epochs=2, precision="bf16_force")  # bf16 on any CPU
    seen: dict[bool, set[torch.dtype]] = {True: set(), False: set()}
    first_layer = trainer.model.mlp.layers[0]
    first_layer.register_forward_hook(lambda module, inputs, output: seen[module.training].add(output.dtype))
    metrics = trainer.fit()
    assert seen == {True: {torch.bfloat16}, False: {torch.float32}}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    # the same seed in fp32 (two_epoch_runs) reached the same quality
    assert metrics["eval/auc"] == pytest.approx(two_epoch_runs[0][1]["eval/auc"], abs=0.005)


def test_data_on_device_moves_the_training_split_when_asked_or_when_a_gpu_has_room(data, tmp_path, monkeypatch):
    moved = []
    monkeypatch.setattr(data, "train_to", moved.append)
    make_trainer(data, tmp_path, data_on_device="auto")  # on the CPU there is nothing to gain
    make_trainer(data, tmp_path, data_on_device=False)
    assert moved == []
    make_trainer(data, tmp_path, data_on_device=True)
    assert moved == [torch.device("cpu")]
    # auto on a GPU: only when the split takes under half of its free memory
    gpu = torch.device("cuda", 0)
    for free, fits in ((2 * data.train.nbytes + 1, True), (2 * data.train.nbytes, False)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 10 * free))
        assert _fits_on(gpu, data.train) is fits
    assert _fits_on(torch.device("cpu"), data.train) is False
    with pytest.raises(ValueError, match="data_on_device=yes: must be one of: auto, true, false"):
        make_trainer(data, tmp_path, data_on_device="yes")


def test_a_training_split_too_large_for_the_device_is_a_config_error(data, tmp_path, monkeypatch):
    def out_of_memory(device):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(data, "train_to", out_of_memory)
    with pytest.raises(ConfigError, match=r"trainer.data_on_device=true: the training split \(0.00 GiB\) does not fit"):
        make_trainer(data, tmp_path, data_on_device=True)


def test_an_unknown_precision_is_a_config_error(data, tmp_path):
    with pytest.raises(ValueError, match="^precision=fp8: must be one of: fp32, bf16, bf16_force, fp16, auto"):
        make_trainer(data, tmp_path, max_epochs=1, precision="fp8")


class Counter:
    """A stateful part a user might add: how many times it was told something."""

    def __init__(self, count: int = 0) -> None:
        self.count = count

    def state_dict(self) -> dict[str, int]:
        return {"count": self.count}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.count = state["count"]


def test_a_new_stateful_part_is_one_entry_saved_and_restored(data, tmp_path):
    trainer = make_trainer(data, tmp_path / "first", max_steps=3)
    trainer.parts["counter"] = Counter(7)
    trainer.gradients.skipped_steps = 2
    trainer.fit()
    state = load_checkpoint(tmp_path / "first")
    assert state["counter"] == {"count": 7} and state["gradients"] == {"skipped_steps": 2}

    resumed = make_trainer(data, tmp_path / "second", max_steps=3)
    resumed.parts["counter"] = counter = Counter()
    resumed.load_state_dict(state)
    assert counter.count == 7 and resumed.gradients.skipped_steps == 2 and resumed.step == 3


def test_building_a_trainer_changes_nothing_process_wide_the_run_does(data, tmp_path):
    invariants = torch.sparse.check_sparse_tensor_invariants
    threads, checked = torch.get_num_threads(), invariants.is_enabled()
    invariants.enable()
    try:
        make_trainer(data, tmp_path)
        assert torch.get_num_threads() == threads and invariants.is_enabled()
        configure_process(num_threads=threads + 1)  # what `easyrec train trainer.num_threads=N` calls
        assert torch.get_num_threads() == threads + 1 and not invariants.is_enabled()
    finally:
        torch.set_num_threads(threads)
        invariants.enable() if checked else invariants.disable()


def test_trainer_num_threads_from_the_config_sets_the_runs_threads(tmp_path):
    from easyrec.run import train

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        overrides = ("trainer.max_steps=2", "trainer.num_threads=1", "trainer.progress_bar=false", "logger=none")
        train(compose_config(*QUICK, *overrides), tmp_path)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


class StreamedSynthetic(SyntheticCTRData):
    """Synthetic data that the trainer sees as a stream (``streams``) which skipped 2 unreadable pieces."""

    streams = True
    skipped_pieces = 2


class WithEmptyMicroBatches(SyntheticCTRData):
    """Every step gains a micro-batch of 0 rows (share 0.0), as a worker whose pieces ran out gets."""

    def train_steps(self, epoch, workers=None, position=None):
        for step in super().train_steps(epoch, workers, position):
            first = step.batches[0]
            empty = Batch(*(None if t is None else t[:0] for t in (first.dense, first.sparse, first.labels)))
            yield TrainStep([*step.batches, empty], [*step.shares, 0.0], step.rows)


def small(kind: type[SyntheticCTRData]) -> SyntheticCTRData:
    data = kind(CRITEO_FEATURES, num_rows=3_000, batch_size=256, seed=0)
    data.setup()
    return data


def test_a_micro_batch_of_no_rows_runs_and_changes_nothing(tmp_path):
    """Its zero loss reaches every parameter (DDP needs a gradient of each on every worker), and the step is the
    mean over the rows that exist."""
    runs = {}
    for name, kind in (("plain", SyntheticCTRData), ("padded", WithEmptyMicroBatches)):
        runs[name] = make_trainer(
            small(kind), tmp_path / name, max_steps=5, log_every_n_steps=1, logger=RecordingLogger()
        )
    plain, padded = runs["plain"], runs["padded"]
    seen = []
    padded.model.register_forward_hook(lambda module, inputs, output: seen.append(len(output)))
    plain.fit()
    padded.fit()
    assert seen[:2] == [256, 0]  # the empty micro-batch went through the model
    losses = [[m["train/loss"] for _, m in run.logger.calls if "train/loss" in m] for run in (plain, padded)]
    assert losses[0] == losses[1] and len(losses[0]) == 5
    assert all(p.grad is not None for p in padded.model.parameters())
    for a, b in zip(padded.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert padded.rows == plain.rows == 5 * 256


def test_a_stream_logs_its_wait_fraction_and_skipped_pieces(tmp_path):
    data = small(StreamedSynthetic)
    trainer = make_trainer(data, tmp_path, max_steps=6, log_every_n_steps=2, logger=RecordingLogger())
    trainer.fit()
    windows = [metrics for _, metrics in trainer.logger.calls if "train/loss" in metrics]
    assert len(windows) == 3
    assert all(0 <= window["data/wait_fraction"] <= 1 for window in windows)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= summary["data/wait_fraction"] <= 1
    assert summary["data/skipped_pieces"] == 2
    assert summary["train/rows"] == 6 * 256
    with pytest.raises(ConfigError, match="trainer.data_on_device=true: the training split is read as a stream"):
        make_trainer(data, tmp_path, data_on_device=True)
