"""The check of a composed config before any work: every node against the constructor its ``_target_`` names.

A node's options are bound to the signature of its ``_target_`` (unknown keys, missing required ones, types and the
rules declared on the parameters: :mod:`easyrec.config.arguments`), at any depth, the way torchtune's ``tune validate``
checks its components; the root against :class:`~easyrec.config.schema.TrainConfig`. Binding imports the component's
module (torch, for most), so ``easyrec train`` checks the ``data`` node (torch-free) first: ``validate(cfg, "data")``.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from easyrec.config.arguments import FLOAT32_MAX
from easyrec.errors import ConfigError


def validate(cfg: DictConfig, group: str | None = None) -> None:
    """Check a composed ``train`` config (or only its ``group`` node); raise :class:`ConfigError` naming the first
    bad key (``optimizer.lr=-1.0: must be > 0``)."""
    from easyrec.config.schema import TrainConfig

    node = cfg if group is None else cfg[group]
    prefix = "" if group is None else f"{group}."
    _require_values(node, prefix)
    try:
        resolved = OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"{error.full_key}: {_first_line(error)}") from None
    _check_finite(resolved, prefix.rstrip("."))
    if group is None:
        _check(TrainConfig, resolved, "", partial=False)
        _check_nodes(resolved, "")
    else:
        # the run-wide keys first: the group's node may take them (data.seed is ${seed})
        run_wide = {key: cfg[key] for key in cfg if not isinstance(cfg[key], DictConfig | ListConfig)}
        _check(TrainConfig, run_wide, "", partial=True)
        _check_node(resolved, group)
        _check_nodes(resolved, group)


def _check_nodes(container: Any, path: str) -> None:
    """Check every node with a ``_target_`` under ``container`` (lists, ``_args_`` and partials included)."""
    items = container.items() if isinstance(container, dict) else enumerate(container)
    for key, child in items:
        here = f"{path}.{key}" if path else str(key)
        if isinstance(child, dict) and "_target_" in child:
            _check_node(child, here)
        if isinstance(child, dict | list):
            _check_nodes(child, here)


def _check_node(node: dict, path: str) -> None:
    """One node against the signature of its ``_target_``."""
    from hydra.utils import get_object

    from easyrec.config.arguments import HYDRA_KEYS
    from easyrec.config.schema import RUN_KEYS

    name = node["_target_"]
    try:
        target = get_object(name) if isinstance(name, str) else None
    except Exception as error:  # ImportError, or Hydra's own for a module without that attribute
        raise ConfigError(f"{path}._target_={name}: cannot be imported ({_first_line(error)})") from None
    if not callable(target):
        raise ConfigError(f"{path}._target_={name}: not a class or function")
    options = {key: value for key, value in node.items() if key not in HYDRA_KEYS}
    if path in RUN_KEYS:
        fields = RUN_KEYS[path].__dataclass_fields__
        _check(RUN_KEYS[path], {key: options.pop(key) for key in list(options) if key in fields}, path, partial=False)
    # a partial, or a node with positional _args_, is given its other arguments when it is called
    _check(target, options, path, partial=bool(node.get("_partial_")) or "_args_" in node)


def _check(target: Any, options: dict, path: str, partial: bool) -> None:
    from easyrec.config.arguments import OptionError, check_options  # pydantic: imported when a run starts

    try:
        check_options(target, options, partial, rules=_rules_of_foreign(target))
    except OptionError as error:
        raise ConfigError(str(error.under(path))) from None


def _rules_of_foreign(target: Any) -> dict[str, Any]:
    """Rules for the options of a component that is not ours: torch's optimizers share their hyper-parameters' names
    with easyrec's, whose rules :mod:`easyrec.optim.hyperparameters` declares once for all of them."""
    if getattr(target, "__module__", "").startswith("torch.optim"):
        from easyrec.optim.hyperparameters import HYPERPARAMETERS

        return HYPERPARAMETERS
    return {}


def _check_finite(container: Any, path: str) -> None:
    """Refuse NaN, inf and floats beyond float32's range (1e308), at any depth, in any component's options."""
    items = container.items() if isinstance(container, dict) else enumerate(container)
    for key, value in items:
        here = f"{path}.{key}" if path else str(key)
        if isinstance(value, float) and not abs(value) <= FLOAT32_MAX:
            raise ConfigError(f"{here}={value}: must be finite in float32 (|x| <= {FLOAT32_MAX:.4g})")
        if isinstance(value, dict | list):
            _check_finite(value, here)


def _require_values(cfg: DictConfig, path: str) -> None:
    """Refuse ``???`` (mandatory) values that were left unset."""
    for key in cfg.keys():
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{path}{key}: a value is required (e.g. {path}{key}=...)")
        if isinstance(cfg[key], DictConfig):
            _require_values(cfg[key], f"{path}{key}.")


def _first_line(error: Exception) -> str:
    return str(getattr(error, "msg", error)).strip().splitlines()[0]
