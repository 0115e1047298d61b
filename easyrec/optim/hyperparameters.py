"""The rules of the optimizers' hyper-parameters, declared once for easyrec's optimizers and torch's.

easyrec's optimizers annotate their parameters with these; torch's (``torch.optim.Adam`` in ``conf/optimizer``)
have no constructor of ours, so config validation applies :data:`HYPERPARAMETERS` to their options by name: the
optimizers name their hyper-parameters alike. No torch here, so the config check imports none for it.
"""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Interval, Le

from easyrec.config.arguments import FLOAT32_MAX, NonNegative

#: float32 parameters make a larger lr inf at the first step
LearningRate = Annotated[float, Interval(gt=0, le=FLOAT32_MAX)]
#: [0, 1): moment decays
Decay = Annotated[float, Interval(ge=0, lt=1)]
Betas = tuple[Decay, Decay]
NonPositive = Annotated[float, Le(0)]

#: The rule of each hyper-parameter, by name.
HYPERPARAMETERS: dict[str, Any] = {
    "lr": LearningRate,
    "betas": Betas,
    "decay": Decay,
    "momentum": Decay,
    "lr_power": NonPositive,
    "eps": NonNegative,
    "weight_decay": NonNegative,
    "initial_accumulator_value": NonNegative,
    "lr_decay": NonNegative,
    "dampening": NonNegative,
    "l1": NonNegative,
    "l2": NonNegative,
    "l2_shrinkage": NonNegative,
}
