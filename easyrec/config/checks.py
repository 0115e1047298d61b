"""Value rules for config schemas, and the walk that applies them to a composed config.

OmegaConf checks types when Hydra merges the YAML files and overrides into the schemas; these rules
check what types cannot express (``optimizer.lr > 0``) before any work starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from easyrec.errors import ConfigError


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
    if isinstance(default, list):
        kwargs["default_factory"] = lambda d=default: list(d)
    else:
        kwargs["default"] = default
    return dataclasses.field(metadata={"rule": rule}, **kwargs)


def validate(cfg: DictConfig, path: str = "") -> None:
    """Apply every schema rule in ``cfg``; raise :class:`ConfigError` naming the first bad key.

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
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{full_key}: a value is required (e.g. {full_key}=...)")
        value = cfg[key]
        rule = rules.get(key)
        if rule is not None and value is not None:
            plain = OmegaConf.to_container(value) if isinstance(value, ListConfig | DictConfig) else value
            if not rule.test(plain):
                raise ConfigError(f"{full_key}={plain}: {rule.requires}")
        if isinstance(value, DictConfig):
            validate(value, full_key)
        elif isinstance(value, ListConfig):
            for i, item in enumerate(value):
                if isinstance(item, DictConfig):
                    validate(item, f"{full_key}[{i}]")
