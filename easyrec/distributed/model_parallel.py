"""Embedding tables larger than one worker (EasyRec's parameter servers): torchrec model parallelism.

Every :class:`~easyrec.modules.FieldEmbedding` whose width fbgemm takes becomes a
:class:`~easyrec.modules.embedding_collection.FieldEmbeddingCollection`, sharded over the workers by torchrec's
``DistributedModelParallel`` with the plan of its ``EmbeddingShardingPlanner``; the rest of the model stays
data-parallel, as with ``distributed=ddp``. torchrec and fbgemm are an optional install (:data:`INSTALL`); this
module imports them only when a model is sharded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from easyrec.config.arguments import NonNegativeInt, Positive, checked
from easyrec.distributed.ddp import DDP, Backend
from easyrec.distributed.single import Count
from easyrec.errors import ConfigError

if TYPE_CHECKING:
    from easyrec.data.features import InputSpec

log = logging.getLogger(__name__)

#: how torchrec and fbgemm are installed beside easyrec (torchrec declares the CUDA fbgemm-gpu, which would replace
#: the CPU build: hence --no-deps)
INSTALL = (
    "pip install '.[sharding]' && pip install --no-deps torchrec==1.8.0 fbgemm-gpu-cpu==1.8.0 "
    "(fbgemm-gpu==1.8.0 on CUDA)"
)
TableType = Literal["row_wise", "table_wise", "column_wise", "data_parallel"]
#: what the planner may choose for a table the config does not name (data_parallel only when asked: a replicated
#: table is trained by the dense optimizer, not fused, and fbgemm warns of a missing autograd kernel)
DEFAULT_TYPES = ("row_wise", "table_wise", "column_wise")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


@checked
@dataclass(frozen=True)
class TableSharding:
    """How one table (or the tables of a field or of a module) is sharded.

    Args:
        type: ``row_wise`` (each worker holds a block of rows), ``table_wise`` (one worker holds the table),
            ``column_wise`` (each holds a block of columns) or ``data_parallel`` (every worker holds all of it,
            trained by the dense optimizer).
    """

    type: TableType


@checked
@dataclass(frozen=True)
class Sharding:
    """``distributed.sharding``: the planner's memory budget and the tables' sharding types.

    Args:
        memory_budget: memory each worker may give its shards (weights and optimizer state): bytes, or a size such
            as ``4GB``, ``512MiB`` (powers of 1024); None: the memory available to each worker.
        tables: ``{name: {type: ...}}`` where ``name`` is a field (all its tables), the module path of a
            FieldEmbedding (``embedding``), or a table (``embedding__item``); the others are planned.
    """

    memory_budget: int | str | None = None
    tables: Mapping[str, TableSharding] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", {k: as_table_sharding(v) for k, v in dict(self.tables).items()})
        self.budget_bytes()  # a size that does not parse is refused now

    @classmethod
    def from_config(cls, node: Sharding | Mapping[str, Any] | None) -> Sharding:
        """Accept a Sharding or its plain-dict form (as Hydra passes it)."""
        if isinstance(node, Sharding):
            return node
        return cls(**dict(node or {}))

    def budget_bytes(self) -> int | None:
        """:attr:`memory_budget` in bytes (None: not set)."""
        budget = self.memory_budget
        if budget is None or isinstance(budget, int):
            return budget
        match = _SIZE.match(budget)
        if not match:
            raise ValueError(f"memory_budget={budget}: not a size; give bytes or a size such as 4GB or 512MB")
        number, unit = float(match.group(1)), match.group(2).upper()
        return int(number * 1024 ** "KMGT".find(unit) * 1024) if unit else int(number)


def as_table_sharding(value: TableSharding | Mapping[str, Any]) -> TableSharding:
    return value if isinstance(value, TableSharding) else TableSharding(**dict(value))


def require_torchrec() -> None:
    """ConfigError naming the install command when torchrec or fbgemm cannot be imported."""
    try:
        with fbgemm_notes_hidden():
            import fbgemm_gpu  # noqa: F401
            import torchrec  # noqa: F401
    except (ImportError, OSError) as error:  # fbgemm built for another torch fails to load its library: OSError
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"distributed=model_parallel needs torchrec and fbgemm ({first}); install them with: {INSTALL}"
        ) from None


@contextmanager
def fbgemm_notes_hidden() -> Iterator[None]:
    """Inside, the root logger drops INFO records: fbgemm logs there a line per library it loads and a dozen per
    table batch it builds (its arguments, feature gates)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


class ModelParallel(DDP):
    """DDP workers whose embedding tables are sharded over them with torchrec (``distributed=model_parallel``):
    each worker holds and trains its shards only, with the sparse optimizer fused into the backward (fbgemm); the
    dense part is replicated and its gradients averaged, as with :class:`~easyrec.distributed.DDP`.

    The run builds the model with its tables deferred (:func:`~easyrec.modules.embedding.deferred_tables`), then
    :meth:`shard` plans, shards and fills them (the same initial rows on any number of workers), and the trainer
    trains :meth:`wrap`'s torchrec ``DistributedModelParallel``. Every worker must call the sharded model the same
    number of times (its lookups are collectives): the eval loop goes through :meth:`in_lockstep`.

    Args:
        sharding: the memory budget and per-table sharding types (:class:`Sharding`).
        accumulate_steps: must be 1: the fused tables update in every backward.
        (the others: see :class:`~easyrec.distributed.DDP`)
    """

    sharded = True

    @checked
    def __init__(
        self,
        nproc_per_node: Count = 2,
        nnodes: Count = 1,
        backend: Backend = "auto",
        rdzv_endpoint: str | None = None,
        rdzv_id: str | None = None,
        rdzv_timeout: Positive = 300.0,
        max_restarts: NonNegativeInt = 0,
        accumulate_steps: Count = 1,
        local_addr: str | None = None,
        sharding: Sharding | Mapping[str, Any] | None = None,
    ) -> None:
        require_torchrec()
        if accumulate_steps > 1:
            raise ConfigError(
                f"distributed.accumulate_steps={accumulate_steps}: distributed=model_parallel updates its sharded "
                "tables inside every backward (fused optimizer), so micro-batches cannot be summed first; use "
                "accumulate_steps=1 and a larger data.batch_size"
            )
        super().__init__(
            nproc_per_node, nnodes, backend, rdzv_endpoint, rdzv_id, rdzv_timeout, max_restarts, 1, local_addr
        )
        try:
            self.sharding = Sharding.from_config(sharding)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"distributed.sharding: {error}") from None
        self.dmp: Any = None
        self.plan: Any = None
        #: the model's tables by name, the sharded ones and those of the FieldEmbeddings kept whole (replicated)
        self._tables: dict[str, Table] = {}
        self._replicated: list[str] = []

    # ------------------------------------------------------------------ sharding the model

    def check_inputs(self, inputs: InputSpec) -> None:
        """ConfigError, before any table is built, for data the sharded tables cannot take: multi-value and
        sequence features (their lookups are pooled bags of the fused table, which the sharded collections do not
        serve yet)."""
        if inputs.lists:
            first = inputs.lists[0]
            raise ConfigError(
                f"data.features.{first.kind}: distributed=model_parallel does not shard the tables of multi-value and "
                f"sequence features yet ({first.name}); train them with distributed=ddp or without distributed"
            )

    def shard(
        self, model: nn.Module, fused_params: Mapping[str, Any], seed: int, device: torch.device | None = None
    ) -> nn.Module:
        """Shard ``model``'s embedding tables over the workers (a collective: every worker calls it) and return
        ``model``, sharded in place.

        Each FieldEmbedding of a width fbgemm takes (a multiple of 4) becomes a FieldEmbeddingCollection, planned
        under the memory budget and :attr:`sharding`'s types, and trained by the fused optimizer of
        ``fused_params`` (the sharder's: ``{"optimizer": EmbOptimType..., "learning_rate": ...}``); the others stay
        FieldEmbeddings, replicated. A table whose values were loaded (not on the ``meta`` device) keeps them; a
        deferred one starts from :func:`~easyrec.modules.embedding_collection.initial_rows` of ``seed``.
        ``device``: this worker's (None: ``trainer.device=auto``'s).
        """
        from torchrec.distributed import DistributedModelParallel

        from easyrec.modules.embedding_collection import (
            FieldEmbeddingCollection,
            field_blocks,
            field_embeddings,
            fill_field_embedding,
            swappable,
            table_name,
        )

        device = device or self.device("auto")
        logging.getLogger("torchrec").setLevel(logging.WARNING)  # its planner's notes: the plan table says it
        self._tables, self._replicated = {}, []
        sources: dict[str, torch.Tensor | None] = {}
        for path, module in list(field_embeddings(model)):
            if not swappable(module):
                if module.table.weight.is_meta:
                    fill_field_embedding(module, path, seed, device)
                self._replicated.append(path)
                for field_name, rows in zip(module.names, module.cardinalities, strict=True):
                    table = Table(path, field_name, rows, module.table.embedding_dim)
                    self._tables[table_name(path, field_name)] = table
                continue
            collection = FieldEmbeddingCollection.from_field_embedding(module, path, device="meta")
            loaded = not module.table.weight.is_meta
            blocks = field_blocks(module) if loaded else [None] * len(module.names)
            for name, field_name, rows, block in zip(
                collection.table_names, collection.names, collection.cardinalities, blocks, strict=True
            ):
                sources[name] = block
                self._tables[name] = Table(path, field_name, rows, collection.dim)
            parent, _, attribute = path.rpartition(".")
            setattr(model.get_submodule(parent), attribute, collection)
        sharder = every_type_sharder(fused_params)
        self.plan = self._plan(model, sharder, device)
        with fbgemm_notes_hidden():
            self.dmp = DistributedModelParallel(model, device=device, sharders=[sharder], plan=self.plan)
        self._fill(model, sources, seed)
        return model

    def _plan(self, model: nn.Module, sharder: Any, device: torch.device) -> Any:
        """torchrec's plan for ``model``'s collections, the same on every worker (planned on rank 0)."""
        from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
        from torchrec.distributed.planner.types import PlannerError

        from easyrec.memory import available_bytes

        types = self._table_types()
        constraints = {name: ParameterConstraints(sharding_types=list(kinds)) for name, kinds in types.items()}
        budget = self.sharding.budget_bytes()
        if budget is None:  # the workers of a CPU machine share its memory, as in the memory check
            sharing = self.nproc_per_node if device.type == "cpu" else 1
            budget = available_bytes(device) // sharing
        caps = {"hbm_cap": budget} if device.type == "cuda" else {"ddr_cap": budget}
        topology = Topology(
            world_size=self.world_size, compute_device=device.type, local_world_size=self.nproc_per_node, **caps
        )
        planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints, debug=False)
        try:
            return planner.collective_plan(model, [sharder], dist.GroupMember.WORLD)
        except PlannerError as error:
            first = str(error).strip().splitlines()[0]
            raise ConfigError(
                f"distributed.sharding.memory_budget={self.sharding.memory_budget or f'{budget:,} bytes (available)'}"
                f": torchrec finds no plan of the embedding tables over {self.world_size} workers ({first}); "
                "give more memory, more workers, or other types (distributed.sharding.tables)"
            ) from None

    def _table_types(self) -> dict[str, tuple[str, ...]]:
        """The sharding types the planner may choose for each sharded table: :data:`DEFAULT_TYPES`, or the one
        :attr:`sharding` gives its table, else its field, else its module."""
        sharded = {name: table for name, table in self._tables.items() if table.path not in self._replicated}
        types = {name: DEFAULT_TYPES for name in sharded}
        by_key: dict[str, list[str]] = {}
        for name, table in sharded.items():
            for key in {table.field, table.path, table.path.replace(".", "_"), name}:
                by_key.setdefault(key, []).append(name)
        modules = {key for table in sharded.values() for key in (table.path, table.path.replace(".", "_"))}

        def specificity(key: str) -> int:  # a module's line, then a field's, then a table's: the last one wins
            return 2 if key in sharded else 0 if key in modules else 1

        for key in sorted(self.sharding.tables, key=specificity):
            if key not in by_key:
                replicated = f"; kept whole on every worker (width not a multiple of 4): {', '.join(self._replicated)}"
                raise ConfigError(
                    f"distributed.sharding.tables.{key}: no such table, field or module; the sharded tables are: "
                    f"{', '.join(sharded)}{replicated if self._replicated else ''}"
                )
            for name in by_key[key]:
                types[name] = (self.sharding.tables[key].type,)
        return types

    @torch.no_grad()
    def _fill(self, model: nn.Module, sources: Mapping[str, torch.Tensor | None], seed: int) -> None:
        """Write every local shard of the sharded tables: its rows of the loaded table, else its initial rows.
        The state dict's ShardedTensors (and the replicated tables' tensors) are views of fbgemm's weights."""
        from easyrec.modules.embedding_collection import initial_rows

        for key, value in model.state_dict().items():
            name = table_of(key)
            if name not in sources:
                continue
            path, _, _, dim = self._tables[name]
            std = model.get_submodule(path).init_std
            for (row, column), part in local_parts(value):
                height, width = part.shape
                columns = slice(column, column + width)
                source = sources[name]
                if source is not None:
                    part.copy_(source[row : row + height, columns])
                else:
                    initial_rows(seed, name, range(row, row + height), columns, dim, std, out=part)

    # ------------------------------------------------------------------ what the trainer asks

    def wrap(self, model: nn.Module) -> nn.Module:
        """The ``DistributedModelParallel`` that :meth:`shard` built around ``model``."""
        if self.dmp is None or self.dmp.module is not model:
            raise ValueError("ModelParallel.wrap: shard the model first (ModelParallel.shard)")
        return self.dmp

    def no_sync(self, model: nn.Module) -> AbstractContextManager[Any]:
        return nullcontext()  # never accumulating (accumulate_steps is 1)

    @property
    def fused_optimizer(self) -> Any:
        """The DMP's fused optimizer of the sharded tables (a torchrec ``KeyedOptimizer``; None before
        :meth:`shard`)."""
        return self.dmp.fused_optimizer if self.dmp is not None else None

    def in_lockstep(self, batches: Iterable[Any]) -> Iterator[Any | None]:
        """``batches``, then None until every worker's have run out: each worker runs the sharded model as many
        times (None: run it on 0 rows). One all-reduce per batch."""
        iterator = iter(batches)
        device = self._collective_device()
        while True:
            batch = next(iterator, None)
            more = torch.tensor([int(batch is not None)], device=device)
            dist.all_reduce(more, op=dist.ReduceOp.MAX)
            if not int(more.item()):
                return
            yield batch

    # ------------------------------------------------------------------ what the plan costs

    def memory_report(self) -> list[dict[str, int]]:
        """Each worker's embedding memory, in rank order (a collective): ``weights`` and ``optimizer_state`` (the
        fused optimizer's) bytes of its shards of the sharded tables, and ``replicated``: bytes of the tables every
        worker holds whole (data_parallel ones, and the FieldEmbeddings left unsharded)."""
        local = self._local_bytes()
        mine = {"weights": 0, "optimizer_state": 0, "replicated": 0}
        for name, (weights, state) in local.items():
            kind = self._type_of(name)
            if kind == "data_parallel":
                mine["replicated"] += weights
            else:
                mine["weights"] += weights
                mine["optimizer_state"] += state
        return self.gather([mine])

    def plan_table(self) -> str:
        """The plan as a table (a collective: every worker calls it): table, rows, dim, sharding type, ranks, and
        the bytes each of those ranks holds (weights + fused optimizer state, measured from its shards); the last
        row, ``total``, sums every table's bytes on each rank."""
        per_rank = self.gather([self._local_bytes()])
        header = ("table", "rows", "dim", "sharding", "ranks", "bytes per rank")
        lines = []
        for name, (_, _, rows, dim) in self._tables.items():
            kind = self._type_of(name)
            ranks = [r for r, tables in enumerate(per_rank) if sum(tables.get(name, (0, 0))) > 0]
            held = ", ".join(f"{sum(per_rank[r][name]):,}" for r in ranks)
            lines.append((name, f"{rows:,}", str(dim), kind, ",".join(map(str, ranks)), held))
        every = ",".join(map(str, range(len(per_rank))))
        totals = ", ".join(f"{sum(sum(held) for held in tables.values()):,}" for tables in per_rank)
        lines.append(("total", f"{sum(table.rows for table in self._tables.values()):,}", "", "", every, totals))
        widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
        rows_text = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [header, *lines]]
        rows_text.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(rows_text)

    def _type_of(self, name: str) -> str:
        """The sharding type of table ``name`` in the plan (``data_parallel`` for an unsharded FieldEmbedding's)."""
        path = self._tables[name].path
        if path in self._replicated:
            return "data_parallel"
        return self.plan.plan[f"{path}.collection"][name].sharding_type

    def _local_bytes(self) -> dict[str, tuple[int, int]]:
        """``{table: (weight bytes, fused optimizer state bytes)}`` of this worker's part of each table."""
        from easyrec.modules.embedding_collection import table_name

        model = self.dmp.module
        local: dict[str, tuple[int, int]] = {}
        for key, value in model.state_dict().items():
            name = table_of(key)
            if name in self._tables:
                local[name] = (tensor_bytes(value), 0)
        for path in self._replicated:
            module = model.get_submodule(path)
            per_row = module.table.embedding_dim * module.table.weight.element_size()
            for field_name, rows in zip(module.names, module.cardinalities, strict=True):
                local[table_name(path, field_name)] = (rows * per_row, 0)
        for key, states in self.fused_optimizer.state_dict()["state"].items():
            name = table_of(str(key))
            if name in local:
                weights, state = local[name]
                local[name] = (weights, state + sum(tensor_bytes(v) for v in states.values()))
        return local


class Table(NamedTuple):
    """A table of the model: the FieldEmbedding's module path, its field, rows and width."""

    path: str
    field: str
    rows: int
    dim: int


def table_of(key: str) -> str | None:
    """The table name in a state-dict key ``....embedding_bags.<table>.weight`` (None for other keys)."""
    head, marker, tail = key.rpartition(".embedding_bags.")
    return tail.removesuffix(".weight") if marker and tail.endswith(".weight") else None


def local_parts(value: Any) -> list[tuple[tuple[int, int], torch.Tensor]]:
    """This worker's parts of a table's state-dict value, each with its (row, column) offset in the table: a
    ShardedTensor's local shards (views of fbgemm's weights), or a replicated tensor whole."""
    if hasattr(value, "local_shards"):
        return [(tuple(s.metadata.shard_offsets), s.tensor) for s in value.local_shards()]
    return [((0, 0), value)]


def tensor_bytes(value: Any) -> int:
    """Bytes of this worker's part of ``value`` (a ShardedTensor or a tensor)."""
    return sum(part.numel() * part.element_size() for _, part in local_parts(value))


def every_type_sharder(fused_params: Mapping[str, Any]) -> Any:
    """torchrec's EmbeddingBagCollectionSharder that offers every sharding type on every device: its own list
    for ``cpu`` leaves out row_wise, which trains on CPU with gloo."""
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.types import ShardingType

    class EveryShardingType(EmbeddingBagCollectionSharder):
        def sharding_types(self, compute_device_type: str) -> list[str]:
            kinds = (ShardingType.DATA_PARALLEL, ShardingType.TABLE_WISE, ShardingType.COLUMN_WISE)
            return [kind.value for kind in (*kinds, ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE)]

    return EveryShardingType(fused_params=dict(fused_params))
