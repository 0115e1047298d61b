"""Value rules for config schemas, and the validation of a composed config against the schemas.

OmegaConf checks types and keys when a node is merged into its schema; the rules check what types
cannot express (``optimizer.lr > 0``). Both run before any work starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from easyrec.errors import ConfigError

#: The largest float32: every float option ends up in float32 tensors (parameters, data), where a larger value is inf.
FLOAT32_MAX = 3.4028234663852886e38


@dataclasses.dataclass(frozen=True)
class Rule:
    """A predicate on one config value and the words that tell the user what it requires."""

    test: Callable[[Any], bool]
    requires: str


def gt(bound: float) -> Rule:
    return Rule(lambda v: v > bound, f"must be > {bound}")


def ge(bound: float) -> Rule:
    return Rule(lambda v: v >= bound, f"must be >= {bound}")


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Rule:
    """``low <= v <= high``, with either end open on request."""

    def test(v: float) -> bool:
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return above and below

    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return Rule(test, f"must be in {interval}")


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, f"must be one of: {', '.join(choices)}")


def each(rule: Rule) -> Rule:
    return Rule(lambda vs: all(rule.test(v) for v in vs), f"every element {rule.requires}")


def non_empty() -> Rule:
    return Rule(lambda v: len(v) > 0, "must not be empty")


def checked(default: Any = dataclasses.MISSING, rule: Rule | None = None, **kwargs: Any) -> Any:
    """A dataclass field whose value must satisfy ``rule`` (``None`` values are not checked)."""
    if isinstance(default, list | dict):
        kwargs["default_factory"] = lambda d=default: type(d)(d)
    else:
        kwargs["default"] = default
    return dataclasses.field(metadata={"rule": rule}, **kwargs)


def validate(cfg: DictConfig) -> None:
    """Check a composed ``train`` config; raise :class:`ConfigError` naming the first bad key.

    The root is checked against :class:`TrainConfig`; every node with a ``_target_`` that has a schema,
    at any depth, against that schema (types, unknown keys, then the ``checked`` rules). Nodes whose
    ``_target_`` has no schema (the user's own components) are left to their constructors.
    """
    from easyrec.config.schema import TrainConfig

    _require_values(cfg, "")
    try:
        resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as error:
        raise ConfigError(f"{error.full_key}: {_first_line(error)}") from None
    _check_finite(OmegaConf.to_container(resolved), "")
    _check_rules(_typed(TrainConfig, resolved, ""), "")
    _check_targets(resolved, "")


def _check_finite(container: Any, path: str) -> None:
    """Refuse NaN, inf and floats beyond float32's range (1e308), at any depth, in any component's options."""
    items = container.items() if isinstance(container, dict) else enumerate(container)
    for key, value in items:
        here = f"{path}.{key}" if path else str(key)
        if isinstance(value, float) and not abs(value) <= FLOAT32_MAX:
            raise ConfigError(f"{here}={value}: must be finite in float32 (|x| <= {FLOAT32_MAX:.4g})")
        if isinstance(value, dict | list):
            _check_finite(value, here)


def _check_targets(node: DictConfig | ListConfig, path: str) -> None:
    from easyrec.config.schema import SCHEMAS

    items = node.items() if isinstance(node, DictConfig) else enumerate(node)
    for key, child in items:
        child_path = f"{path}.{key}" if path else str(key)
        if isinstance(child, DictConfig) and child.get("_target_") in SCHEMAS:
            _check_rules(_typed(SCHEMAS[child._target_], child, f"{child_path}."), child_path)
        if isinstance(child, DictConfig | ListConfig):
            _check_targets(child, child_path)


def _require_values(cfg: DictConfig, path: str) -> None:
    """Refuse ``???`` (mandatory) values that were left unset."""
    for key in cfg.keys():
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{path}{key}: a value is required (e.g. {path}{key}=...)")
        if isinstance(cfg[key], DictConfig):
            _require_values(cfg[key], f"{path}{key}.")


def _typed(schema: type, node: DictConfig, prefix: str) -> DictConfig:
    """``node`` merged into ``schema``: wrong types and unknown keys raise a ConfigError."""
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as error:
        key = _locate(OmegaConf.to_container(node), str(error.key), getattr(error, "value", None)) or error.full_key
        raise ConfigError(f"{prefix}{key}: {_first_line(error)}") from None


def _locate(container: Any, key: str, value: Any, path: str = "") -> str | None:
    """Dotted path of the first ``key`` holding ``value`` (OmegaConf loses the path inside lists)."""
    items = container.items() if isinstance(container, dict) else enumerate(container)
    for name, child in items:
        here = f"{path}.{name}" if path else str(name)
        if str(name) == key and (value is None or child == value):
            return here
        if isinstance(child, dict | list):
            found = _locate(child, key, value, here)
            if found:
                return found
    return None


def _first_line(error: OmegaConfBaseException) -> str:
    return str(getattr(error, "msg", error)).strip().splitlines()[0]


def _check_rules(cfg: DictConfig, path: str) -> None:
    """Apply every ``checked`` rule of the typed ``cfg`` and its children.

    A schema may also define ``consistency(node) -> str | None`` for rules that span several keys;
    the string it returns starts with the node's key names, relative to the node.
    """
    schema = OmegaConf.get_type(cfg)
    rules = {}
    if dataclasses.is_dataclass(schema):
        rules = {f.name: f.metadata.get("rule") for f in dataclasses.fields(schema)}
        problem = schema.consistency(cfg) if hasattr(schema, "consistency") else None
        if problem:
            raise ConfigError(f"{path}.{problem}" if path else problem)
    for key in cfg.keys():
        full_key = f"{path}.{key}" if path else str(key)
        value = cfg[key]
        rule = rules.get(key)
        if rule is not None and value is not None:
            plain = OmegaConf.to_container(value) if isinstance(value, ListConfig | DictConfig) else value
            if not rule.test(plain):
                raise ConfigError(f"{full_key}={plain}: {rule.requires}")
        if isinstance(value, DictConfig):
            _check_rules(value, full_key)
        elif isinstance(value, ListConfig):
            for i, item in enumerate(value):
                if isinstance(item, DictConfig):
                    _check_rules(item, f"{full_key}.{i}")  # the form overrides use: key.0.sub=...
