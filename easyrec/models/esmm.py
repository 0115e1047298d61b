"""ESMM: entire space multi-task model (Ma et al., 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from easyrec.config.arguments import Fraction, NonNegative, PositiveInt, checked
from easyrec.data.features import InputSpec
from easyrec.modules import MLP
from easyrec.modules.feature_vector import FeatureVector


class ESMM(nn.Module):
    """A CTR tower and a CVR tower over shared embeddings, trained through ``p_ctcvr = p_ctr · p_cvr``.

    Both tasks are labelled on every impression (click; click and conversion), so the usual BCE on the two
    returned logits trains CVR on the entire space without the sample selection bias of training it on
    clicks only. The CVR tower is reached only through the product; ``cvr_logits`` reads it out.

    Args:
        inputs: field names and cardinalities (from the data component).
        task_outputs: must be (1, 1); the run sets it from the loss.
        embedding_dim: D.
        tower_units: widths of each tower's hidden layers.
        dropout: dropout after each hidden activation.
        sparse_embeddings: sparse gradients for the embedding table.
        embedding_regularization: EasyRec's ``embedding_regularization``: ``scale · Σ e² / 2`` over the embeddings
            looked up for each training batch (see :class:`~easyrec.modules.FieldEmbedding`), added to the loss.
        l2_regularization: EasyRec's ``l2_regularization``: ``scale · ΣW² / 2`` over the kernels W of the dense
            layers (not biases nor embeddings; see :class:`~easyrec.modules.kernel_penalty.KernelPenalty`), added
            to the training objective once per step.

    Example::

        model = ESMM(InputSpec(("age",), ("city", "item"), (50, 1000)), embedding_dim=8, tower_units=[32])
        model(torch.randn(4, 1), torch.randint(0, 50, (4, 2))).shape  # torch.Size([4, 2]): [ctr, ctcvr] logits
    """

    output_kind = "logits"

    @checked
    def __init__(
        self,
        inputs: InputSpec,
        task_outputs: Sequence[int] = (1, 1),
        embedding_dim: PositiveInt = 16,
        tower_units: Sequence[PositiveInt] = (256, 128, 64),
        dropout: Fraction = 0.0,
        sparse_embeddings: bool = False,
        embedding_regularization: NonNegative = 0.0,
        l2_regularization: NonNegative = 0.0,
    ) -> None:
        super().__init__()
        self.l2_regularization = float(l2_regularization)  # read by the trainer (models.base.l2_regularization)
        if tuple(task_outputs) != (1, 1):
            raise ValueError(
                f"ESMM has two tasks (ctr, ctcvr) of one logit each; got task_outputs={tuple(task_outputs)}"
            )
        self.features = FeatureVector(inputs, embedding_dim, sparse=sparse_embeddings, l2=embedding_regularization)
        self.ctr_tower = MLP(self.features.out_features, tower_units, 1, dropout)
        self.cvr_tower = MLP(self.features.out_features, tower_units, 1, dropout)

    def forward(self, dense: Tensor, sparse: Tensor, lists: Tensor | None = None) -> Tensor:
        """``dense (B, D_dense) float``, ``sparse (B, F) int``, ``lists (B, ΣL) int`` or None ->
        ``(B, 2)`` logits ``[ctr, ctcvr]``."""
        features = self.features(dense, sparse, lists)
        ctr, cvr = self.ctr_tower(features).squeeze(1), self.cvr_tower(features).squeeze(1)
        return torch.stack([ctr, product_logit(ctr, cvr)], dim=1)

    def cvr_logits(self, dense: Tensor, sparse: Tensor, lists: Tensor | None = None) -> Tensor:
        """``dense (B, D_dense) float``, ``sparse (B, F) int``, ``lists (B, ΣL) int`` or None ->
        ``(B,)`` logits of
        p(conversion | click)."""
        return self.cvr_tower(self.features(dense, sparse, lists)).squeeze(1)


def product_logit(a: Tensor, b: Tensor) -> Tensor:
    """The logit of ``sigmoid(a) · sigmoid(b)``, elementwise, finite with finite gradients for any finite a, b.

    ``log p = log σ(a) + log σ(b)``; ``1 − p = σ(−a) + σ(a)·σ(−b)`` exactly, so
    ``log(1 − p) = logaddexp(log σ(−a), log σ(a) + log σ(−b))`` needs no clamp even where p rounds to 1.
    """
    log_a, log_b = F.logsigmoid(a), F.logsigmoid(b)
    log_not_p = torch.logaddexp(F.logsigmoid(-a), log_a + F.logsigmoid(-b))
    return log_a + log_b - log_not_p
