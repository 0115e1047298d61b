"""Optimizers torch lacks (EasyRec's FTRL, LAMB, lazy Adam, MomentumW, TF RMSProp, row-wise Adagrad),
learning-rate schedules, parameter groups with their own optimizers, and gradient treatment."""

from easyrec.optim.build import attach_loss_parameters, build_optimizer, build_schedules
from easyrec.optim.ftrl import Ftrl
from easyrec.optim.gradients import GradientTreatment
from easyrec.optim.grouped import GroupedOptimizer
from easyrec.optim.lamb import Lamb
from easyrec.optim.lazy_adam import LazyAdam
from easyrec.optim.momentumw import MomentumW
from easyrec.optim.rmsprop import TFRMSProp
from easyrec.optim.row_wise_adagrad import RowWiseAdagrad
from easyrec.optim.schedules import (
    ConstantLR,
    CosineDecayWithWarmup,
    ExponentialDecayWithBurnin,
    ManualStepLR,
    PolynomialDecay,
    StepSchedule,
    TransformerLR,
)

__all__ = [
    "GradientTreatment",
    "GroupedOptimizer",
    "attach_loss_parameters",
    "build_optimizer",
    "build_schedules",
    "Ftrl",
    "Lamb",
    "LazyAdam",
    "MomentumW",
    "RowWiseAdagrad",
    "TFRMSProp",
    "ConstantLR",
    "CosineDecayWithWarmup",
    "ExponentialDecayWithBurnin",
    "ManualStepLR",
    "PolynomialDecay",
    "StepSchedule",
    "TransformerLR",
]
