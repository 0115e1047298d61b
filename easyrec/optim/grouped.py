"""Several optimizers, each over its own group of a model's parameters (EasyRec's MultiOptimizer)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from easyrec.errors import ConfigError

#: Selector of every embedding table (the weights of ``nn.Embedding`` / ``nn.EmbeddingBag`` modules).
EMBEDDINGS = "embeddings"
#: Selector of every trainable parameter no other group claimed.
REST = "rest"
#: Prefix of a selector that is a regular expression searched in parameter names.
REGEX = "re:"

OptimizerFactory = Callable[..., torch.optim.Optimizer]
NamedParameters = list[tuple[str, nn.Parameter]]


def embedding_parameter_names(model: nn.Module) -> set[str]:
    """Names of the weights of every embedding module of ``model``."""
    return {
        f"{module_name}.weight" if module_name else "weight"
        for module_name, module in model.named_modules()
        if isinstance(module, nn.Embedding | nn.EmbeddingBag)
    }


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


class GroupedOptimizer:
    """One optimizer per parameter group, stepped together; each param group is named after its group.

    Args:
        model: the model whose trainable parameters are split into groups.
        groups: ``{name: {"params": selector, "optimizer": factory, "sparse_gradients": bool,
            "lr_schedule": factory}}``. The optimizer factory builds a torch optimizer from named parameters
            (a Hydra ``_partial_``); the selector is described in :func:`select`; ``sparse_gradients`` makes
            the group's embedding tables produce sparse gradients, for optimizers that update only the rows
            a batch touched; ``lr_schedule`` (optional) replaces the shared schedule for this group. A
            ``rest`` group is filled last, whatever its position.

    Example::

        GroupedOptimizer(model, {
            "embeddings": {"params": "embeddings", "optimizer": partial(torch.optim.Adagrad, lr=0.05)},
            "dense": {"params": "rest", "optimizer": partial(torch.optim.Adam, lr=1e-3)},
        })
    """

    def __init__(self, model: nn.Module, groups: Mapping[str, ParamGroup | Mapping[str, Any]]) -> None:
        if not groups:
            raise ConfigError("optimizer.groups: no group; give at least one (e.g. params: rest)")
        groups = {name: spec if isinstance(spec, ParamGroup) else ParamGroup(**spec) for name, spec in groups.items()}
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        owner: dict[str, str] = {}
        chosen: dict[str, NamedParameters] = {}
        rest = [name for name, spec in groups.items() if spec.params == REST]
        if len(rest) > 1:
            raise ConfigError(f"optimizer.groups: {' and '.join(rest)} both take params: rest; keep one")
        for name, spec in sorted(groups.items(), key=lambda item: item[0] in rest):
            if spec.optimizer is None:
                raise ConfigError(f"optimizer.groups.{name}.optimizer: the group has no optimizer")
            selector = str(spec.params)
            # rest comes last and takes what is left; every other group picks among all trainable parameters
            pool = {n: p for n, p in trainable.items() if n not in owner} if name in rest else trainable
            picked = select(model, selector, pool)
            if not picked:
                raise ConfigError(f"optimizer.groups.{name}.params={selector}: matches no trainable parameter")
            for param_name, _ in picked:
                if param_name in owner:
                    raise ConfigError(
                        f"optimizer.groups: parameter {param_name} is claimed by group '{owner[param_name]}' "
                        f"and group '{name}'"
                    )
                owner[param_name] = name
            chosen[name] = picked
        unclaimed = [n for n in trainable if n not in owner]
        if unclaimed:
            left = ", ".join(unclaimed[:3]) + (", ..." if len(unclaimed) > 3 else "")
            raise ConfigError(f"optimizer.groups: parameters {left} belong to no group; add a group with params: rest")
        embeddings = embedding_parameter_names(model)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedule_factories = {n: spec.lr_schedule for n, spec in groups.items() if spec.lr_schedule}
        for name, picked in chosen.items():
            if groups[name].sparse_gradients:
                set_sparse_gradients(model, {n for n, _ in picked if n in embeddings})
            optimizer = groups[name].optimizer(picked)
            for param_group in optimizer.param_groups:
                param_group["group"] = name
            self.optimizers[name] = optimizer

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.optimizers.values() for group in optimizer.param_groups]

    def step(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[name])


def set_sparse_gradients(model: nn.Module, weight_names: set[str]) -> None:
    """Make the embedding modules whose weights are named in ``weight_names`` produce sparse gradients."""
    for module_name, module in model.named_modules():
        weight_name = f"{module_name}.weight" if module_name else "weight"
        if isinstance(module, nn.Embedding | nn.EmbeddingBag) and weight_name in weight_names:
            module.sparse = True
