"""Several losses on the same output, combined by a weighting strategy (EasyRec's ``losses[]``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from easyrec.config.arguments import checked
from easyrec.losses.base import Loss
from easyrec.losses.l2 import L2Loss
from easyrec.losses.sigmoid_l2 import SigmoidL2Loss
from easyrec.losses.weighting import LossTerm, LossWeighting, Strategy


class WeightedLosses(Loss):
    """``Σ_k c_k·L_k`` over named losses of the same logits.

    Strategies (EasyRec's ``loss_weight_strategy``; see :class:`~easyrec.losses.weighting.LossWeighting`):

    * ``fixed``: ``c_k = weight_k``.
    * ``uncertainty`` (Kendall et al. 2018): a loss with ``learn_weight`` gets a trainable ``u_k`` (starts at 0)
      and contributes ``e^{−u_k}·L_k + ½u_k`` (``½e^{−u_k}·L_k + ½u_k`` for the L2 losses); the others
      ``weight_k·L_k``.
    * ``random``: ``c = softmax(N(0, I_K))``, drawn anew at every call in training (weights of 1/K in eval).

    Args:
        losses: ``{name: {"loss": module, "weight": float = 1.0, "learn_weight": bool = False}}``.
        strategy: one of ``fixed``, ``uncertainty``, ``random``.

    After each call, :meth:`log_values` gives ``train/loss/<name>`` and, when learned or random,
    ``train/loss_weight/<name>``.
    """

    @checked
    def __init__(self, losses: Mapping[str, LossTerm | Mapping[str, Any]], strategy: Strategy = "fixed") -> None:
        super().__init__()
        if not losses:
            raise ValueError("losses: give at least one")
        losses = {name: spec if isinstance(spec, LossTerm) else LossTerm(**spec) for name, spec in losses.items()}
        self.terms = nn.ModuleDict({name: Loss.of(spec.loss) for name, spec in losses.items()})
        self.weighting = LossWeighting(
            {name: float(spec.weight) for name, spec in losses.items()},
            learned=[name for name, spec in losses.items() if spec.learn_weight],
            halved=[name for name, term in self.terms.items() if isinstance(term, L2Loss | SigmoidL2Loss)],
            strategy=strategy,
        )
        self._takes_sessions = {name: term.takes_sessions for name, term in self.terms.items()}
        self._logged: dict[str, Tensor] = {}
        # The most demanding component decides which labels and data the whole loss needs.
        self.label_values = next((t.label_values for t in self.terms.values() if t.label_values), None)
        self.requires_sessions = any(t.requires_sessions for t in self.terms.values())

    @property
    def log_vars(self) -> nn.ParameterDict:
        """The learned ``u_k`` of the uncertainty strategy, by name."""
        return self.weighting.log_vars

    def forward(
        self, logits: Tensor, labels: Tensor, weights: Tensor | None = None, sessions: Tensor | None = None
    ) -> Tensor:
        """``logits (B,)``, ``labels (B,)``, ``weights (B,)`` or None, ``sessions (B,)`` or None -> scalar."""
        values = {
            name: term(logits, labels, weights, sessions=sessions)
            if self._takes_sessions[name]
            else term(logits, labels, weights)
            for name, term in self.terms.items()
        }
        total = self.weighting(values)
        # kept as detached tensors: read (and synchronised) only when the trainer logs them
        self._logged = {f"train/loss/{name}": value.detach() for name, value in values.items()}
        for name, weight in self.weighting.logged_weights().items():
            self._logged[f"train/loss_weight/{name}"] = torch.as_tensor(weight).detach()
        return total

    def part_names(self) -> list[str]:
        return list(self.terms)

    def log_values(self) -> dict[str, float]:
        """The components (and learned or random weights) of the last call."""
        return {key: float(value) for key, value in self._logged.items()}
