"""EasyRec's ``l2_regularization``: an L2 penalty on the kernels of a model's dense layers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from easyrec.modules.experts import Experts


class KernelPenalty:
    """``l2 · Σ_W ΣW² / 2`` over the weight matrix ``W`` of every ``nn.Linear`` of a model and the stacked kernels of
    every :class:`~easyrec.modules.experts.Experts` (``tf.nn.l2_loss``, as EasyRec's ``kernel_regularizer`` on its
    dense layers): not their biases, not norms, not embedding tables.

    Unlike :class:`~easyrec.modules.embedding.LookupPenalty`, which sums over a batch's rows, this is a penalty on
    the weights, one per training step: the trainer adds each micro-batch's share of it to the objective, so the
    step's gradient gets ``l2·W`` once, however the step is split over workers and micro-batches. Calling it gives
    the scalar penalty, on the graph of the kernels.

    Args:
        model: the model; its ``nn.Linear`` and ``Experts`` modules are found once, here.
        l2: the scale, > 0.

    Example::

        penalty = KernelPenalty(nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1)), l2=1e-4)
        penalty()  # 1e-4 · (ΣW₁² + ΣW₂²) / 2
    """

    def __init__(self, model: nn.Module, l2: float) -> None:
        if l2 <= 0:
            raise ValueError(f"l2={l2}: must be > 0")
        self.kernels = [module.weight for module in model.modules() if isinstance(module, nn.Linear)]
        self.kernels += [
            weight for module in model.modules() if isinstance(module, Experts) for weight in module.weights
        ]
        self.l2 = float(l2)

    @classmethod
    def of(cls, model: nn.Module, l2: float) -> KernelPenalty | None:
        """The penalty of ``model``'s kernels at scale ``l2``; None when ``l2`` is 0 or it has no dense layer."""
        penalty = cls(model, l2) if l2 > 0 else None
        return penalty if penalty is not None and penalty.kernels else None

    def __call__(self) -> Tensor:
        """The scalar penalty (float32)."""
        return 0.5 * self.l2 * torch.stack([kernel.float().square().sum() for kernel in self.kernels]).sum()
