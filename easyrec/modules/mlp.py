"""Multi-layer perceptron."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from easyrec.modules.activation import Activation
from easyrec.modules.activation import activation as activation_of


class MLP(nn.Module):
    """``Linear -> activation (-> Dropout)`` per hidden layer, then a linear output layer; Glorot-normal weights, zero
    biases.

    Args:
        in_features: input width.
        hidden_units: width of each hidden layer.
        out_features: output width; None: no output layer, the output is the last hidden layer's activations
            (a tower whose last layer is a hidden layer of what comes after it; the input itself without hidden
            layers).
        dropout: dropout after each hidden activation (0 = none).
        activation: ``relu``, ``prelu`` or ``dice`` (see :func:`~easyrec.modules.activation.activation`).

    ``self.out_features`` is the output width.
    """

    def __init__(
        self,
        in_features: int,
        hidden_units: Sequence[int],
        out_features: int | None = 1,
        dropout: float = 0.0,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for units in hidden_units:
            layers += [nn.Linear(width, units), activation_of(activation, units)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = units
        if out_features is not None:
            layers.append(nn.Linear(width, out_features))
        self.out_features = width if out_features is None else out_features
        self.layers = nn.Sequential(*layers)
        for layer in self.layers:
            if isinstance(layer, nn.Linear):  # Glorot, as Keras' Dense (EasyRec) and FuxiCTR initialise
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_features) -> (B, out_features)`` (PReLU takes its units on dim 1: keep the input 2-D)."""
        return self.layers(x)
