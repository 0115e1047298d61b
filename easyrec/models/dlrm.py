"""DLRM (Naumov et al., 2019, "Deep Learning Recommendation Model for Personalization and Recommendation Systems")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from annotated_types import MinLen
from torch import Tensor, nn

from easyrec.config.arguments import Fraction, NonNegative, PositiveInt, checked
from easyrec.data.features import InputSpec
from easyrec.modules import MLP, FieldEmbedding
from easyrec.modules.interaction import DotInteraction

#: std of the normal initial embeddings (see :class:`DLRM`); easyrec's other models start at 1e-4
EMBEDDING_INIT_STD = 0.01


def _bottom_meets_the_embeddings(embedding_dim: int, bottom_units: Sequence[int], **_: object) -> str | None:
    if bottom_units and bottom_units[-1] != embedding_dim:
        return (
            f"bottom_units={list(bottom_units)}: the last width must equal embedding_dim={embedding_dim} "
            "(the bottom MLP's output is dotted with the field embeddings)"
        )
    return None


class DLRM(nn.Module):
    """A bottom MLP on the dense features, the dot products of every pair of [its output, e_1, ..., e_F], and a top
    MLP on ``[bottom output, dot products]`` to the logits.

    ``z_0 = bottom(x)`` (``Linear -> ReLU`` per width of ``bottom_units``, the last equal to D), ``z_f = e_f``;
    ``logits = top([z_0, <z_i, z_j> for i < j])`` (:class:`~easyrec.modules.interaction.DotInteraction`; ``i <= j``
    with ``interaction_self``). Without dense features there is no bottom MLP: the pairs are those of the field
    embeddings alone. Every field has the same embedding width D (``embedding_dim``): the interaction dots them.

    The embeddings start normal(0, 0.01) (:data:`EMBEDDING_INIT_STD`), not at easyrec's 1e-4 (DeepFM's): every signal
    reaches the top MLP through products of two vectors, whose gradients are proportional to the other vector, so
    from 1e-4 the products stay near zero for epochs (measured: the DLRM of 1e-4 trails DeepFM by 0.0028 eval AUC on
    Frappe after 10 epochs and 0.0035 on the 1M synthetic set; see benchmarks/README.md). The reference
    (facebookresearch/dlrm) draws each table uniform in ``±sqrt(1/rows)``; that closes the gap on the synthetic set
    but not on Frappe, whose 2- to 10-row tables then start at up to ±0.7 and overfit (0.9345). With 0.01: 0.9506
    on Frappe (DeepFM 0.9402), 0.7346 on the 1M set (DeepFM 0.7364; a seed-sensitive 2-epoch number: another draw
    gave 0.7411). Dense layers are initialised as the reference's kernels (normal(0, sqrt(2/(in+out))), as every
    easyrec MLP), with zero biases.

    Args:
        inputs: field names and cardinalities (from the data component).
        embedding_dim: D of every field embedding, and the bottom MLP's output width.
        bottom_units: widths of the bottom MLP's layers; the last must equal ``embedding_dim``.
        top_units: widths of the top MLP's hidden layers (a linear layer to the logits follows).
        interaction_self: also each vector's dot product with itself (DLRM's ``--arch-interaction-itself``).
        dropout: dropout after each hidden activation of the bottom and top MLPs.
        sparse_embeddings: sparse gradients for the embedding table.
        embedding_regularization: EasyRec's ``embedding_regularization``: ``scale · Σ e² / 2`` over the embeddings
            looked up for each training batch (see :class:`~easyrec.modules.FieldEmbedding`), added to the loss.
        l2_regularization: EasyRec's ``l2_regularization``: ``scale · ΣW² / 2`` over the kernels W of the dense
            layers (not biases nor embeddings; see :class:`~easyrec.modules.kernel_penalty.KernelPenalty`), added
            to the training objective once per step.
        num_outputs: logits per sample (a loss such as JRC wants 2).

    Example::

        model = DLRM(InputSpec(("age",), ("city", "item"), (50, 1000)), embedding_dim=8, bottom_units=[16, 8])
        model(torch.randn(4, 1), torch.randint(0, 50, (4, 2))).shape  # torch.Size([4])
    """

    output_kind = "logits"

    @checked(across=_bottom_meets_the_embeddings)
    def __init__(
        self,
        inputs: InputSpec,
        embedding_dim: PositiveInt = 16,
        bottom_units: Annotated[Sequence[PositiveInt], MinLen(1)] = (512, 256, 16),
        top_units: Sequence[PositiveInt] = (512, 256),
        interaction_self: bool = False,
        dropout: Fraction = 0.0,
        sparse_embeddings: bool = False,
        embedding_regularization: NonNegative = 0.0,
        l2_regularization: NonNegative = 0.0,
        num_outputs: int = 1,
    ) -> None:
        super().__init__()
        self.l2_regularization = float(l2_regularization)  # read by the trainer (models.base.l2_regularization)
        if inputs.num_fields == 0:
            raise ValueError("DLRM needs at least one categorical feature")
        self.embedding = FieldEmbedding.of_fields(
            inputs, embedding_dim, sparse_embeddings, embedding_regularization, "DLRM", init_std=EMBEDDING_INIT_STD
        )
        # the bottom output, then the fields and the pooled list features
        num_vectors = inputs.num_fields + len(inputs.lists) + (1 if inputs.num_dense else 0)
        if num_vectors < 2 and not interaction_self:
            raise ValueError("interaction_self=false: one categorical feature and no dense one make no pair to dot")
        self.bottom = MLP(inputs.num_dense, bottom_units, None, dropout) if inputs.num_dense else None  # (B, D)
        self.interaction = DotInteraction(num_vectors, interaction_self)
        top_in = self.interaction.out_features + (embedding_dim if self.bottom is not None else 0)
        self.top = MLP(top_in, top_units, num_outputs, dropout)

    def forward(self, dense: Tensor, sparse: Tensor, lists: Tensor | None = None) -> Tensor:
        """``dense (B, D_dense) float``, ``sparse (B, F) int``, ``lists (B, ΣL) int`` or None ->
        logits ``(B,)``, or ``(B, num_outputs)``."""
        embeddings = self.embedding(sparse, lists)  # (B, F + K, D)
        if self.bottom is None:
            top_input = self.interaction(embeddings)
        else:
            bottom = self.bottom(dense)  # (B, D)
            interactions = self.interaction(torch.cat([bottom.unsqueeze(1), embeddings], dim=1))  # (B, (F+1)F/2)
            top_input = torch.cat([bottom, interactions], dim=1)
        logits = self.top(top_input)
        return logits.squeeze(1) if logits.shape[1] == 1 else logits
