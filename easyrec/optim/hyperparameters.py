"""The rules of the optimizers' hyper-parameters, declared once for easyrec's optimizers and torch's.

easyrec's optimizers annotate their parameters with these; torch's (``torch.optim.Adam`` in ``conf/optimizer``)
have no constructor of ours, so config validation applies :data:`HYPERPARAMETERS` to their options by name: the
optimizers name their hyper-parameters alike. No torch here, so the config check imports none for it.
"""

from __future__ import annotations

import functools
import inspect
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


def factory_values(factory: Any) -> dict[str, Any]:
    """The hyper-parameters that an optimizer factory (a class, or a partial of one, as Hydra's ``_partial_`` makes)
    builds its optimizer with: the constructor's defaults, overridden by the partial's keywords."""
    target = factory.func if isinstance(factory, functools.partial) else factory
    parameters = inspect.signature(target).parameters.values()
    values = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return values | (dict(factory.keywords) if isinstance(factory, functools.partial) else {})
