"""The input vector of a row: embeddings of its categorical fields next to its dense features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from easyrec.data.features import InputSpec
from easyrec.modules.embedding import FieldEmbedding


class FeatureVector(nn.Module):
    """``[e_1, ..., e_F, x]``: the D-wide embedding of each categorical field, then the dense features x.

    ``features`` picks a subset of the inputs by name (a tower that sees only the user's features); the
    subset gets its own embedding table.

    Args:
        inputs: field names and cardinalities (from the data component).
        embedding_dim: D.
        features: dense and categorical feature names to use, from ``inputs``; None: all of them.
        sparse: sparse gradients for the embedding table.

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
        else:
            dense_columns, categorical_columns = feature_columns(inputs, features)
        if not dense_columns and not categorical_columns:
            raise ValueError("no features: needs at least one dense or categorical feature")
        self.select = features is not None
        self.register_buffer("dense_columns", torch.tensor(dense_columns, dtype=torch.long), persistent=False)
        self.register_buffer(
            "categorical_columns", torch.tensor(categorical_columns, dtype=torch.long), persistent=False
        )
        cardinalities = [inputs.cardinalities[f] for f in categorical_columns]
        names = [inputs.categorical_names[f] for f in categorical_columns]
        self.embedding = (
            FieldEmbedding(cardinalities, embedding_dim, sparse=sparse, l2=l2, names=names) if cardinalities else None
        )
        self.out_features = len(categorical_columns) * embedding_dim + len(dense_columns)

    def forward(self, dense: Tensor, sparse: Tensor) -> Tensor:
        """``dense (B, D_dense) float``, ``sparse (B, F) int`` (all the inputs) -> ``(B, out_features)``."""
        if self.select:
            dense, sparse = dense.index_select(1, self.dense_columns), sparse.index_select(1, self.categorical_columns)
        if self.embedding is None:
            return dense
        embedded = self.embedding(sparse).flatten(1)  # (B, F'·D)
        return torch.cat([embedded, dense], dim=1) if dense.shape[1] else embedded


def feature_columns(inputs: InputSpec, features: Sequence[str]) -> tuple[list[int], list[int]]:
    """Columns of the named features: ``(dense columns, categorical columns)``, each in the order named."""
    dense, categorical = [], []
    for name in features:
        if name in inputs.dense_names:
            columns, column = dense, inputs.dense_names.index(name)
        elif name in inputs.categorical_names:
            columns, column = categorical, inputs.categorical_names.index(name)
        else:
            known = ", ".join(inputs.dense_names + inputs.categorical_names)
            raise ValueError(f"unknown feature {name!r}; the features are: {known}")
        if column in columns:
            raise ValueError(f"feature {name!r} is named twice")
        columns.append(column)
    return dense, categorical
