"""The pieces of distributed training that need no second process: sharding of steps and eval batches, the DDP
config's checks, gradient accumulation, the torchrun arguments, worker logging and failure messages."""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass

import pytest
import torch

from easyrec.data import SyntheticCTRData
from easyrec.distributed import DDP, SingleProcess
from easyrec.errors import ConfigError, DataError
from easyrec.launch import AGENT_LOGGERS, failure_message, quiet_worker_failures, torchrun_arguments, worker_logging
from easyrec.losses import BinaryCrossEntropy
from easyrec.models import DeepFM
from easyrec.trainer import Trainer
from tests.conftest import CRITEO_FEATURES, compose_config
from tests.test_trainer import RecordingLogger

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> SyntheticCTRData:
    data = SyntheticCTRData(CRITEO_FEATURES, num_rows=3_000, batch_size=100, eval_batch_size=128, seed=0)
    data.setup()
    return data


def row_ids(batch) -> list[int]:
    """The rows of a batch, told apart by their dense values (unique per row here)."""
    return [hash(tuple(row)) for row in batch.dense.tolist()]


@dataclass
class FakeWorkers:
    """The shape of a group of workers (the in-memory split needs no collective to shard its steps)."""

    world_size: int
    rank: int
    accumulate_steps: int = 1


def epoch_steps(data, workers: int, accumulate: int, start: int = 0) -> list[list[list[int]]]:
    """For each step of epoch 0: every worker's micro-batches' rows, workers in rank order."""
    per_worker = [
        list(data.train_steps(0, FakeWorkers(workers, rank, accumulate), {"rows_in_epoch": start}))
        for rank in range(workers)
    ]
    steps = []
    for parts in zip(*per_worker, strict=True):
        assert len({part.rows for part in parts}) == 1  # every worker agrees on the step's size
        total = sum(len(batch) for part in parts for batch in part.batches)
        assert total == parts[0].rows
        assert sum(share for part in parts for share in part.shares) == pytest.approx(1.0)
        for part in parts:
            assert part.shares == pytest.approx([len(b) / part.rows for b in part.batches])
        steps.append([row_ids(batch) for part in parts for batch in part.batches])
    return steps


@pytest.mark.parametrize(("workers", "accumulate"), [(1, 1), (2, 1), (1, 2), (3, 1), (2, 3)])
def test_workers_read_disjoint_shards_that_cover_the_epoch_once(data, workers, accumulate):
    steps = epoch_steps(data, workers, accumulate)
    rows = [row for step in steps for batch in step for row in batch]
    assert len(rows) == len(set(rows)) == len(data.train)
    assert len(steps) == data.num_train_steps(workers, accumulate)


def test_a_step_sees_the_same_rows_however_it_is_split(data):
    """2 workers with batch B, 1 worker with batch 2B, 1 worker accumulating 2 batches of B: the same rows."""
    two_workers = [sorted(sum(step, [])) for step in epoch_steps(data, 2, 1)]
    accumulated = [sorted(sum(step, [])) for step in epoch_steps(data, 1, 2)]
    data.batch_size = 200
    try:
        one_big = [sorted(sum(step, [])) for step in epoch_steps(data, 1, 1)]
    finally:
        data.batch_size = 100
    assert two_workers == accumulated == one_big


def test_steps_continue_from_a_row_whatever_the_number_of_workers(data):
    """A checkpoint keeps the rows of the epoch already read; M workers continue where N left off."""
    three = epoch_steps(data, 3, 1)
    done = sum(len(batch) for step in three[:4] for batch in step)
    rest_with_two = [row for step in epoch_steps(data, 2, 1, start=done) for batch in step for row in batch]
    rest_with_three = [row for step in three[4:] for batch in step for row in batch]
    assert sorted(rest_with_two) == sorted(rest_with_three)


def test_eval_shares_concatenate_to_the_eval_batches(data):
    whole = [row_ids(batch) for batch in data.eval_batches()]
    for workers in (1, 2, 3, 7):
        shares = [
            [row_ids(batch) for batch in data.eval_batches(FakeWorkers(workers, rank))] for rank in range(workers)
        ]
        assert [batch for share in shares for batch in share] == whole


def make_trainer(data, tmp_path, distributed=None, optimizer=None, max_steps=6, **model_options) -> Trainer:
    """DeepFM with ``model_options`` trained ``max_steps`` with Adam (lr 1e-2), or ``optimizer(parameters)``."""
    torch.manual_seed(0)
    model = DeepFM(data.input_spec, embedding_dim=4, hidden_units=[16], **model_options)
    return Trainer(
        model=model,
        data=data,
        optimizer=(optimizer or functools.partial(torch.optim.Adam, lr=1e-2))(model.parameters()),
        loss=BinaryCrossEntropy(),
        output_dir=tmp_path,
        logger=RecordingLogger(),
        distributed=distributed,
        max_steps=max_steps,
        log_every_n_steps=1,
        progress_bar=False,
        device="cpu",
    )


def losses(trainer: Trainer, key: str = "train/loss") -> list[float]:
    return [metrics[key] for _, metrics in trainer.logger.calls if key in metrics]


@pytest.mark.parametrize(
    "penalties",
    [{}, {"embedding_regularization": 1e-3}, {"l2_regularization": 1e-2}],
    ids=["none", "lookups", "kernels"],
)
def test_accumulating_k_batches_matches_one_batch_k_times_larger(data, tmp_path, penalties):
    """Also with model penalties: on the lookups they sum over the step's rows (its micro-batches' penalties add
    up), on the kernels there is one per step (each micro-batch adds its share)."""
    accumulated = make_trainer(data, tmp_path / "k", SingleProcess(accumulate_steps=3), **penalties)
    accumulated.fit()
    data.batch_size = 300
    try:
        big = make_trainer(data, tmp_path / "big", **penalties)
        big.fit()
    finally:
        data.batch_size = 100
    assert accumulated.step == big.step == 6
    assert losses(accumulated) == pytest.approx(losses(big), rel=1e-5, abs=1e-7)
    logged = losses(accumulated, "train/regularization")
    assert logged == pytest.approx(losses(big, "train/regularization"), rel=1e-5)
    assert len(logged) == (6 if penalties else 0)
    for name, weight in big.model.state_dict().items():
        # Adam divides by the root of tiny second moments on rarely seen rows: float noise shows at 1e-5
        torch.testing.assert_close(accumulated.model.state_dict()[name], weight, rtol=1e-3, atol=1e-4)
    assert accumulated.rows_in_epoch == big.rows_in_epoch == 1_800


def test_l2_regularization_adds_l2_times_each_kernel_to_its_gradient_once_per_step(data, tmp_path):
    """One SGD step with micro-batches: the kernels move by an extra −lr·l2·W (EasyRec's l2_regularization,
    ∇(l2·ΣW²/2) = l2·W), biases and embeddings as without it; train/regularization is l2·ΣW²/2 of the step."""
    sgd = functools.partial(torch.optim.SGD, lr=0.1)
    runs = {}
    for l2 in (0.0, 0.5):
        trainer = make_trainer(
            data, tmp_path / str(l2), SingleProcess(accumulate_steps=2), sgd, 1, l2_regularization=l2
        )
        before = {name: value.clone() for name, value in trainer.model.state_dict().items()}
        trainer.fit()
        runs[l2] = (before, trainer.model.state_dict(), losses(trainer, "train/regularization"))
    (w0, plain, none_logged), (_, penalised, logged) = runs[0.0], runs[0.5]
    kernels = {name for name in w0 if name.startswith("mlp.") and name.endswith("weight")} | {"linear.dense.weight"}
    assert len(kernels) == 3 and not none_logged
    for name, weight in penalised.items():
        expected = plain[name] - 0.1 * 0.5 * w0[name] if name in kernels else plain[name]
        torch.testing.assert_close(weight, expected, rtol=1e-5, atol=1e-7)
    assert logged == pytest.approx([0.25 * sum(float(w0[name].square().sum()) for name in kernels)], rel=1e-5)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"nproc_per_node": 0}, "nproc_per_node=0: must be >= 1"),
        ({"nproc_per_node": 1.5}, "nproc_per_node: Value 1.5 of type 'float' could not be converted to Integer"),
        ({"nnodes": 0}, "nnodes=0: must be >= 1"),
        ({"max_restarts": -1}, "max_restarts=-1: must be >= 0"),
        ({"accumulate_steps": 0}, "accumulate_steps=0: must be >= 1"),
        ({"backend": "mpi"}, "backend=mpi: must be one of: auto, gloo, nccl"),
        ({"rdzv_timeout": 0}, "rdzv_timeout=0: must be > 0"),
        ({"nnodes": 2}, "distributed.nnodes=2: give every machine the same distributed.rdzv_endpoint"),
    ],
)
def test_ddp_refuses_impossible_settings(options, key):
    # the rule of one option is the constructor's (ValueError, keyed from the node); the rest the config's own
    with pytest.raises((ValueError, ConfigError), match="^" + re.escape(key)):
        DDP(**options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_nccl_without_a_gpu_is_refused():
    with pytest.raises(ConfigError, match="distributed.backend=nccl: torch finds no CUDA device"):
        DDP(backend="nccl")
    assert DDP(backend="auto").backend == "gloo"


def test_launch_config_on_one_machine_picks_a_free_local_port():
    config = DDP(nproc_per_node=3, max_restarts=2).launch_config()
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node, config.max_restarts) == (1, 1, 3, 2)
    assert config.rdzv_backend == "c10d" and config.rdzv_endpoint == "127.0.0.1:0"
    assert config.start_method == "spawn" and config.run_id
    two = DDP(nnodes=2, rdzv_endpoint="host0:29400", rdzv_id="job7", rdzv_timeout=30).launch_config()
    assert (two.min_nodes, two.rdzv_endpoint, two.run_id) == (2, "host0:29400", "job7")
    assert two.rdzv_configs["join_timeout"] == 30


def test_ddp_outside_a_worker_refuses_to_start(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert DDP().launches_workers
    with pytest.raises(ConfigError, match="not started as a worker"):
        DDP().start()


def test_a_missing_data_file_stops_a_ddp_job_before_its_launcher_opens_a_run(monkeypatch, tmp_path):
    import easyrec.launch
    from easyrec.run import run_job

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(easyrec.launch, "launch_workers", lambda *args: pytest.fail("the launcher was started"))
    config = compose_config("distributed=ddp", "data=csv", "data.train_path=nope.csv", "data.eval_path=nope.csv")
    with pytest.raises(DataError, match="^nope.csv: file not found"):
        run_job(config, tmp_path / "run", [])


def test_one_process_refuses_to_be_one_of_several_workers(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="distributed=none, but this process is one of WORLD_SIZE=2"):
        SingleProcess().start()


def torchrun_env(monkeypatch, rank: int, run_id: str = "4f1c") -> None:
    for name, value in {"TORCHELASTIC_RUN_ID": run_id, "RANK": str(rank), "LOCAL_RANK": str(rank)}.items():
        monkeypatch.setenv(name, value)


def test_torchrun_workers_share_one_run_directory_and_rank_0_writes_hydra_files(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert torchrun_arguments(["optimizer=sgd"]) == ["optimizer=sgd"]
    torchrun_env(monkeypatch, rank=0)
    assert torchrun_arguments(["optimizer=sgd"]) == ["optimizer=sgd", "hydra.run.dir=outputs/torchrun/4f1c"]
    assert torchrun_arguments(["hydra.run.dir=/tmp/x"]) == ["hydra.run.dir=/tmp/x"]
    torchrun_env(monkeypatch, rank=1)
    quiet = torchrun_arguments([])
    assert "hydra.output_subdir=null" in quiet and "++hydra.job_logging.handlers.console.level=WARNING" in quiet
    assert any(arg.endswith("/rank-1.log") for arg in quiet)


def test_torchrun_refuses_sweeps_and_a_job_without_an_id(monkeypatch):
    torchrun_env(monkeypatch, rank=0)
    with pytest.raises(ConfigError, match="every worker would run the whole sweep"):
        torchrun_arguments(["-m", "optimizer=sgd,adam"])
    torchrun_env(monkeypatch, rank=0, run_id="none")
    with pytest.raises(ConfigError, match="--rdzv-id=JOB_ID"):
        torchrun_arguments([])


def test_workers_other_than_rank_0_log_quietly_to_their_own_file():
    job_logging = {
        "version": 1,
        "handlers": {"console": {"class": "logging.StreamHandler"}, "file": {"filename": "/run/train.log"}},
    }
    assert worker_logging(job_logging, 0, "/run") == job_logging
    quiet = worker_logging(job_logging, 2, "/run")
    assert quiet["handlers"]["console"]["level"] == "WARNING"
    assert quiet["handlers"]["file"]["filename"] == os.path.join("/run", "rank-2.log")
    assert job_logging["handlers"]["file"]["filename"] == "/run/train.log"  # the job's own config is unchanged


def test_a_failed_worker_is_one_line_naming_its_rank_and_error(tmp_path):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    error_file = tmp_path / "error.json"
    error_file.write_text('{"message": {"message": "DataError: x.csv: row 3: bad", "extraInfo": {"timestamp": "1"}}}')
    recorded = ProcessFailure(local_rank=1, pid=11, exitcode=1, error_file=str(error_file))
    killed = ProcessFailure(local_rank=0, pid=12, exitcode=-9, error_file=str(tmp_path / "none.json"))
    assert failure_message(ChildFailedError("worker", {1: recorded})) == "worker 1 failed: DataError: x.csv: row 3: bad"
    assert (
        failure_message(ChildFailedError("worker", {0: killed}))
        == "worker 0 failed: Signal 9 (SIGKILL) received by PID 12"
    )


def worker_failure_record(last_line: str) -> logging.LogRecord:
    """The record torch's agent logs when a worker raised: its exception holds the worker's traceback."""
    from torch.multiprocessing.spawn import ProcessRaisedException

    traceback = f'Traceback (most recent call last):\n  File "/x/run.py", line 1, in train\n{last_line}\n'
    error = ProcessRaisedException(f"\n\n-- Process 0 terminated with the following error:\n{traceback}", 0, 7)
    message = "failed (exitcode: %s) local_rank: %s (pid: %s) of fn: %s (start_method: %s)"
    return logging.LogRecord(
        AGENT_LOGGERS[0], logging.ERROR, "api.py", 1, message, (1, 0, 7, "worker", "spawn"), (type(error), error, None)
    )


@pytest.mark.parametrize(
    ("last_line", "shown"),
    [
        ("easyrec.errors.ConfigError: distributed.sharding.tables.nope: no such table", False),
        ("easyrec.errors.DataError: x.csv: row 3: bad", False),
        ("RuntimeError: a bug", True),  # anything else keeps its traceback
    ],
)
def test_the_agent_logs_no_traceback_of_a_worker_that_failed_on_an_easyrec_error(last_line, shown):
    agent, spawn = (logging.getLogger(name) for name in AGENT_LOGGERS)
    stopping = logging.LogRecord(spawn.name, logging.WARNING, "spawn.py", 1, "Terminating process %s", (8,), None)
    with quiet_worker_failures():
        assert bool(agent.filter(worker_failure_record(last_line))) is shown
        assert not spawn.filter(stopping)  # the one-line error says which worker failed
    assert agent.filter(worker_failure_record(last_line)) and spawn.filter(stopping)  # only while the workers run


class MainWorkerDecides(SingleProcess):
    """Worker 1 of 2 whose main worker decides to stop (or got a signal) after step ``at``: what ``agree``
    answers it then, whatever its own rules said."""

    is_main = False  # but it reads all the data, so that the trainer needs no collectives

    def __init__(self, at: int, signal_number: int = 0) -> None:
        super().__init__()
        self.at, self.signal_number, self.steps = at, signal_number, 0

    def agree(self, stop: bool, signal_number: int) -> tuple[bool, int]:
        self.steps += 1
        if self.steps < self.at:
            return False, 0
        return not self.signal_number, self.signal_number or signal_number


def test_a_worker_stops_at_the_step_its_main_worker_decides(data, tmp_path):
    trainer = make_trainer(data, tmp_path, MainWorkerDecides(at=3))
    trainer.fit()
    assert trainer.step == 3 and trainer.stop_reason == "the main worker stopped early"
    assert not (tmp_path / "checkpoints").exists()  # only the main worker writes


def test_a_worker_stops_with_the_signal_another_worker_received(data, tmp_path):
    from easyrec.errors import Interrupted

    trainer = make_trainer(data, tmp_path, MainWorkerDecides(at=2, signal_number=15))
    with pytest.raises(Interrupted) as stopped:
        trainer.fit()
    assert trainer.step == 2 and stopped.value.name == "SIGTERM"


def test_sparse_gradients_under_nccl_are_refused_naming_the_setting(data):
    workers = DDP()
    workers.backend = "nccl"  # as on a GPU machine
    model = DeepFM(data.input_spec, embedding_dim=4, hidden_units=[16], sparse_embeddings=True)
    with pytest.raises(ConfigError, match="model.sparse_embeddings=true with distributed.backend=nccl"):
        workers.wrap(model)
