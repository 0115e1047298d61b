"""Row-wise Adagrad: one accumulator per row, the optimizer torchrec and fbgemm run fused for sharded tables."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from easyrec.config.arguments import NonNegative, checked
from easyrec.optim.hyperparameters import LearningRate
from easyrec.optim.sparse_rows import touched


class RowWiseAdagrad(Optimizer):
    """Adagrad whose accumulator is one number per row: fbgemm's ``EXACT_ROWWISE_ADAGRAD`` in plain torch.

    For each row ``r`` of a parameter (its first dimension; each element of a 1-D parameter is a row) with gradient
    ``g_r`` (``D`` values)::

        s_r = s_r + mean(g_r²)          (the mean over the row's D values)
        w_r = w_r − lr · g_r / (√s_r + ε)

    A row whose gradient is 0 keeps its weights and accumulator, so a dense gradient and a sparse one
    (``nn.Embedding(sparse=True)``: coalesced, duplicate rows summed, only its rows touched) give the same update:
    a ``distributed=ddp`` run with this optimizer and a ``distributed=model_parallel`` run, whose sharded tables
    fbgemm updates with the same formula inside the backward, do the same math. The state is a quarter to a
    sixty-fourth of Adagrad's for 4- to 64-wide tables. (fbgemm takes the mean over the columns a worker holds:
    a column-wise-sharded table keeps one accumulator per row and column shard.)

    Args:
        params: parameters or parameter groups.
        lr: learning rate, > 0.
        eps: ε added to √s, >= 0.
        initial_accumulator_value: the start of every ``s_r``, >= 0.

    State per parameter: ``sum``, shape ``(rows,)``.

    Example::

        RowWiseAdagrad(model.parameters(), lr=0.05)
    """

    supports_sparse_gradients = True
    #: Built for row-sparse updates: as the only optimizer of a model, it turns on sparse embedding gradients.
    prefers_sparse_gradients = True

    @checked
    def __init__(
        self,
        params: ParamsT,
        lr: LearningRate = 0.01,
        eps: NonNegative = 1e-10,
        initial_accumulator_value: NonNegative = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "eps": eps, "initial_accumulator_value": initial_accumulator_value})
        for group in self.param_groups:
            for param in group["params"]:
                rows = param.shape[0] if param.dim() else 1
                start = group["initial_accumulator_value"]
                self.state[param]["sum"] = torch.full((rows,), start, dtype=param.dtype, device=param.device)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter with a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                accumulator = self.state[param]["sum"]
                rows, grad = touched(param.grad)
                if rows is ...:
                    by_row = as_rows(grad)
                    accumulator.add_(by_row.square().mean(dim=1))
                    std = accumulator.sqrt().add_(group["eps"])
                    as_rows(param).addcdiv_(by_row, std.unsqueeze(1), value=-group["lr"])
                    continue
                (index,) = rows
                by_row = grad.reshape(len(index), -1)
                sums = accumulator.index_select(0, index).add_(by_row.square().mean(dim=1))
                std = sums.sqrt().add_(group["eps"])
                weights = as_rows(param).index_select(0, index).addcdiv_(by_row, std.unsqueeze(1), value=-group["lr"])
                as_rows(param).index_copy_(0, index, weights)
                accumulator.index_copy_(0, index, sums)
        return loss


def as_rows(tensor: Tensor) -> Tensor:
    """``tensor`` viewed as ``(rows, D)``: its first dimension by the rest (a scalar is one row of one value); a view,
    so that updating it updates ``tensor``."""
    return tensor.view(tensor.shape[0] if tensor.dim() else 1, -1)
