"""Several optimizers, each over its own group of a model's parameters (EasyRec's MultiOptimizer)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from easyrec.errors import ConfigError
from easyrec.optim.hyperparameters import factory_values

#: Selector of every embedding table (the weights of ``nn.Embedding`` / ``nn.EmbeddingBag`` modules).
EMBEDDINGS = "embeddings"
#: Selector of every trainable parameter no other group claimed.
REST = "rest"
#: Prefix of a selector that is a regular expression searched in parameter names.
REGEX = "re:"
#: Suffix of the name under which the sharded tables' fused optimizer joins the group that trains them.
FUSED = ".fused"

OptimizerFactory = Callable[..., torch.optim.Optimizer]
NamedParameters = list[tuple[str, nn.Parameter]]


def embedding_parameter_names(model: nn.Module) -> set[str]:
    """Names of the weights of every embedding module of ``model``."""
    return {
        f"{module_name}.weight" if module_name else "weight"
        for module_name, module in model.named_modules()
        if isinstance(module, nn.Embedding | nn.EmbeddingBag)
    }


def fused_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters that a fused optimizer updates inside the backward: the sharded embedding tables of
    ``distributed=model_parallel`` (torchrec marks them with ``_in_backward_optimizers``); they get no ``.grad``."""
    return {name for name, param in model.named_parameters() if hasattr(param, "_in_backward_optimizers")}


def table_group(groups: Mapping[str, ParamGroup | Mapping[str, Any]]) -> str | None:
    """The group whose optimizer trains the sharded embedding tables: the one with ``params: embeddings``, else the
    one with ``params: rest`` (None: neither)."""
    selectors = {n: spec.params if isinstance(spec, ParamGroup) else spec.get("params") for n, spec in groups.items()}
    by_selector = {selector: name for name, selector in reversed(selectors.items())}  # the first of each selector
    return by_selector.get(EMBEDDINGS, by_selector.get(REST))


def select(model: nn.Module, selector: str, candidates: Mapping[str, nn.Parameter]) -> NamedParameters:
    """The parameters that ``selector`` picks among ``candidates``.

    ``"embeddings"``: the embedding tables; ``"rest"``: all ``candidates``; ``"re:<regex>"``: names where
    the regex is found; anything else: the parameters of that submodule (``"wide"``, ``"deep.mlp"``).
    """
    if selector == REST:
        return list(candidates.items())
    if selector == EMBEDDINGS:
        names = embedding_parameter_names(model)
        return [(n, p) for n, p in candidates.items() if n in names]
    if selector.startswith(REGEX):
        pattern = re.compile(selector[len(REGEX) :])
        return [(n, p) for n, p in candidates.items() if pattern.search(n)]
    return [(n, p) for n, p in candidates.items() if n == selector or n.startswith(selector + ".")]


@dataclass
class ParamGroup:
    """One group of a :class:`GroupedOptimizer`: its parameters (a selector, see :func:`select`), its optimizer
    factory, whether its embedding tables give sparse gradients, and its own lr schedule factory (None: the shared
    one)."""

    params: str
    optimizer: Any
    sparse_gradients: bool = False
    lr_schedule: Any = None


class NamedOptimizers:
    """Several torch optimizers stepped as one, each under a name: the groups of a :class:`GroupedOptimizer`, or an
    optimizer and the fused optimizer of the sharded embedding tables (``distributed=model_parallel``).

    Args:
        optimizers: ``{name: optimizer}``; a name ending in ``.fused`` is a fused optimizer (a torchrec
            ``KeyedOptimizer`` whose update runs inside the backward): its state is its ``state_dict()`` (sharded
            tensors) and its current lr, which it does not keep itself.
        schedule_factories: a name's own lr schedule factory; the other names take the shared one.
    """

    def __init__(
        self, optimizers: Mapping[str, torch.optim.Optimizer], schedule_factories: Mapping[str, Any] | None = None
    ) -> None:
        self.optimizers = dict(optimizers)
        self.schedule_factories = dict(schedule_factories or {})

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.optimizers.values() for group in optimizer.param_groups]

    def step(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients; a fused optimizer takes its groups' current lr here, before the backward that
        applies its update (the trainer calls this at the start of each step, after the schedules stepped)."""
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {
            name: {**optimizer.state_dict(), "lr": optimizer.param_groups[0]["lr"]}
            if name.endswith(FUSED)
            else optimizer.state_dict()
            for name, optimizer in self.optimizers.items()
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, optimizer in self.optimizers.items():
            if name.endswith(FUSED):  # its lr is not in its state_dict: the schedule set it before the save
                for group in optimizer.param_groups:
                    group["lr"] = state[name]["lr"]
            optimizer.load_state_dict(state[name])


class GroupedOptimizer(NamedOptimizers):
    """One optimizer per parameter group, stepped together; each param group is named after its group.

    Args:
        model: the model whose trainable parameters are split into groups.
        groups: ``{name: {"params": selector, "optimizer": factory, "sparse_gradients": bool,
            "lr_schedule": factory}}``. The optimizer factory builds a torch optimizer from named parameters
            (a Hydra ``_partial_``); the selector is described in :func:`select`; ``sparse_gradients`` makes
            the group's embedding tables produce sparse gradients, for optimizers that update only the rows
            a batch touched; ``lr_schedule`` (optional) replaces the shared schedule for this group. A
            ``rest`` group is filled last, whatever its position.
        fused: the fused optimizer of a sharded model's tables (``DistributedModelParallel.fused_optimizer``): the
            group that trains the tables (:func:`table_group`) takes it as ``<group>.fused`` beside its torch
            optimizer (if the group has other parameters), with its lr and lr schedule; the tables are left out of
            every torch optimizer, and another group that picks one of them is a ConfigError.

    Example::

        GroupedOptimizer(model, {
            "embeddings": {"params": "embeddings", "optimizer": partial(torch.optim.Adagrad, lr=0.05)},
            "dense": {"params": "rest", "optimizer": partial(torch.optim.Adam, lr=1e-3)},
        })
    """

    def __init__(
        self,
        model: nn.Module,
        groups: Mapping[str, ParamGroup | Mapping[str, Any]],
        fused: torch.optim.Optimizer | None = None,
    ) -> None:
        groups = param_groups_of(groups)
        tables = fused_parameter_names(model) if fused is not None else set()
        chosen, owner = partition(model, groups, tables)
        set_sparse_gradients(model, sparse_tables(model, groups, chosen))
        optimizers: dict[str, torch.optim.Optimizer] = {}
        schedule_factories = {n: spec.lr_schedule for n, spec in groups.items() if spec.lr_schedule}
        for name, picked in chosen.items():
            if picked:
                optimizers[name] = groups[name].optimizer(picked)
                for param_group in optimizers[name].param_groups:
                    param_group["group"] = name
            if name == owner:
                optimizers[name + FUSED] = as_group(fused, name, groups[name].optimizer)
                if groups[name].lr_schedule:
                    schedule_factories[name + FUSED] = groups[name].lr_schedule
        super().__init__(optimizers, schedule_factories)


def param_groups_of(groups: Mapping[str, ParamGroup | Mapping[str, Any]]) -> dict[str, ParamGroup]:
    """The groups of a GroupedOptimizer config as :class:`ParamGroup` s; ConfigError when there is none."""
    if not groups:
        raise ConfigError("optimizer.groups: no group; give at least one (e.g. params: rest)")
    return {name: spec if isinstance(spec, ParamGroup) else ParamGroup(**spec) for name, spec in groups.items()}


def partition(
    model: nn.Module, groups: Mapping[str, ParamGroup], tables: set[str] = frozenset()
) -> tuple[dict[str, NamedParameters], str | None]:
    """Each group's trainable named parameters (``rest`` last, whatever its position), and the group that trains the
    sharded ``tables`` (None without tables: see :class:`GroupedOptimizer`); ConfigError for a parameter claimed
    twice or by none, a group that picks nothing (but the tables' group, which may have only the tables), and a
    group other than the tables' that picks one of them."""
    named = dict(model.named_parameters())
    owner = table_group(groups) if tables else None
    if tables and owner is None:
        raise ConfigError(
            "optimizer.groups: no group has params: embeddings or rest, so none trains the sharded embedding "
            "tables; add one"
        )
    trainable = {n: p for n, p in named.items() if p.requires_grad and n not in tables}
    owner_of: dict[str, str] = {}
    chosen: dict[str, NamedParameters] = {}
    rest = [name for name, spec in groups.items() if spec.params == REST]
    if len(rest) > 1:
        raise ConfigError(f"optimizer.groups: {' and '.join(rest)} both take params: rest; keep one")
    for name, spec in sorted(groups.items(), key=lambda item: item[0] in rest):
        if spec.optimizer is None:
            raise ConfigError(f"optimizer.groups.{name}.optimizer: the group has no optimizer")
        selector = str(spec.params)
        # rest comes last and takes what is left; every other group picks among all trainable parameters
        pool = {n: p for n, p in trainable.items() if n not in owner_of} if name in rest else trainable
        picked = select(model, selector, pool)
        clash = [] if name in (owner, *rest) else select(model, selector, {n: named[n] for n in tables})
        if clash:
            raise ConfigError(
                f"optimizer.groups.{name}.params={selector}: picks the sharded embedding table {clash[0][0]}, "
                f"which trains fused with group '{owner}'s optimizer; leave the tables to that group"
            )
        if not picked and name != owner:
            raise ConfigError(f"optimizer.groups.{name}.params={selector}: matches no trainable parameter")
        for param_name, _ in picked:
            if param_name in owner_of:
                raise ConfigError(
                    f"optimizer.groups: parameter {param_name} is claimed by group '{owner_of[param_name]}' "
                    f"and group '{name}'"
                )
            owner_of[param_name] = name
        chosen[name] = picked
    unclaimed = [n for n in trainable if n not in owner_of]
    if unclaimed:
        left = ", ".join(unclaimed[:3]) + (", ..." if len(unclaimed) > 3 else "")
        raise ConfigError(f"optimizer.groups: parameters {left} belong to no group; add a group with params: rest")
    return chosen, owner


def sparse_tables(
    model: nn.Module, groups: Mapping[str, ParamGroup], chosen: Mapping[str, NamedParameters] | None = None
) -> set[str]:
    """The embedding tables of ``model`` that the groups with ``sparse_gradients`` train (``chosen``: the groups'
    parameters, default :func:`partition`'s)."""
    embeddings = embedding_parameter_names(model)
    chosen = partition(model, groups)[0] if chosen is None else chosen
    return {n for name, picked in chosen.items() if groups[name].sparse_gradients for n, _ in picked if n in embeddings}


def as_group(fused: torch.optim.Optimizer, name: str, factory: OptimizerFactory) -> torch.optim.Optimizer:
    """``fused`` with its param groups named ``name`` and at the lr of ``factory`` (fbgemm keeps it as a float32),
    which its lr schedule starts from."""
    lr = factory_values(factory)["lr"]
    for param_group in fused.param_groups:
        param_group["group"], param_group["lr"] = name, lr
    return fused


def set_sparse_gradients(model: nn.Module, weight_names: set[str]) -> None:
    """Make the embedding modules whose weights are named in ``weight_names`` produce sparse gradients."""
    for module_name, module in model.named_modules():
        weight_name = f"{module_name}.weight" if module_name else "weight"
        if isinstance(module, nn.Embedding | nn.EmbeddingBag) and weight_name in weight_names:
            module.sparse = True
