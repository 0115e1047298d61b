"""The optimizer of the sharded embedding tables (``distributed=model_parallel``): fbgemm applies it to the rows a
batch looked up inside the backward ("fused"), so it must compute what the run's optimizer computes.

Only optimizers whose update of a looked-up row is fbgemm's, and which leave the other rows alone, map:

- ``torch.optim.SGD`` without momentum, Nesterov or weight decay -> ``EXACT_SGD``: ``w ← w − lr·g``;
- ``torch.optim.Adagrad`` without lr decay or weight decay -> ``EXACT_ADAGRAD``: ``s ← s + g²; w ← w − lr·g/(√s + ε)``
  (fbgemm starts ``s`` at 0: :func:`start_accumulators` fills in ``initial_accumulator_value``);
- :class:`~easyrec.optim.RowWiseAdagrad` -> ``EXACT_ROWWISE_ADAGRAD``: ``s_r ← s_r + mean(g_r²); w_r ← w_r −
  lr·g_r/(√s_r + ε)``;
- :class:`~easyrec.optim.LazyAdam` -> ``ADAM`` (CUDA only: fbgemm has no CPU Adam), which adds ε to √v̂ where LazyAdam
  adds it to √v (TF's ε-hat) and counts its bias-correction step with every forward of the tables.

"Exact" optimizers sum a row's gradients over the batch before the update, as torch's sparse gradients do. Every
other optimizer is a ConfigError: plain Adam, AdamW, RMSProp and momentum move every row at every step (their
state decays), FTRL has no fbgemm counterpart, and fbgemm's LAMB takes its trust ratio per row where
:class:`~easyrec.optim.Lamb` takes it per table.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from easyrec.errors import ConfigError
from easyrec.optim.grouped import EMBEDDINGS, GroupedOptimizer, ParamGroup, table_group
from easyrec.optim.hyperparameters import factory_values
from easyrec.optim.lazy_adam import LazyAdam
from easyrec.optim.row_wise_adagrad import RowWiseAdagrad

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Counterpart:
    """The fbgemm optimizer (an ``EmbOptimType`` name) that computes what an easyrec optimizer option computes.

    ``arguments`` maps the optimizer's hyper-parameters to fbgemm's; ``neutral`` holds those fbgemm lacks, with the
    value that turns them off; ``accumulator`` names the hyper-parameter that starts fbgemm's ``momentum1``."""

    option: str
    fbgemm: str
    devices: tuple[str, ...]
    arguments: Callable[[dict[str, Any]], dict[str, Any]]
    neutral: dict[str, Any] = field(default_factory=dict)
    accumulator: str | None = None


def _lr(values: dict[str, Any]) -> dict[str, Any]:
    return {"learning_rate": values["lr"]}


def _lr_eps(values: dict[str, Any]) -> dict[str, Any]:
    return {"learning_rate": values["lr"], "eps": values["eps"]}


def _adam(values: dict[str, Any]) -> dict[str, Any]:
    beta1, beta2 = values["betas"]
    return {"learning_rate": values["lr"], "eps": values["eps"], "beta1": beta1, "beta2": beta2, "weight_decay": 0.0}


BOTH = ("cpu", "cuda")
#: The optimizers with a fused counterpart, by class (exactly: a subclass may compute something else).
COUNTERPARTS: dict[type, Counterpart] = {
    torch.optim.SGD: Counterpart(
        "sgd", "EXACT_SGD", BOTH, _lr, {"momentum": 0.0, "weight_decay": 0.0, "nesterov": False, "maximize": False}
    ),
    torch.optim.Adagrad: Counterpart(
        "adagrad",
        "EXACT_ADAGRAD",
        BOTH,
        _lr_eps,
        {"lr_decay": 0.0, "weight_decay": 0.0, "maximize": False},
        accumulator="initial_accumulator_value",
    ),
    RowWiseAdagrad: Counterpart(
        "row_wise_adagrad", "EXACT_ROWWISE_ADAGRAD", BOTH, _lr_eps, accumulator="initial_accumulator_value"
    ),
    LazyAdam: Counterpart("lazy_adam", "ADAM", ("cuda",), _adam),
}


def table_optimizer(factory: Any) -> tuple[str, Any]:
    """The config key of the optimizer that trains the sharded tables, and its factory: ``optimizer`` itself, or
    ``optimizer.groups.<name>.optimizer`` of a GroupedOptimizer's group with ``params: embeddings`` (else ``rest``)."""
    target = factory.func if isinstance(factory, functools.partial) else factory
    if not (isinstance(target, type) and issubclass(target, GroupedOptimizer)):
        return "optimizer", factory
    groups = factory.keywords.get("groups") or {}
    name = table_group(groups)
    if name is None:
        raise ConfigError(
            f"optimizer.groups: no group has params: {EMBEDDINGS} or rest, so none trains the sharded embedding tables "
            "of distributed=model_parallel; add one"
        )
    spec = groups[name]
    return f"optimizer.groups.{name}.optimizer", spec.optimizer if isinstance(spec, ParamGroup) else spec["optimizer"]


def fused_options(device_type: str) -> list[str]:
    """The optimizer options whose tables can train fused on ``device_type`` (``cpu`` or ``cuda``)."""
    return [c.option for c in COUNTERPARTS.values() if device_type in c.devices]


def counterpart_of(factory: Any, device_type: str) -> tuple[str, Counterpart, dict[str, Any]]:
    """The config key, fused counterpart and hyper-parameters of the tables' optimizer; a ConfigError when it has no
    counterpart on ``device_type`` or sets a hyper-parameter fbgemm lacks."""
    key, optimizer = table_optimizer(factory)
    target = optimizer.func if isinstance(optimizer, functools.partial) else optimizer
    counterpart = COUNTERPARTS.get(target)
    choices = ", ".join(fused_options(device_type)) or "none"
    name = getattr(target, "__name__", repr(target))
    if counterpart is None:
        raise ConfigError(
            f"{key}: {name} has no fused counterpart for the sharded embedding tables of distributed=model_parallel; "
            f"on {device_type} use {choices}"
        )
    if device_type not in counterpart.devices:
        raise ConfigError(
            f"{key}: {name} trains sharded tables fused as fbgemm's {counterpart.fbgemm}, which runs on "
            f"{' and '.join(counterpart.devices)} only; on {device_type} use {choices}"
        )
    values = factory_values(optimizer)
    for option, off in counterpart.neutral.items():
        if values.get(option, off) != off:
            raise ConfigError(
                f"{key}.{option}={values[option]}: fbgemm's fused {counterpart.fbgemm} has no {option}; set it to "
                f"{off} for distributed=model_parallel"
            )
    return key, counterpart, values


def fused_params(factory: Any, device_type: str) -> dict[str, Any]:
    """The ``fused_params`` of torchrec's sharders for the run's optimizer config (its ``instantiate``\\ d factory):
    ``{"optimizer": EmbOptimType.X, "learning_rate": ..., ...}``, from the optimizer itself, or from the group of a
    GroupedOptimizer with ``params: embeddings`` (else ``rest``). ConfigError (naming the key and listing the
    options that have a fused counterpart on ``device_type``) for an optimizer without one.

    Example::

        fused_params(partial(torch.optim.Adagrad, lr=0.05), "cpu")
        # {"optimizer": EmbOptimType.EXACT_ADAGRAD, "learning_rate": 0.05, "eps": 1e-10}
    """
    key, counterpart, values = counterpart_of(factory, device_type)
    if counterpart.fbgemm == "ADAM":
        log.warning(
            "%s: the sharded tables train with fbgemm's Adam, which adds eps to sqrt(v̂) where LazyAdam adds it to "
            "sqrt(v), and counts its bias-correction step with every forward of the tables (evaluation too)",
            key,
        )
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    return {"optimizer": EmbOptimType[counterpart.fbgemm], **counterpart.arguments(values)}


def start_accumulators(fused: torch.optim.Optimizer, factory: Any) -> None:
    """Fill the accumulators (``momentum1``) of the fused optimizer's local shards with the tables' optimizer's
    ``initial_accumulator_value``: fbgemm starts them at 0, torch's Adagrad at that value. Call once, after
    ``DistributedModelParallel`` is built and before training (a resumed state replaces them)."""
    _, optimizer = table_optimizer(factory)
    target = optimizer.func if isinstance(optimizer, functools.partial) else optimizer
    counterpart = COUNTERPARTS.get(target)
    accumulator = counterpart.accumulator if counterpart else None
    value = factory_values(optimizer)[accumulator] if accumulator else 0.0
    if not value:
        return
    for state in fused.state.values():
        for name, tensor in state.items():
            if name.endswith(".momentum1"):
                for shard in tensor.local_shards():
                    shard.tensor.fill_(value)
