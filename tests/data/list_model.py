"""A model of the tests' own that takes ``lists``: DeepFM plus a first-order term of the list features' ids (the
built-in models learn list features in easyrec/models; the data tests need only a model that reads them)."""

import functools

from torch import Tensor, nn

from easyrec.models import DeepFM


class DeepFMWithListWeights(DeepFM):
    """DeepFM's logit plus, for each list feature, the sum of a learned weight per id of the row (padding: none)."""

    @functools.wraps(DeepFM.__init__)
    def __init__(self, inputs, *args, **kwargs) -> None:
        super().__init__(inputs, *args, **kwargs)
        self.fields = [field.columns for field in inputs.lists]
        self.list_weights = nn.ModuleList(nn.Embedding(field.cardinality, 1) for field in inputs.lists)

    def forward(self, dense: Tensor, sparse: Tensor, lists: Tensor) -> Tensor:
        """``dense (B, D)``, ``sparse (B, F)``, ``lists (B, ΣL)`` -> ``(B,)`` logits."""
        logits = super().forward(dense, sparse)
        for columns, weights in zip(self.fields, self.list_weights, strict=True):
            ids = lists[:, columns].long()
            logits = logits + (weights(ids.clamp(min=0)).squeeze(-1) * (ids >= 0)).sum(1)
        return logits
