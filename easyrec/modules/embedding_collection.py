"""A model's :class:`~easyrec.modules.FieldEmbedding` tables as a torchrec ``EmbeddingBagCollection``: one table per
field, which ``distributed=model_parallel`` shards over the workers (see
:class:`~easyrec.distributed.ModelParallel`). Needs torchrec (the ``sharding`` extra)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from easyrec.modules.embedding import FieldEmbedding, LookupPenalty

#: fbgemm's fused kernels take tables whose (local) width is a multiple of 4; narrower tables stay FieldEmbeddings
WIDTH_MULTIPLE = 4
#: rows drawn from one seeded generator: a shard's initial rows are its blocks' rows, whatever the shard's bounds
INIT_BLOCK_ROWS = 4096


def table_name(path: str, field: str) -> str:
    """The table (and feature) name of field ``field`` of the FieldEmbedding at module path ``path`` (no dots: a
    table is a submodule of its collection)."""
    return f"{path}__{field}".replace(".", "_")


class FieldEmbeddingCollection(LookupPenalty):
    """The tables of a :class:`~easyrec.modules.FieldEmbedding` as one torchrec ``EmbeddingBagCollection``
    (:attr:`collection`), one table per field, named :func:`table_name` ``(path, field)``; same forward, ``l2`` and
    :meth:`take_penalty` as the FieldEmbedding it replaces.

    Sharded by torchrec, every worker's lookup is a collective over the same batch size: the forward pads its batch
    to the workers' largest (one all-reduce of a scalar) with empty bags (no id: a zero embedding, and no row
    touched, so no update of any row) and returns its own rows only. A worker with no rows (``B = 0``) takes part.

    Args:
        path: the module path of the FieldEmbedding in its model (names the tables).
        names: the fields' names (at least one).
        cardinalities: rows per field.
        dim: embedding width D.
        init_std: standard deviation of the initial rows (0: zeros); see :func:`initial_rows`.
        l2: see :class:`~easyrec.modules.FieldEmbedding`.
        device: where the tables are built (``meta``: nowhere, for the sharder to allocate each worker's part).

    Example::

        emb = FieldEmbeddingCollection("embedding", ["city", "item"], [10, 1000], dim=8)
        emb(torch.tensor([[3, 999], [0, 7]])).shape  # torch.Size([2, 2, 8])
    """

    def __init__(
        self,
        path: str,
        names: list[str],
        cardinalities: list[int],
        dim: int,
        init_std: float = 1e-4,
        l2: float = 0.0,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.path, self.names, self.cardinalities = path, list(names), [int(c) for c in cardinalities]
        self.dim, self.init_std, self.l2 = dim, init_std, l2
        self.table_names = [table_name(path, field) for field in self.names]
        self.penalty: Tensor | None = None
        tables = [
            EmbeddingBagConfig(
                name=name, embedding_dim=dim, num_embeddings=rows, feature_names=[name], pooling=PoolingType.SUM
            )
            for name, rows in zip(self.table_names, self.cardinalities, strict=True)
        ]
        self.collection = EmbeddingBagCollection(tables=tables, device=torch.device(device or "cpu"))
        if self.collection.embedding_bags[self.table_names[0]].weight.device.type != "meta":
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """Draw every table's initial rows (:func:`initial_rows` of ``seed``); not for sharded tables."""
        for name, rows in zip(self.table_names, self.cardinalities, strict=True):
            initial_rows(seed, name, range(rows), slice(None), self.dim, self.init_std, out=self.weight(name))

    @classmethod
    def from_field_embedding(
        cls, module: FieldEmbedding, path: str, device: torch.device | str | None = None
    ) -> FieldEmbeddingCollection:
        """The collection of ``module``'s fields, on ``device`` (None: its table's). A table with values (not on
        the ``meta`` device) gives its rows to the new tables."""
        weight = module.table.weight
        device = torch.device(device) if device is not None else weight.device
        built = cls(path, module.names, module.cardinalities, weight.shape[1], module.init_std, module.l2, device)
        if device.type != "meta" and weight.device.type != "meta":
            with torch.no_grad():
                for name, rows in zip(built.table_names, field_blocks(module), strict=True):
                    built.weight(name).copy_(rows)
        return built

    def weight(self, name: str) -> Tensor:
        """The (unsharded) weight of table ``name``: ``(rows, D)``."""
        return self.collection.embedding_bags[name].weight

    def forward(self, ids: Tensor, lists: Tensor | None = None) -> Tensor:
        """``ids (B, F) int`` local row per field -> ``(B, F, D)``. ``lists``: None, as the models pass a
        FieldEmbedding's (``distributed=model_parallel`` refuses data with list features before sharding)."""
        if lists is not None:
            raise ValueError("sharded tables take no multi-value or sequence features")
        rows, fields = ids.shape
        padded = largest_batch(rows, ids.device)
        if padded == 0:  # no worker has a row (torchrec takes no batch of none): nothing to look up
            return torch.zeros(0, fields, self.dim, device=ids.device)
        lengths = torch.zeros(fields, padded, dtype=torch.int32, device=ids.device)
        lengths[:, :rows] = 1
        features = KeyedJaggedTensor(
            keys=self.table_names, values=ids.t().reshape(-1).long(), lengths=lengths.reshape(-1)
        )
        pooled = self.collection(features)
        embeddings = pooled.values()[:rows].view(rows, fields, self.dim)
        keys = pooled.keys()
        if keys != self.table_names:  # a sharded collection returns its tables in the order of its shards
            embeddings = embeddings[:, [keys.index(name) for name in self.table_names]]
        self.keep_penalty(embeddings)
        return embeddings


def largest_batch(rows: int, device: torch.device) -> int:
    """The largest of the workers' ``rows`` (one all-reduce; ``rows`` itself in a single process)."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return rows
    largest = torch.tensor([rows], device=device)
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return int(largest.item())


def field_blocks(module: FieldEmbedding) -> list[Tensor]:
    """The rows of each field of ``module``'s table, in field order: views ``(rows_f, D)``."""
    return list(module.table.weight.split(module.cardinalities))


def swappable(module: nn.Module) -> bool:
    """Whether ``module`` is a FieldEmbedding that a collection can replace (fbgemm's width rule)."""
    return isinstance(module, FieldEmbedding) and module.table.embedding_dim % WIDTH_MULTIPLE == 0


def field_embeddings(model: nn.Module) -> Iterator[tuple[str, FieldEmbedding]]:
    """Every FieldEmbedding of ``model`` with its module path."""
    for path, module in model.named_modules():
        if isinstance(module, FieldEmbedding):
            yield path, module


def table_manifest(model: nn.Module) -> dict[str, list[str]]:
    """``{"<path>.table.weight": [state-dict keys of the field tables, in field order]}`` for every collection of
    ``model`` (sharded or not): concatenated in that order, the field tables are the fused table of the
    FieldEmbedding the collection replaced (a single-process reader rebuilds the plain model's key so)."""
    return {
        f"{path}.table.weight": [f"{path}.collection.embedding_bags.{name}.weight" for name in module.table_names]
        for path, module in model.named_modules()
        if isinstance(module, FieldEmbeddingCollection)
    }


def initial_rows(
    seed: int, table: str, rows: range, columns: slice, dim: int, std: float, out: Tensor | None = None
) -> Tensor:
    """Rows ``rows`` and ``columns`` of table ``table``'s initial values ``(len(rows), width)``: normal with ``std``
    (0: zeros), drawn in blocks of :data:`INIT_BLOCK_ROWS` full-width rows, each from a generator seeded by
    ``(seed, table, block)``. So a table starts the same however it is cut into shards (row-wise, column-wise) and
    on however many workers. ``out``: the ``(len(rows), width)`` tensor to write them into, block by block (a shard
    of fbgemm's weights: no copy of the shard is ever made); None: a new one."""
    width = len(range(dim)[columns])
    out = torch.empty(len(rows), width) if out is None else out
    if std == 0 or not len(rows):
        return out.zero_()
    for block in range(rows.start // INIT_BLOCK_ROWS, (rows.stop - 1) // INIT_BLOCK_ROWS + 1):
        digest = hashlib.blake2b(f"{seed}/{table}/{block}".encode(), digest_size=8).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
        drawn = torch.randn(INIT_BLOCK_ROWS, dim, generator=generator)[:, columns].mul_(std)
        start, stop = max(rows.start, block * INIT_BLOCK_ROWS), min(rows.stop, (block + 1) * INIT_BLOCK_ROWS)
        out[start - rows.start : stop - rows.start].copy_(
            drawn[start - block * INIT_BLOCK_ROWS : stop - block * INIT_BLOCK_ROWS]
        )
    return out


@torch.no_grad()
def fill_field_embedding(module: FieldEmbedding, path: str, seed: int, device: torch.device) -> None:
    """Allocate a deferred (``meta``) table of ``module`` on ``device`` and draw its rows with :func:`initial_rows`,
    field by field under the names its collection's tables would have."""
    module.table.to_empty(device=device)
    dim = module.table.embedding_dim
    for field, rows in zip(module.names, field_blocks(module), strict=True):
        name = table_name(path, field)
        initial_rows(seed, name, range(rows.shape[0]), slice(None), dim, module.init_std, out=rows)
