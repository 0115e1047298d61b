"""One fused embedding table for many categorical fields."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from easyrec.data.features import InputSpec, ListField

#: Whether FieldEmbedding tables are built on the meta device (see :func:`deferred_tables`).
_DEFERRED: ContextVar[bool] = ContextVar("easyrec_deferred_tables", default=False)


@contextmanager
def deferred_tables() -> Iterator[None]:
    """Inside this context, every :class:`FieldEmbedding` built allocates no table: its ``table.weight`` is on the
    ``meta`` device, for whoever shards the tables (``distributed=model_parallel``) to allocate and fill each
    worker's part only. The rest of the model is built as usual."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


class LookupPenalty(nn.Module):
    """EasyRec's ``embedding_regularization`` of a module's lookups: :meth:`keep_penalty` adds up
    ``l2 · Σ e² / 2`` of a training forward's embeddings (several lookups of one forward add), :meth:`take_penalty`
    hands it to the trainer once. A subclass sets ``l2`` (0: off) and ``penalty = None`` in its constructor."""

    l2: float
    penalty: Tensor | None

    @property
    def penalised(self) -> bool:
        """Whether a lookup now keeps a penalty: ``l2`` > 0, in a training forward with gradients."""
        return bool(self.l2) and self.training and torch.is_grad_enabled()

    def keep_penalty(self, embeddings: Tensor) -> None:
        """Add the penalty of ``embeddings`` (any shape) to the kept one, in a training forward with gradients."""
        if self.penalised:
            penalty = 0.5 * self.l2 * embeddings.float().square().sum()
            self.penalty = penalty if self.penalty is None else self.penalty + penalty

    def take_penalty(self) -> Tensor | None:
        """The scalar penalty of the last training forward since the last call (None if none), and forget it."""
        penalty, self.penalty = self.penalty, None
        return penalty


class FieldEmbedding(LookupPenalty):
    """Embeddings of F categorical fields, and of K multi-value or sequence features, in one table, each field
    owning a block of rows.

    Field f's local id i is row ``offsets[f] + i``, so one lookup serves every field (no Python loop
    over ``nn.Embedding``s). A list feature (:class:`~easyrec.data.features.ListField`) whose ``table`` is one of
    the fields reads that field's block (its ids are that field's ids); any other owns a block after the fields'.
    :meth:`pool` pools each row's ids of each list feature by its combiner with one ``embedding_bag`` call.

    Args:
        cardinalities: rows per field.
        dim: embedding width D.
        sparse: produce sparse gradients (only the looked-up rows), for optimizers that take them.
        init_std: standard deviation of the normal initialisation (1e-4, as DeepCTR and FuxiCTR: on Frappe it gave
            +0.002 to +0.008 eval AUC over 1e-2 after one epoch); 0 starts every row at zero.
        names: the fields' names (the tables of a sharded model are named after them); None: ``field0``, ...
        l2: EasyRec's ``embedding_regularization``: each training forward (with gradients) keeps
            ``penalty = l2 · Σ e² / 2`` over the looked-up embeddings ``e`` of the batch (not the whole table), which
            :meth:`take_penalty` hands to the trainer to add to the loss. It shrinks the embeddings of the ids in
            the batch, the rare ones most relative to their data. 0: off.
        lists: the list features :meth:`pool` embeds; their ``start`` and ``max_length`` place their ids in the
            ``lists (B, ΣL)`` a batch carries (any subset of its features, in any order).

    ``names`` and ``cardinalities`` (attributes) name every block of the table: the fields', then those of the list
    features with a table of their own.

    Example::

        emb = FieldEmbedding([10, 1000], dim=8)
        emb(torch.tensor([[3, 999], [0, 7]])).shape  # torch.Size([2, 2, 8])
        tags = ListField("tags", "multi_value", max_length=3, combiner="mean", start=0, cardinality=20)
        emb = FieldEmbedding([10, 1000], dim=8, lists=[tags])  # table rows: 10 + 1000 + 20
        emb.pool(torch.tensor([[4, 7, -1], [-1, -1, -1]])).shape  # torch.Size([2, 1, 8]); row 1: zeros
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        dim: int,
        sparse: bool = False,
        init_std: float = 1e-4,
        l2: float = 0.0,
        names: Sequence[str] | None = None,
        lists: Sequence[ListField] = (),
    ) -> None:
        super().__init__()
        if l2 < 0:
            raise ValueError(f"l2={l2}: must be >= 0")
        if names is not None and len(names) != len(cardinalities):
            raise ValueError(f"names: {len(names)} names for {len(cardinalities)} fields")
        self.l2, self.init_std = l2, init_std
        names = list(names) if names is not None else [f"field{f}" for f in range(len(cardinalities))]
        self.lists = tuple(lists)
        own = [f for f in self.lists if f.table not in names]
        self.names = names + [f.name for f in own]
        self.cardinalities = [int(c) for c in cardinalities] + [f.cardinality for f in own]
        self.penalty: Tensor | None = None
        # rows summed in Python: under torch.device("meta") (the memory check) a tensor holds no values
        starts = [0, *itertools.accumulate(self.cardinalities)][:-1]
        self.register_buffer("offsets", torch.tensor(starts[: len(cardinalities)], dtype=torch.int32), persistent=False)
        #: the first row of each block, by name
        self.block_starts = dict(zip(self.names, starts, strict=True))
        self._register_bags([self.block_starts[f.name if f in own else f.table] for f in self.lists])
        device = "meta" if _DEFERRED.get() else None
        self.table = nn.Embedding(sum(self.cardinalities), dim, sparse=sparse, device=device)
        self.reset_parameters()

    def _register_bags(self, blocks: list[int]) -> None:
        """The buffers :meth:`pool` reads, from the first row of each list feature's block."""
        columns = [list(range(f.columns.start, f.columns.stop)) for f in self.lists]
        widths = [len(c) for c in columns]

        def buffer(name: str, values: list, dtype: torch.dtype = torch.long) -> None:
            self.register_buffer(name, torch.tensor(values, dtype=dtype), persistent=False)

        buffer("list_columns", [c for block in columns for c in block])  # (C,) the columns of lists it reads
        buffer("list_rows", [row for row, w in zip(blocks, widths, strict=True) for _ in range(w)])  # (C,)
        buffer("bag_starts", [sum(widths[:k]) for k in range(len(widths))])  # (K,) each feature's first column
        buffer("bag_of_column", [k for k, w in enumerate(widths) for _ in range(w)])  # (C,)
        buffer("bag_means", [f.combiner == "mean" for f in self.lists], torch.bool)  # (K,)

    @classmethod
    def of_fields(
        cls,
        inputs: InputSpec,
        dim: int,
        sparse: bool = False,
        l2: float = 0.0,
        model: str | None = None,
        init_std: float = 1e-4,
    ) -> FieldEmbedding:
        """The table of every categorical field and list feature of ``inputs`` (their cardinalities and names),
        ``dim`` wide, initial rows normal with ``init_std``. ``model``: the name of a model that needs one width:
        ValueError for a feature whose ``embedding_dim`` is another."""
        if model is not None:
            one_width(inputs, dim, model)
        names = inputs.categorical_names
        return cls(inputs.cardinalities, dim, sparse=sparse, init_std=init_std, l2=l2, names=names, lists=inputs.lists)

    def reset_parameters(self) -> None:
        """Draw the table's initial rows (normal with ``init_std``, or zeros)."""
        if self.init_std > 0:
            nn.init.normal_(self.table.weight, std=self.init_std)
        else:
            nn.init.zeros_(self.table.weight)

    def forward(self, ids: Tensor, lists: Tensor | None = None) -> Tensor:
        """``ids (B, F) int`` local row per field -> ``(B, F, D)``; with ``lists (B, ΣL) int``, the K pooled list
        features follow the fields: ``(B, F + K, D)`` (see :meth:`pool`)."""
        embeddings = self.table(ids + self.offsets)
        self.keep_penalty(embeddings)
        if lists is None or not self.lists:
            return embeddings
        return torch.cat([embeddings, self.pool(lists)], dim=1)

    def pool(self, lists: Tensor) -> Tensor:
        """``lists (B, ΣL) int`` (each list feature's local ids in its columns, -1 after the last) -> ``(B, K, D)``:
        each row's embeddings of each of its K list features, summed or averaged (``combiner``); zeros for a row
        with no id. One ``embedding_bag`` over the B·K bags, padding weighted 0 (no Python loop per row)."""
        ids = lists.index_select(1, self.list_columns)  # (B, C)
        batch, width = ids.shape
        weights = (ids >= 0).to(self.table.weight.dtype)  # (B, C) 1 for an id, 0 for padding
        rows = ids.clamp(min=0).long() + self.list_rows  # padding reads its block's row 0, weighted 0
        bags = torch.arange(batch, device=ids.device).unsqueeze(1) * width + self.bag_starts  # (B, K)
        pooled = F.embedding_bag(
            rows.flatten(),
            self.table.weight,
            bags.flatten(),
            mode="sum",
            sparse=self.table.sparse,
            per_sample_weights=weights.flatten(),
        ).view(batch, len(self.lists), self.table.embedding_dim)
        if self.penalised:
            self.keep_penalty(self.table(rows) * weights.unsqueeze(2))
        counts = weights.new_zeros(batch, len(self.lists)).index_add_(1, self.bag_of_column, weights)  # (B, K)
        return pooled / torch.where(self.bag_means, counts.clamp(min=1), 1).unsqueeze(2)

    def lookup(self, ids: Tensor, block: str, penalised: bool = True) -> tuple[Tensor, Tensor]:
        """``ids (B, L) int``: local ids of the block named ``block`` (a field, or a list feature with its own
        block), -1 for none -> their embeddings ``(B, L, D)`` (zeros for -1) and the mask ``(B, L) bool`` (True: an
        id). A sequence feature read id by id (attention), or a field's embedding as its query. ``penalised=False``:
        a second lookup of embeddings whose penalty :meth:`forward` kept already (``l2``)."""
        if block not in self.block_starts:
            raise ValueError(f"{block!r}: no block of this table (its blocks: {', '.join(self.names)})")
        mask = ids >= 0
        embeddings = self.table(ids.clamp(min=0).long() + self.block_starts[block]) * mask.unsqueeze(2)
        if penalised:
            self.keep_penalty(embeddings)
        return embeddings, mask


def one_width(inputs: InputSpec, dim: int, model: str) -> None:
    """ValueError naming the first feature of ``inputs`` whose ``embedding_dim`` is not ``dim``: ``model`` gives
    every field one width."""
    categorical, lists = inputs.field_dims(dim)
    widths = [
        *zip(inputs.categorical_names, categorical, ["categorical"] * inputs.num_fields, strict=True),
        *((f.name, width, f.kind) for f, width in zip(inputs.lists, lists, strict=True)),
    ]
    for name, width, kind in widths:
        if width != dim:
            raise ValueError(
                f"embedding_dim: feature {name!r} is {width} wide (data.features.{kind}...embedding_dim) but {model} "
                f"gives every field one width, model.embedding_dim={dim}: unset the feature's or make them equal"
            )
