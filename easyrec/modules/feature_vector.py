"""The input vector of a row: embeddings of its categorical fields and pooled list features next to its dense
features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from easyrec.data.features import InputSpec
from easyrec.modules.embedding import FieldEmbedding


class FeatureVector(nn.Module):
    """``[e_1, ..., e_F, p_1, ..., p_K, x]``: the embedding of each categorical field, each list feature's
    embeddings pooled by its combiner (:meth:`FieldEmbedding.pool`), then the dense features x.

    Each field is as wide as its ``embedding_dim`` (:meth:`InputSpec.field_dims`; the model's ``embedding_dim``
    when it has none): the fields of one width share one table (``embedding``: those of the model's width,
    ``embeddings[f"dim{w}"]``: those of another width w), each with the list features of that width; a list
    feature that shares a field's table (``table``) is in that field's table. The vector holds the fields of the
    model's width first (fields, then list features), then those of each other width in the order they first
    occur, then x.

    ``features`` picks a subset of the inputs by name (a tower that sees only the user's features); the
    subset gets its own embedding tables.

    Args:
        inputs: field names, cardinalities and list features (from the data component).
        embedding_dim: D, the width of a field that sets none.
        features: dense, categorical and list feature names to use, from ``inputs``; None: all of them.
        sparse: sparse gradients for the embedding tables.
        l2: see :class:`FieldEmbedding`.

    Example::

        inputs = InputSpec(("age",), ("city", "item"), (50, 1000))
        vector = FeatureVector(inputs, embedding_dim=8, features=["age", "item"])
        vector(torch.randn(4, 1), torch.randint(0, 50, (4, 2))).shape  # torch.Size([4, 9]) = 8 + 1
    """

    def __init__(
        self,
        inputs: InputSpec,
        embedding_dim: int,
        features: Sequence[str] | None = None,
        sparse: bool = False,
        l2: float = 0.0,
    ) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim={embedding_dim}: must be > 0")
        if features is None:
            dense_columns, categorical_columns = list(range(inputs.num_dense)), list(range(inputs.num_fields))
            list_columns = list(range(len(inputs.lists)))
        else:
            dense_columns, categorical_columns, list_columns = feature_columns(inputs, features)
        if not dense_columns and not categorical_columns and not list_columns:
            raise ValueError("no features: needs at least one dense, categorical or list feature")
        categorical_dims, list_dims = inputs.field_dims(embedding_dim)
        widths = (
            [embedding_dim] + [categorical_dims[f] for f in categorical_columns] + [list_dims[k] for k in list_columns]
        )
        groups = {width: ([], []) for width in widths}  # width -> (its categorical columns, its list features)
        for f in categorical_columns:
            groups[categorical_dims[f]][0].append(f)
        for k in list_columns:
            groups[list_dims[k]][1].append(inputs.lists[k])
        tables = {
            width: FieldEmbedding(
                [inputs.cardinalities[f] for f in fields],
                width,
                sparse=sparse,
                l2=l2,
                names=[inputs.categorical_names[f] for f in fields],
                lists=lists,
            )
            for width, (fields, lists) in groups.items()
            if fields or lists
        }
        self.embedding = tables.pop(embedding_dim, None)
        self.embeddings = nn.ModuleDict({f"dim{width}": table for width, table in tables.items()})
        order = [f for fields, _ in groups.values() for f in fields]  # the categorical columns, table by table
        self.select = features is not None or order != list(range(inputs.num_fields))
        self.register_buffer("dense_columns", torch.tensor(dense_columns, dtype=torch.long), persistent=False)
        self.register_buffer("categorical_columns", torch.tensor(order, dtype=torch.long), persistent=False)
        self.out_features = len(dense_columns) + sum(
            (len(fields) + len(lists)) * width for width, (fields, lists) in groups.items()
        )

    @property
    def tables(self) -> list[FieldEmbedding]:
        """The embedding tables, in the order of the vector."""
        return ([self.embedding] if self.embedding is not None else []) + list(self.embeddings.values())

    def table_of(self, block: str) -> FieldEmbedding:
        """The table with a block named ``block`` (a field, or a list feature with its own rows)."""
        for table in self.tables:
            if block in table.block_starts:
                return table
        raise ValueError(f"{block!r}: no table of this feature vector has its rows")

    def forward(self, dense: Tensor, sparse: Tensor, lists: Tensor | None = None) -> Tensor:
        """``dense (B, D_dense) float``, ``sparse (B, F) int``, ``lists (B, ΣL) int`` or None (all the inputs) ->
        ``(B, out_features)``."""
        if self.select:
            dense, sparse = dense.index_select(1, self.dense_columns), sparse.index_select(1, self.categorical_columns)
        parts, first = [], 0
        for table in self.tables:
            fields = table.offsets.shape[0]
            parts.append(table(sparse[:, first : first + fields], lists).flatten(1))  # (B, (F_w + K_w)·w)
            first += fields
        if dense.shape[1]:
            parts.append(dense)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def feature_columns(inputs: InputSpec, features: Sequence[str]) -> tuple[list[int], list[int], list[int]]:
    """Columns of the named features: ``(dense columns, categorical columns, indices in inputs.lists)``, each in
    the order named."""
    dense, categorical, lists = [], [], []
    list_names = [f.name for f in inputs.lists]
    for name in features:
        if name in inputs.dense_names:
            columns, column = dense, inputs.dense_names.index(name)
        elif name in inputs.categorical_names:
            columns, column = categorical, inputs.categorical_names.index(name)
        elif name in list_names:
            columns, column = lists, list_names.index(name)
        else:
            known = ", ".join(inputs.dense_names + inputs.categorical_names + tuple(list_names))
            raise ValueError(f"unknown feature {name!r}; the features are: {known}")
        if column in columns:
            raise ValueError(f"feature {name!r} is named twice")
        columns.append(column)
    return dense, categorical, lists
