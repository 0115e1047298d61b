"""The cross network of DCN V2 (Wang et al., 2021, "DCN V2: Improved Deep & Cross Network")."""

from __future__ import annotations

from torch import Tensor, nn


class CrossNetwork(nn.Module):
    """L cross layers ``x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l``: each layer adds explicit feature crosses one
    degree higher than the last, the residual ``x_l`` keeping the lower ones.

    ``W_l`` is a full d×d matrix, or with ``low_rank = r`` the product ``U_l V_lᵀ`` of two d×r matrices (the paper's
    low-rank DCN, ``x_0 ⊙ (U_l (V_lᵀ x_l) + b_l) + x_l``: 2·d·r weights a layer instead of d²). Every kernel is an
    ``nn.Linear`` (Glorot-normal, biases zero), so ``l2_regularization`` reaches it.

    Args:
        in_features: d, the width of x_0.
        num_layers: L (0: the identity).
        low_rank: r; None: full-rank W.

    Example::

        cross = CrossNetwork(in_features=6, num_layers=2, low_rank=3)
        cross(torch.randn(4, 6)).shape  # torch.Size([4, 6])
    """

    def __init__(self, in_features: int, num_layers: int, low_rank: int | None = None) -> None:
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"num_layers={num_layers}: must be >= 0")
        if low_rank is not None and low_rank < 1:
            raise ValueError(f"low_rank={low_rank}: must be > 0")
        self.layers = nn.ModuleList(
            nn.Linear(in_features, in_features)
            if low_rank is None
            else nn.Sequential(nn.Linear(in_features, low_rank, bias=False), nn.Linear(low_rank, in_features))
            for _ in range(num_layers)
        )
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.out_features = in_features

    def forward(self, x0: Tensor) -> Tensor:
        """``(B, d) -> (B, d)``."""
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x
