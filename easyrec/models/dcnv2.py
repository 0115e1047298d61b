"""DCN V2 (Wang et al., 2021, "DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale Learning
to Rank Systems")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from annotated_types import Ge
from torch import Tensor, nn

from easyrec.config.arguments import Fraction, NonNegative, PositiveInt, checked
from easyrec.data.features import InputSpec
from easyrec.modules import MLP
from easyrec.modules.cross import CrossNetwork
from easyrec.modules.embedding import one_width
from easyrec.modules.feature_vector import FeatureVector


def _parallel_has_a_deep_part(structure: str, hidden_units: Sequence[int], **_: object) -> str | None:
    if structure == "parallel" and not hidden_units:
        return "hidden_units=[]: structure=parallel needs a deep network beside the cross network (or stacked)"
    return None


class DCNv2(nn.Module):
    """A cross network and a deep MLP over ``x_0 = [e_1, ..., e_F, x]`` (the field embeddings, flattened, then the
    dense features), then one linear layer to the logits.

    * ``stacked``: ``logits = W_out · deep(cross(x_0))``;
    * ``parallel``: ``logits = W_out · [cross(x_0), deep(x_0)]``.

    ``cross`` is :class:`~easyrec.modules.cross.CrossNetwork` (``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l``, W full-rank
    or ``low_rank``); ``deep`` is ``Linear -> ReLU`` per width of ``hidden_units`` (the identity when empty, so
    ``stacked`` with ``hidden_units=[]`` is the paper's cross network alone). Every field has the same embedding
    width D (``embedding_dim``), as in the paper; a multi-value or sequence feature is one more field, its ids'
    embeddings pooled by its combiner.

    Args:
        inputs: field names and cardinalities (from the data component).
        embedding_dim: D of every field embedding.
        cross_layers: L, the number of cross layers.
        low_rank: r of ``W_l = U_l V_lᵀ``; None: full-rank W_l (d×d, d = F·D + the dense features).
        structure: ``stacked`` (cross, then deep) or ``parallel`` (cross beside deep, concatenated).
        hidden_units: widths of the deep network's layers.
        dropout: dropout after each hidden activation of the deep network.
        sparse_embeddings: sparse gradients for the embedding table.
        embedding_regularization: EasyRec's ``embedding_regularization``: ``scale · Σ e² / 2`` over the embeddings
            looked up for each training batch (see :class:`~easyrec.modules.FieldEmbedding`), added to the loss.
        l2_regularization: EasyRec's ``l2_regularization``: ``scale · ΣW² / 2`` over the kernels W of the dense
            layers, the cross layers' included (not biases nor embeddings; see
            :class:`~easyrec.modules.kernel_penalty.KernelPenalty`), added to the training objective once per step.
        num_outputs: logits per sample (a loss such as JRC wants 2).

    Example::

        model = DCNv2(InputSpec(("age",), ("city", "item"), (50, 1000)), embedding_dim=8, hidden_units=[32])
        model(torch.randn(4, 1), torch.randint(0, 50, (4, 2))).shape  # torch.Size([4])
    """

    output_kind = "logits"

    @checked(across=_parallel_has_a_deep_part)
    def __init__(
        self,
        inputs: InputSpec,
        embedding_dim: PositiveInt = 16,
        cross_layers: Annotated[int, Ge(0)] = 3,
        low_rank: PositiveInt | None = None,
        structure: Literal["stacked", "parallel"] = "parallel",
        hidden_units: Sequence[PositiveInt] = (400, 400, 400),
        dropout: Fraction = 0.0,
        sparse_embeddings: bool = False,
        embedding_regularization: NonNegative = 0.0,
        l2_regularization: NonNegative = 0.0,
        num_outputs: int = 1,
    ) -> None:
        super().__init__()
        self.l2_regularization = float(l2_regularization)  # read by the trainer (models.base.l2_regularization)
        if inputs.num_fields == 0:
            raise ValueError("DCNv2 needs at least one categorical feature")
        one_width(inputs, embedding_dim, "DCNv2")
        self.features = FeatureVector(inputs, embedding_dim, sparse=sparse_embeddings, l2=embedding_regularization)
        width = self.features.out_features
        self.cross = CrossNetwork(width, cross_layers, low_rank)
        self.deep = MLP(width, hidden_units, out_features=None, dropout=dropout)
        self.stacked = structure == "stacked"
        self.output = MLP(self.deep.out_features + (0 if self.stacked else width), [], num_outputs)  # one Linear

    def forward(self, dense: Tensor, sparse: Tensor, lists: Tensor | None = None) -> Tensor:
        """``dense (B, D_dense) float``, ``sparse (B, F) int``, ``lists (B, ΣL) int`` or None ->
        logits ``(B,)``, or ``(B, num_outputs)``."""
        x0 = self.features(dense, sparse, lists)  # (B, d)
        if self.stacked:
            hidden = self.deep(self.cross(x0))
        else:
            hidden = torch.cat([self.cross(x0), self.deep(x0)], dim=1)  # (B, d + hidden_units[-1])
        logits = self.output(hidden)
        return logits.squeeze(1) if logits.shape[1] == 1 else logits
