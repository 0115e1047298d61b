"""distributed=model_parallel: the FieldEmbeddingCollection against the FieldEmbedding it replaces, the initial rows,
the planner's overrides and errors on one in-process gloo worker, and one 2-worker ``easyrec train`` run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("torchrec")

from easyrec.config import validate  # noqa: E402
from easyrec.data.features import InputSpec, ListField  # noqa: E402
from easyrec.distributed import ModelParallel  # noqa: E402
from easyrec.distributed.model_parallel import Sharding  # noqa: E402
from easyrec.errors import ConfigError  # noqa: E402
from easyrec.modules import FieldEmbedding, LinearTerms  # noqa: E402
from easyrec.modules.embedding import deferred_tables  # noqa: E402
from easyrec.modules.embedding_collection import (  # noqa: E402
    INIT_BLOCK_ROWS,
    FieldEmbeddingCollection,
    fill_field_embedding,
    initial_rows,
    table_manifest,
)
from tests.conftest import QUICK, compose_config, free_port  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

CARDINALITIES, NAMES = [1000, 50, 30], ["a", "b", "c"]


def plain_embedding(l2: float = 0.0) -> FieldEmbedding:
    torch.manual_seed(0)
    return FieldEmbedding(CARDINALITIES, 8, names=NAMES, init_std=0.1, l2=l2)


def some_ids(rows: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, (rows,), generator=generator) for c in CARDINALITIES], 1)


def test_a_collection_looks_up_and_penalizes_as_the_field_embedding_it_came_from():
    plain = plain_embedding(l2=0.1)
    collection = FieldEmbeddingCollection.from_field_embedding(plain, "towers.0.embedding")
    assert collection.table_names == ["towers_0_embedding__a", "towers_0_embedding__b", "towers_0_embedding__c"]
    ids = some_ids(6)
    expected, got = plain(ids), collection(ids)
    assert got.shape == (6, 3, 8)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(collection.take_penalty(), plain.take_penalty())
    assert collection.take_penalty() is None  # taken once
    # the same gradient reaches the same rows
    expected.square().sum().backward()
    got.square().sum().backward()
    for name, rows in zip(collection.table_names, plain.table.weight.grad.split(CARDINALITIES), strict=True):
        torch.testing.assert_close(collection.weight(name).grad, rows)


def test_a_collection_takes_a_batch_of_no_rows():
    collection = FieldEmbeddingCollection("embedding", NAMES, CARDINALITIES, dim=4)
    empty = collection(torch.zeros(0, 3, dtype=torch.long))
    assert empty.shape == (0, 3, 4)


def test_initial_rows_do_not_depend_on_how_a_table_is_cut():
    rows = INIT_BLOCK_ROWS * 2 + 100
    whole = initial_rows(7, "embedding__a", range(rows), slice(None), 8, 0.5)
    assert whole.shape == (rows, 8) and 0.45 < float(whole.std()) < 0.55
    cut = INIT_BLOCK_ROWS - 3  # a row-wise shard boundary inside a block
    top, bottom = (
        initial_rows(7, "embedding__a", span, slice(None), 8, 0.5) for span in (range(cut), range(cut, rows))
    )
    torch.testing.assert_close(torch.cat([top, bottom]), whole, rtol=0, atol=0)
    left, right = (initial_rows(7, "embedding__a", range(rows), part, 8, 0.5) for part in (slice(0, 4), slice(4, 8)))
    torch.testing.assert_close(torch.cat([left, right], 1), whole, rtol=0, atol=0)
    assert not torch.equal(initial_rows(8, "embedding__a", range(10), slice(None), 8, 0.5), whole[:10])  # the seed
    assert not torch.equal(initial_rows(7, "embedding__b", range(10), slice(None), 8, 0.5), whole[:10])  # the table
    assert not initial_rows(7, "embedding__a", range(10), slice(None), 8, 0.0).any()  # init_std=0: zeros


def test_the_manifest_names_the_field_tables_that_make_the_fused_table():
    plain = plain_embedding()
    model = nn.Module()
    model.embedding = FieldEmbeddingCollection.from_field_embedding(plain, "embedding")
    manifest = table_manifest(model)
    assert list(manifest) == ["embedding.table.weight"]
    state = model.state_dict()
    torch.testing.assert_close(
        torch.cat([state[key] for key in manifest["embedding.table.weight"]]), plain.table.weight
    )


def test_a_sharding_config_reads_sizes_and_refuses_what_it_cannot_read():
    assert Sharding(memory_budget="4GB").budget_bytes() == 4 * 2**30
    assert Sharding(memory_budget="512 MiB").budget_bytes() == 512 * 2**20
    assert Sharding(memory_budget=1000).budget_bytes() == 1000
    assert Sharding().budget_bytes() is None
    with pytest.raises(ValueError, match="memory_budget=lots: not a size"):
        Sharding(memory_budget="lots")
    cfg = compose_config("distributed=model_parallel", "+distributed.sharding.tables.C1.type=diagonal")
    with pytest.raises(ConfigError) as refused:
        validate(cfg)
    assert "distributed.sharding.tables.C1.type=diagonal: must be one of: row_wise, table_wise" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_model_parallel_refuses_accumulating_micro_batches():
    with pytest.raises(ConfigError, match=r"accumulate_steps=2: .* \(fused optimizer\)"):
        ModelParallel(accumulate_steps=2)


def test_model_parallel_refuses_list_features_in_one_line():
    history = ListField("history", "sequence", 5, "mean", 0, 30, "c")
    ModelParallel().check_inputs(InputSpec((), tuple(NAMES), tuple(CARDINALITIES)))  # none: taken
    with pytest.raises(ConfigError) as refused:
        ModelParallel().check_inputs(InputSpec((), tuple(NAMES), tuple(CARDINALITIES), lists=(history,)))
    assert str(refused.value).startswith("data.features.sequence: distributed=model_parallel does not shard")
    assert "(history)" in str(refused.value) and "\n" not in str(refused.value)


def test_without_torchrec_the_error_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchrec", None)  # import torchrec raises ImportError
    with pytest.raises(ConfigError) as refused:
        ModelParallel()
    assert "pip install --no-deps torchrec==1.8.0 fbgemm-gpu-cpu==1.8.0" in str(refused.value)


def test_easyrec_train_without_torchrec_says_how_to_install_it_in_one_line(easyrec_main, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchrec", None)
    code, _, err = easyrec_main("train", "distributed=model_parallel", "logger=none", f"hydra.run.dir={tmp_path}")
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith("easyrec train: error: distributed=model_parallel needs torchrec and fbgemm")
    assert line.endswith("pip install --no-deps torchrec==1.8.0 fbgemm-gpu-cpu==1.8.0 (fbgemm-gpu==1.8.0 on CUDA)")


def test_an_optimizer_with_no_fused_counterpart_is_refused_in_one_line_before_any_worker_starts(easyrec_main, tmp_path):
    """The default optimizer (adam) has no fused counterpart: the launcher refuses it, no worker is started."""
    code, _, err = easyrec_main("train", "distributed=model_parallel", "logger=none", f"hydra.run.dir={tmp_path}")
    assert code == 2
    [line] = err.strip().splitlines()
    assert line == (
        "easyrec train: error: optimizer: Adam has no fused counterpart for the sharded embedding tables of "
        "distributed=model_parallel; on cpu use sgd, adagrad, row_wise_adagrad"
    )
    assert "starting" not in err


def test_easyrec_distributed_does_not_import_torchrec():
    code = "import sys, easyrec.distributed as d; d.ModelParallel; print('torchrec' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# ---------------------------------------------------------------------- one in-process gloo worker


class Tiny(nn.Module):
    """Tables of width 8 (sharded) and 1 (first-order weights: kept whole) over the same fields."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(CARDINALITIES, 8, names=NAMES, init_std=0.1)
        self.linear = LinearTerms(CARDINALITIES, 0, names=NAMES)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return self.embedding(sparse).sum(dim=(1, 2)) + self.linear(dense, sparse)


@pytest.fixture
def one_worker(monkeypatch):
    """``one_worker(sharding)``: a started ModelParallel of one gloo worker in this process."""
    port = free_port()
    environment = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "LOCAL_RANK": "0"}
    for key, value in {**environment, "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    started = []

    def start(**sharding) -> ModelParallel:
        workers = ModelParallel(nproc_per_node=1, backend="gloo", sharding=sharding)
        workers.start()
        started.append(workers)
        return workers

    yield start
    for workers in started:
        workers.close()


FUSED = {"learning_rate": 0.05}


def fused_params() -> dict:
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    return {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, **FUSED}


def plan_rows(table: str) -> dict[str, list[str]]:
    """The plan table's rows by table: rows, dim, sharding, ranks, bytes per rank."""
    header, _, *lines = table.splitlines()
    assert [cell.strip() for cell in header.split("|")] == [
        "table",
        "rows",
        "dim",
        "sharding",
        "ranks",
        "bytes per rank",
    ]
    cells = [[cell.strip() for cell in line.split("|")] for line in lines]
    return {row[0]: row[1:] for row in cells}


def test_a_sharded_model_starts_from_the_same_rows_and_takes_the_types_asked(one_worker):
    # a table's line wins over its field's, which wins over its module's
    tables = {"embedding": {"type": "table_wise"}, "a": {"type": "column_wise"}, "embedding__c": {"type": "row_wise"}}
    workers = one_worker(tables=tables)
    with deferred_tables():
        model = Tiny()
    sharded = workers.shard(model, fused_params(), seed=3)
    assert sharded is model and workers.wrap(model) is workers.dmp
    assert isinstance(model.embedding, FieldEmbeddingCollection) and isinstance(
        model.linear.categorical, FieldEmbedding
    )
    kinds = {name: workers._type_of(name) for name in workers._tables}
    assert kinds == {
        "embedding__a": "column_wise",
        "embedding__b": "table_wise",
        "embedding__c": "row_wise",
        "linear_categorical__a": "data_parallel",
        "linear_categorical__b": "data_parallel",
        "linear_categorical__c": "data_parallel",
    }
    # a FieldEmbedding filled with the same seed gives the same embeddings
    with deferred_tables():
        plain = Tiny()
    fill_field_embedding(plain.embedding, "embedding", 3, torch.device("cpu"))
    ids = some_ids(5)
    with torch.no_grad():
        torch.testing.assert_close(model.embedding(ids), plain.embedding(ids))
    plan = plan_rows(workers.plan_table())
    assert plan["embedding__c"] == ["30", "8", "row_wise", "0", "1,080"]
    # 1000 rows x 8 floats, and one row-wise Adagrad float per row
    assert plan["embedding__a"] == ["1,000", "8", "column_wise", "0", "36,000"]
    assert plan["linear_categorical__a"] == ["1,000", "1", "data_parallel", "0", "4,000"]
    assert plan["total"] == ["2,160", "", "", "0", f"{1080 * 8 * 4 + 1080 * 4 + 1080 * 4:,}"]
    [report] = workers.memory_report()
    assert report == {"weights": 1080 * 8 * 4, "optimizer_state": 1080 * 4, "replicated": 1080 * 4}
    assert list(workers.in_lockstep([1, 2])) == [1, 2]


def test_a_table_loaded_before_sharding_keeps_its_rows(one_worker):
    """trainer.init_from: the deferred tables are filled, the checkpoint loaded, then each worker keeps its rows."""
    workers = one_worker(tables={"a": {"type": "row_wise"}})
    with deferred_tables():
        model = Tiny()
    loaded = plain_embedding()
    fill_field_embedding(model.embedding, "embedding", 0, torch.device("cpu"))
    model.embedding.load_state_dict(loaded.state_dict())
    workers.shard(model, fused_params(), seed=0)
    ids = some_ids(5)
    with torch.no_grad():
        torch.testing.assert_close(model.embedding(ids), loaded(ids))


def test_a_sharding_line_that_names_no_table_lists_the_tables(one_worker):
    workers = one_worker(tables={"embeddings": {"type": "row_wise"}})
    with deferred_tables():
        model = Tiny()
    with pytest.raises(ConfigError) as refused:
        workers.shard(model, fused_params(), seed=0)
    message = str(refused.value)
    assert message.startswith("distributed.sharding.tables.embeddings: no such table, field or module")
    assert "the sharded tables are: embedding__a, embedding__b, embedding__c" in message
    assert "(width not a multiple of 4): linear.categorical" in message


def test_tables_over_the_memory_budget_are_a_config_error(one_worker):
    workers = one_worker(memory_budget="10KB")
    with deferred_tables():
        model = Tiny()
    with pytest.raises(ConfigError, match="distributed.sharding.memory_budget=10KB: torchrec finds no plan"):
        workers.shard(model, fused_params(), seed=0)


# ---------------------------------------------------------------------- two workers, end to end


#: a worker that aborts at interpreter exit, as about 1 torchrec job in 14 did after finishing its work
ABORT_AT_EXIT = """
import atexit, os, sys
def abort():
    if os.environ.get("LOCAL_RANK") == "1":
        sys.stderr.write("terminate called without an active exception\\n")
        os.abort()
atexit.register(abort)
"""


@pytest.mark.slow
def test_two_gloo_workers_train_a_sharded_model_and_write_the_plan(tmp_path):
    """2 workers train a row-wise sharded table with regularized embeddings; the plan is written; a worker that
    would abort in the interpreter's teardown after finishing does not fail the run."""
    run_dir, site = tmp_path / "run", tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(ABORT_AT_EXIT)
    args = [*QUICK, "data.num_rows=2000", "trainer.max_steps=3", "trainer.progress_bar=false", "logger=none"]
    args += ["distributed=model_parallel", "distributed.nproc_per_node=2", "distributed.backend=gloo"]
    args += ["+distributed.sharding.tables.C1.type=row_wise", "optimizer=adagrad"]
    args += ["model.embedding_regularization=1e-3", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": f"{site}{os.pathsep}{Path(__file__).parents[2]}"}
    done = subprocess.run(
        [sys.executable, "-m", "easyrec", "train", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    plan = plan_rows((run_dir / "sharding_plan.txt").read_text())
    rows, dim, kind, ranks, held = plan["embedding__C1"]
    assert (dim, kind, ranks) == ("4", "row_wise", "0,1") and len(held.split(", ")) == 2
    assert plan["linear_categorical__C1"][2:4] == ["data_parallel", "0,1"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == 3 and 0 < metrics["eval/auc"] < 1
