"""How several losses add up: fixed weights, uncertainty weighting (learned), or random weights."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from easyrec.config.arguments import NonNegative, checked

Strategy = Literal["fixed", "uncertainty", "random"]


@checked
@dataclass
class LossTerm:
    """One term of a weighted sum of losses: the loss, its weight, and whether that weight is learned."""

    loss: Any
    weight: NonNegative = 1.0
    learn_weight: bool = False


class LossWeighting(nn.Module):
    """``Σ_k c_k·L_k`` over named loss values (EasyRec's ``loss_weight_strategy``).

    * ``fixed``: ``c_k = weight_k``.
    * ``uncertainty`` (Kendall et al. 2018): a learned loss gets a trainable ``u_k`` (starts at 0) and contributes
      ``e^{−u_k}·L_k + ½u_k`` (``½e^{−u_k}·L_k + ½u_k`` for a regression loss named in ``halved``); the others
      ``weight_k·L_k``.
    * ``random``: ``c = softmax(N(0, I_K))``, drawn anew at every call in training (weights of 1/K in eval).

    Args:
        weights: ``{name: weight}`` in the order the values come.
        learned: the names with a learned weight (``strategy="uncertainty"`` only).
        halved: learned names whose term is halved (L2-type losses).
        strategy: one of ``fixed``, ``uncertainty``, ``random``.
        key: what the error messages call a term, e.g. ``"losses"`` or ``"tasks"``.
    """

    @checked
    def __init__(
        self,
        weights: Mapping[str, float],
        learned: Collection[str] = (),
        halved: Collection[str] = (),
        strategy: Strategy = "fixed",
        key: str = "losses",
    ) -> None:
        super().__init__()
        if not weights:
            raise ValueError(f"{key}: give at least one")
        learned = [name for name in weights if name in learned]
        if learned and strategy != "uncertainty":
            raise ValueError(f"{key}.{learned[0]}.learn_weight: needs strategy=uncertainty")
        self.strategy, self.weights, self.halved = strategy, dict(weights), set(halved)
        self.log_vars = nn.ParameterDict({name: nn.Parameter(torch.zeros(())) for name in learned})
        self._logged: dict[str, Tensor | float] = {}

    def forward(self, values: Mapping[str, Tensor]) -> Tensor:
        """Named scalar loss values -> their weighted sum (a scalar)."""
        coefficients = self._coefficients(next(iter(values.values())).device)
        total = next(iter(values.values())).new_zeros(())
        for name, value in values.items():
            if name in self.log_vars:
                u = self.log_vars[name]
                half = 0.5 if name in self.halved else 1.0
                total = total + half * torch.exp(-u) * value + 0.5 * u
            else:
                total = total + coefficients[name] * value
        self._logged = {name: torch.exp(-u.detach()) for name, u in self.log_vars.items()}
        if self.strategy == "random":
            self._logged.update(coefficients)
        return total

    def logged_weights(self) -> dict[str, Tensor | float]:
        """The learned (``e^{−u}``) or random weights of the last call, by name."""
        return dict(self._logged)

    def _coefficients(self, device: torch.device) -> dict[str, Tensor | float]:
        if self.strategy != "random":
            return dict(self.weights)
        if not self.training:
            return {name: 1.0 / len(self.weights) for name in self.weights}
        drawn = torch.softmax(torch.randn(len(self.weights), device=device), dim=0)
        return dict(zip(self.weights, drawn, strict=True))
