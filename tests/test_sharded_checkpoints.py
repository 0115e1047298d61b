"""Sharded checkpoints (``distributed=model_parallel``): written by 2 gloo workers, read back on 1 and on 2 (the
fused optimizer's state included), read whole in one process as the plain model's state dict; missing, damaged and
malicious shards directories are refused with one line naming them."""

from __future__ import annotations

import functools
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch import nn

from easyrec.checkpoints import FORMAT, Checkpoints, load_checkpoint, write_atomically
from easyrec.errors import CheckpointError
from easyrec.modules import FieldEmbedding, LinearTerms
from easyrec.resume import check_resumable
from easyrec.sharded_checkpoints import SHARDED, file_digest, read_metadata
from tests.conftest import free_port

CARDINALITIES, NAMES = [300, 50, 20], ["a", "b", "c"]
TABLES = ["embedding__a", "embedding__b", "embedding__c"]
FIELD_KEYS = [f"embedding.collection.embedding_bags.{name}.weight" for name in TABLES]
STEP = 2


class Tiny(nn.Module):
    """A width-8 FieldEmbedding (sharded) and width-1 first-order weights (kept whole)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(CARDINALITIES, 8, names=NAMES, init_std=0.1)
        self.linear = LinearTerms(CARDINALITIES, 0, names=NAMES)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return self.embedding(sparse).square().sum(dim=(1, 2)) + self.linear(dense, sparse)


def ids(step: int, rank: int, rows: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(100 * step + rank)
    return torch.stack([torch.randint(0, c, (rows,), generator=generator) for c in CARDINALITIES], 1)


def local_state(model: nn.Module, optimizer) -> dict[str, list]:
    """This worker's parts of every table and of the fused optimizer's state: ``{key: [(offsets, tensor)]}``."""
    from easyrec.distributed.model_parallel import local_parts
    from easyrec.sharded_checkpoints import split_sharded

    _, sharded = split_sharded({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    assert any(key.startswith("optimizer/") for key in sharded)  # the fused optimizer's state is sharded too
    return {key: [(offsets, part.clone()) for offsets, part in local_parts(value)] for key, value in sharded.items()}


def worker(rank: int, world: int, port: int, out: Path, load: str | None, types: dict) -> None:
    """One gloo worker: a sharded Tiny trained 2 steps and checkpointed (``load`` None), or a fresh one (another
    seed) that reads the checkpoint ``load``; then its parts, its outputs and its outputs after one more step."""
    environment = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank)}
    os.environ.update({**environment, "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world)})
    torch.set_num_threads(1)
    from easyrec.distributed import ModelParallel
    from easyrec.modules.embedding import deferred_tables
    from easyrec.modules.embedding_collection import table_manifest
    from easyrec.optim import build_optimizer
    from easyrec.optim.fused import fused_params
    from easyrec.sharded_checkpoints import read_shards

    workers = ModelParallel(nproc_per_node=world, backend="gloo", sharding={"tables": types})
    workers.start()
    try:
        factory = functools.partial(torch.optim.Adagrad, lr=0.05)
        with deferred_tables():
            model = Tiny()
        workers.shard(model, fused_params(factory, "cpu"), seed=3 if load is None else 4)
        dmp = workers.wrap(model)
        optimizer = build_optimizer(factory, model, fused=workers.fused_optimizer)

        def train(step: int) -> None:
            optimizer.zero_grad()
            sparse = ids(step, rank)
            dmp(torch.zeros(len(sparse), 0), sparse).sum().backward()
            optimizer.step()

        if load is None:
            for step in range(STEP):
                train(step)
            state = {"format": FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": STEP}
            Checkpoints(out / "checkpoints", workers=workers, tables=table_manifest(model)).save(state, STEP)
        else:
            state = load_checkpoint(load, gather=False)
            state = read_shards(state, {"model": model.state_dict(), "optimizer": optimizer.state_dict()})
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        probe = torch.stack([ids(9, 0), ids(9, 1)]).reshape(-1, 3)
        with torch.no_grad():
            before = dmp(torch.zeros(len(probe), 0), probe)
        parts = local_state(model, optimizer)
        train(STEP)
        with torch.no_grad():
            after = dmp(torch.zeros(len(probe), 0), probe)
        torch.save({"parts": parts, "before": before, "after": after}, out / f"rank-{rank}.pt")
    finally:
        workers.close()


def spawn(world: int, out: Path, load: Path | None = None, types: dict | None = None) -> list[dict]:
    import torch.multiprocessing as mp

    out.mkdir(parents=True, exist_ok=True)
    results = [out / f"rank-{rank}.pt" for rank in range(world)]
    try:
        mp.spawn(worker, args=(world, free_port(), out, load, types or {}), nprocs=world)
    except mp.ProcessExitedException as error:
        # torchrec's workers abort at interpreter exit now and then (about 1 run in 14), their work done
        if error.signal_name != "SIGABRT" or not all(result.exists() for result in results):
            raise
    return [torch.load(result, weights_only=True) for result in results]


def whole(results: list[dict]) -> dict[str, torch.Tensor]:
    """Every sharded entry assembled from the workers' parts."""
    shapes: dict[str, list[int]] = {}
    for result in results:
        for key, parts in result["parts"].items():
            for offsets, part in parts:
                end = [o + s for o, s in zip(offsets, part.shape, strict=False)]
                shapes[key] = [max(a, b) for a, b in zip(shapes.get(key, end), end, strict=True)]
    tensors = {key: torch.full(shape, float("nan")) for key, shape in shapes.items()}
    for result in results:
        for key, parts in result["parts"].items():
            for offsets, part in parts:
                tensors[key][tuple(slice(o, o + s) for o, s in zip(offsets, part.shape, strict=False))] = part
    return tensors


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A checkpoint of 2 workers (table a row-wise, b column-wise, c table-wise) and what they held."""
    pytest.importorskip("torchrec")
    out = tmp_path_factory.mktemp("written")
    types = {"embedding__a": {"type": "row_wise"}, "b": {"type": "column_wise"}, "c": {"type": "table_wise"}}
    results = spawn(2, out, types=types)
    return out / "checkpoints" / f"step-{STEP:09d}.pt", results


@pytest.mark.slow
def test_two_workers_write_the_file_and_their_shards_beside_it(written):
    path, results = written
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.with_suffix(".shards").name]
    shards = path.with_suffix(".shards")
    assert sorted(p.name for p in shards.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    state = torch.load(path, weights_only=True)  # a plain checkpoint file: no sharded tensor in it
    assert state["sharded"]["directory"] == shards.name
    assert state["sharded"]["tables"] == {"embedding.table.weight": FIELD_KEYS}
    assert sorted(state["sharded"]["files"]) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert all(state["model"][key] == SHARDED for key in FIELD_KEYS)
    assert state["model"]["linear.categorical.table.weight"].shape == (370, 1)  # width 1: whole, in the file
    entries = read_metadata(shards).state_dict_metadata
    assert set(entries) == set(whole(results))  # the tables and the fused optimizer's state


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 1])
def test_a_checkpoint_of_two_workers_loads_on_one_and_on_two(written, tmp_path, world):
    """The tables and the fused optimizer's state come back (resharded), reach fbgemm (the same outputs), and
    the next step on the same rows gives the same tables."""
    path, saved = written
    loaded = spawn(world, tmp_path, load=path)
    expected, got = whole(saved), whole(loaded)
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)
    for result in loaded:
        torch.testing.assert_close(result["before"], saved[0]["before"], rtol=0, atol=0)
    if world == 2:  # the same rows on each worker as the run that wrote it: the same step
        for mine, theirs in zip(loaded, saved, strict=True):
            torch.testing.assert_close(mine["after"], theirs["after"], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_one_process_reads_the_tables_whole_as_the_plain_model(written):
    path, saved = written
    state = load_checkpoint(path)
    model = Tiny()
    assert set(state["model"]) == set(model.state_dict())
    model.load_state_dict(state["model"])
    tables = whole(saved)
    fused = torch.cat([tables[f"model/{key}"] for key in FIELD_KEYS])
    torch.testing.assert_close(model.embedding.table.weight.detach(), fused, rtol=0, atol=0)
    with torch.no_grad():  # the plain model computes what the sharded one did
        probe = torch.stack([ids(9, 0), ids(9, 1)]).reshape(-1, 3)
        torch.testing.assert_close(model(torch.zeros(len(probe), 0), probe), saved[0]["before"])


@pytest.fixture
def one_worker(monkeypatch):
    """A started ModelParallel of one gloo worker in this process."""
    pytest.importorskip("torchrec")
    from easyrec.distributed import ModelParallel

    environment = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "LOCAL_RANK": "0"}
    for key, value in {**environment, "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    workers = ModelParallel(nproc_per_node=1, backend="gloo")
    workers.start()
    yield workers
    workers.close()


def sharded_trainer(workers, data, output_dir, **options):
    """A Trainer of a DeepFM whose tables ``workers`` shard, as ``easyrec train distributed=model_parallel`` builds
    it (tables deferred, sharded, the fused optimizer joined to the optimizer)."""
    from easyrec.losses import BinaryCrossEntropy
    from easyrec.models import DeepFM
    from easyrec.modules.embedding import deferred_tables
    from easyrec.optim import build_optimizer
    from easyrec.optim.fused import fused_params
    from easyrec.trainer import Trainer

    factory = functools.partial(torch.optim.Adagrad, lr=0.05)
    torch.manual_seed(0)
    with deferred_tables():
        model = DeepFM(data.input_spec, embedding_dim=4, hidden_units=[16])
    workers.shard(model, fused_params(factory, "cpu"), seed=0)
    optimizer = build_optimizer(factory, model, fused=workers.fused_optimizer)
    defaults = {"progress_bar": False, "device": "cpu", "max_epochs": 1, "eval_every_n_steps": 4}
    return Trainer(model, data, optimizer, BinaryCrossEntropy(), output_dir, distributed=workers, **defaults, **options)


def assert_same_weights(model: nn.Module, other: nn.Module) -> None:
    """``model``'s weights equal ``other``'s exactly (this worker's shards of sharded tables)."""
    for (name, mine), theirs in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        mine, theirs = (t.local_shards()[0].tensor if hasattr(t, "local_shards") else t for t in (mine, theirs))
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0, msg=name)


FEATURES = {
    "dense": [{"names": ["I1", "I2"], "transform": "log1p", "standardize": True}],
    "categorical": [{"names": ["C1", "C2", "C3"], "encoding": "vocab"}],
}
#: the worst evaluation is the best by this rule: the best weights are not the last
WORST = {"monitor": "eval/logloss", "monitor_mode": "max"}


def test_a_sharded_trainer_resumes_exactly_and_restores_its_best_weights(one_worker, tmp_path):
    from easyrec.data import SyntheticCTRData

    data = SyntheticCTRData(FEATURES, num_rows=3000, batch_size=256, seed=3)
    data.setup()
    whole = sharded_trainer(one_worker, data, tmp_path / "whole", checkpoint_every_n_steps=4, **WORST)
    metrics = whole.fit()
    assert whole.best["step"] != whole.last_eval_step and metrics == whole.history[whole.best["step"]]
    files = sorted(p.name for p in whole.checkpoints.directory.iterdir())
    assert files == ["best.pt", "best.shards", "step-000000004.pt", "step-000000004.shards"] + [
        "step-000000008.pt",
        "step-000000008.shards",
        "step-000000011.pt",
        "step-000000011.shards",
    ]
    state = load_checkpoint(whole.checkpoints.directory / "step-000000004.pt", gather=False)
    resumed = sharded_trainer(one_worker, data, tmp_path / "whole", **WORST)  # the run resumed in its directory
    resumed.load_state_dict(state)
    assert resumed.fit() == metrics and resumed.history == whole.history
    assert_same_weights(resumed.model, whole.model)


def test_shards_are_written_from_fbgemms_buffer_without_a_copy(one_worker, tmp_path):
    """fbgemm keeps a worker's tables in one buffer: each shard handed to DCP is re-seated on a storage of its own
    bytes aliasing that buffer (DCP would clone a view of a larger storage and hold the clones while writing: twice
    the worker's share of the tables in memory); the shards written read back the same."""
    from easyrec.data import SyntheticCTRData
    from easyrec.distributed.model_parallel import local_parts
    from easyrec.sharded_checkpoints import split_sharded, with_tight_storage

    data = SyntheticCTRData(FEATURES, num_rows=600, batch_size=256, seed=3)
    data.setup()
    trainer = sharded_trainer(one_worker, data, tmp_path / "run")
    _, sharded = split_sharded({"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict()})
    for key, value in sharded.items():
        (_, part), *_ = local_parts(value)
        assert part.untyped_storage().size() > part.nbytes, key  # a view into fbgemm's buffer
        (_, tight), *_ = local_parts(with_tight_storage(value))
        assert tight.untyped_storage().size() == tight.nbytes, key
        assert tight.data_ptr() == part.data_ptr(), key  # the same memory: no copy
    path = trainer.save_checkpoint()
    reloaded = sharded_trainer(one_worker, data, tmp_path / "other")
    reloaded.load_state_dict(load_checkpoint(path, gather=False))
    assert_same_weights(reloaded.model, trainer.model)


# ---------------------------------------------------------------------- in one process, without torchrec


def sharded_checkpoint(directory: Path, step: int = 1) -> Path:
    """A checkpoint as 2 workers would write it for a FieldEmbedding of fields of 3 and 2 rows (DCP in one process)."""
    path = directory / f"step-{step:09d}.pt"
    shards = path.with_suffix(".shards")
    tables = {"model/e.f0": torch.arange(6.0).reshape(3, 2), "model/e.f1": torch.arange(6.0, 10.0).reshape(2, 2)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DCP's note that it saves in one process
        dcp.save(tables, storage_writer=dcp.FileSystemWriter(shards), no_dist=True)
    files = {file.name: file_digest(file) for file in shards.iterdir()}
    model = {"e.f0": SHARDED, "e.f1": SHARDED, "bias": torch.ones(1)}
    sharded = {"directory": shards.name, "tables": {"e.table.weight": ["e.f0", "e.f1"]}, "files": files}
    write_atomically({"format": FORMAT, "step": step, "model": model, "sharded": sharded}, path)
    return path


def test_one_process_concatenates_the_field_tables_into_the_fused_table(tmp_path):
    state = load_checkpoint(sharded_checkpoint(tmp_path))
    assert set(state["model"]) == {"e.table.weight", "bias"}
    torch.testing.assert_close(state["model"]["e.table.weight"], torch.arange(10.0).reshape(5, 2))
    kept = load_checkpoint(tmp_path / "step-000000001.pt", gather=False)  # a resume reads the shards in place
    assert kept["model"]["e.f0"] == SHARDED


def test_a_missing_or_damaged_shards_directory_is_one_line_naming_it(tmp_path):
    path = sharded_checkpoint(tmp_path)
    shards = path.with_suffix(".shards")
    data = shards / "__0_0.distcp"
    content = bytearray(data.read_bytes())
    content[-20] ^= 0xFF  # one changed byte in a tensor
    data.write_bytes(bytes(content))
    with pytest.raises(CheckpointError, match=f"^{shards}: damaged \\(__0_0.distcp does not match its checksum\\)$"):
        load_checkpoint(path)
    data.unlink()
    with pytest.raises(CheckpointError, match=f"^{shards}: damaged \\(__0_0.distcp is missing\\)$"):
        load_checkpoint(path)
    for file in shards.iterdir():
        file.unlink()
    shards.rmdir()
    with pytest.raises(CheckpointError, match=f"^{shards}: missing \\(the sharded tables of {path}\\)$"):
        load_checkpoint(path)


def test_a_latest_checkpoint_whose_shards_are_damaged_falls_back_to_the_one_before(tmp_path, caplog):
    sharded_checkpoint(tmp_path, step=1)
    latest = sharded_checkpoint(tmp_path, step=2)
    (latest.with_suffix(".shards") / ".metadata").write_bytes(b"cut")
    with caplog.at_level("WARNING", logger="easyrec.checkpoints"):
        assert load_checkpoint(tmp_path)["step"] == 1
    [skipped, _] = [r.getMessage() for r in caplog.records if r.name == "easyrec.checkpoints"]
    shards = latest.with_suffix(".shards")
    assert skipped == f"skipping a damaged checkpoint: {shards}: damaged (.metadata does not match its checksum)"


def test_keeping_the_last_n_deletes_the_shards_with_their_file(tmp_path):
    for step in (1, 2, 3):
        sharded_checkpoint(tmp_path, step)
    Checkpoints(tmp_path, keep_last_n=2).save({"format": FORMAT, "step": 4}, 4)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["step-000000003.pt", "step-000000003.shards", "step-000000004.pt"]


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (self.marker, "pwned")


@pytest.mark.parametrize("content", ["code", "bytes"])
def test_metadata_that_names_anything_but_dcp_metadata_is_refused_unrun(tmp_path, content):
    """DCP itself unpickles its metadata with pickle.load; a file may choose code to run there. Here even with
    checksums rewritten to match (whoever edits a checkpoint can), nothing in it runs."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    path = sharded_checkpoint(tmp_path)
    shards, marker = path.with_suffix(".shards"), tmp_path / "pwned.txt"
    metadata = read_metadata(shards)
    if content == "code":
        metadata.planner_data = Payload(marker)
    else:  # DCP would read such an entry with torch.load(weights_only=False)
        metadata.state_dict_metadata["model/e.f0"] = BytesStorageMetadata()
    (shards / ".metadata").write_bytes(pickle.dumps(metadata))
    state = torch.load(path, weights_only=True)
    state["sharded"]["files"][".metadata"] = file_digest(shards / ".metadata")
    del state["checksum"]
    write_atomically(state, path)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    names = "pathlib.Path.write_text" if content == "code" else "BytesStorageMetadata"
    assert str(refused.value).startswith(f"{shards / '.metadata'}: not DCP metadata easyrec reads (it names ")
    assert names in str(refused.value) and "\n" not in str(refused.value)
    assert not marker.exists()


def test_a_sharded_checkpoint_resumes_only_with_model_parallel_and_a_plain_one_only_without(tmp_path):
    state = {"config": {"seed": 0}, "sharded": {"directory": "step-1.shards"}}
    with pytest.raises(CheckpointError, match="^step-1.pt holds sharded tables .* resume it with distributed="):
        check_resumable(state, {"seed": 0}, "step-1.pt")
    check_resumable(state, {"seed": 0}, "step-1.pt", sharded=True)
    with pytest.raises(CheckpointError, match="^step-1.pt holds whole tables .* trainer.init_from=step-1.pt$"):
        check_resumable({"config": {"seed": 0}}, {"seed": 0}, "step-1.pt", sharded=True)
