"""Building the optimizer(s) and learning-rate schedules of a model from their config factories."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from easyrec.errors import ConfigError
from easyrec.optim.fused import start_accumulators
from easyrec.optim.grouped import (
    EMBEDDINGS,
    FUSED,
    GroupedOptimizer,
    NamedOptimizers,
    as_group,
    embedding_parameter_names,
    fused_parameter_names,
    param_groups_of,
    set_sparse_gradients,
    sparse_tables,
)

#: torch optimizers that take sparse gradients (easyrec's own say so with ``supports_sparse_gradients``).
TORCH_SPARSE_CAPABLE = (torch.optim.SGD, torch.optim.Adagrad, torch.optim.SparseAdam)

Optimizer = torch.optim.Optimizer | NamedOptimizers
ScheduleFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def build_optimizer(
    factory: Callable[..., Optimizer], model: nn.Module, fused: torch.optim.Optimizer | None = None
) -> Optimizer:
    """Build the optimizer from its config factory.

    ``factory`` is a torch optimizer partial, given the trainable named parameters (an optimizer built for
    row-sparse updates, such as LazyAdam or Ftrl, first turns on sparse embedding gradients), or a
    :class:`GroupedOptimizer` partial, given the model. Raise a ConfigError if sparse gradients would reach
    an optimizer that cannot take them.

    ``fused``: the fused optimizer of a sharded model's tables (``DistributedModelParallel.fused_optimizer``, whose
    fbgemm optimizer :func:`easyrec.optim.fused.fused_params` chose from ``factory``). The tables are left out of
    every torch optimizer and ``fused`` joins the result as ``<group>.fused`` (a plain optimizer:
    ``embeddings.fused`` beside it, under ``""``), so that lr schedules, ``train/lr/<group>`` and the state dict
    cover it; its accumulators start at the optimizer's ``initial_accumulator_value``.
    """
    target = factory.func if isinstance(factory, functools.partial) else factory
    if isinstance(target, type) and issubclass(target, GroupedOptimizer):
        optimizer = factory(model, fused=fused)
    else:
        turn_on_sparse_gradients(factory, model)
        tables = fused_parameter_names(model) if fused is not None else set()
        optimizer = factory([(n, p) for n, p in model.named_parameters() if p.requires_grad and n not in tables])
        if tables:
            optimizer = NamedOptimizers({"": optimizer, EMBEDDINGS + FUSED: as_group(fused, EMBEDDINGS, factory)})
    if fused is not None and fused.param_groups:
        start_accumulators(fused, factory)
    check_sparse_support(optimizer, model)
    return optimizer


def turn_on_sparse_gradients(factory: Callable[..., Optimizer], model: nn.Module) -> None:
    """Make the embedding tables whose optimizer takes sparse gradients produce them, as :func:`build_optimizer`
    does: every table for an optimizer built for row-sparse updates, a GroupedOptimizer's groups with
    ``sparse_gradients``. DDP reads each table's choice when it wraps the model: a sharded model, wrapped before its
    optimizer exists (``distributed=model_parallel``), needs this first."""
    target = factory.func if isinstance(factory, functools.partial) else factory
    if isinstance(target, type) and issubclass(target, GroupedOptimizer):
        set_sparse_gradients(model, sparse_tables(model, param_groups_of(factory.keywords["groups"])))
    elif getattr(target, "prefers_sparse_gradients", False):
        set_sparse_gradients(model, embedding_parameter_names(model))


def inner_optimizers(optimizer: Optimizer) -> dict[str, torch.optim.Optimizer]:
    """``{group name: torch optimizer}``; a plain optimizer is the single group ``""``."""
    return dict(optimizer.optimizers) if isinstance(optimizer, NamedOptimizers) else {"": optimizer}


def check_sparse_support(optimizer: Optimizer, model: nn.Module) -> None:
    sparse = {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, nn.Embedding | nn.EmbeddingBag) and module.sparse
    }
    for name, inner in inner_optimizers(optimizer).items():
        takes_sparse = getattr(inner, "supports_sparse_gradients", isinstance(inner, TORCH_SPARSE_CAPABLE))
        where = f"optimizer.groups.{name}" if name else "optimizer"
        for group in inner.param_groups:
            if not any(id(p) in sparse for p in group["params"]):
                continue
            if not takes_sparse:
                raise ConfigError(
                    f"{where}: {type(inner).__name__} cannot take the sparse gradients of the embedding tables; "
                    "use sgd, adagrad, row_wise_adagrad, lazy_adam or ftrl for them, or model.sparse_embeddings=false"
                )
            # torch's SGD and Adagrad fail at their first step on weight decay with sparse gradients
            if isinstance(inner, TORCH_SPARSE_CAPABLE) and group.get("weight_decay"):
                key = f"{where}.optimizer.weight_decay" if name else f"{where}.weight_decay"
                raise ConfigError(
                    f"{key}={group['weight_decay']}: {type(inner).__name__} cannot apply weight decay to the sparse "
                    "gradients of the embedding tables; set it to 0, or model.sparse_embeddings=false"
                )


def build_schedules(shared: ScheduleFactory | None, optimizer: Optimizer, planned_steps: int | None = None) -> list:
    """One step-based scheduler per torch optimizer: its group's own ``lr_schedule``, else ``shared``.

    A schedule partial given ``total_steps=None`` (cosine, polynomial) runs over the whole training:
    ``planned_steps``, the trainer's step count (max_epochs x steps per epoch, or max_steps)."""
    own = optimizer.schedule_factories if isinstance(optimizer, NamedOptimizers) else {}
    schedules = []
    for name, inner in inner_optimizers(optimizer).items():
        factory = own.get(name) or shared
        if factory is None:
            continue
        if isinstance(factory, functools.partial) and "total_steps" in factory.keywords:
            if factory.keywords["total_steps"] is None:
                if planned_steps is None:
                    raise ValueError("total_steps=None: give a number of steps (the run fills in its planned steps)")
                factory = functools.partial(factory, total_steps=planned_steps)
        schedules.append(factory(inner))
    return schedules


def attach_loss_parameters(optimizer: Optimizer, loss: nn.Module) -> None:
    """Train a loss's own parameters (learned loss weights, logit scales) with the first torch optimizer (not a fused
    one, which takes no parameters), group ``loss``."""
    params = [(f"loss.{n}", p) for n, p in loss.named_parameters() if p.requires_grad]
    if params:
        first = next(inner for name, inner in inner_optimizers(optimizer).items() if not name.endswith(FUSED))
        first.add_param_group({"params": params, "group": "loss"})
