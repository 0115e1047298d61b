"""An Optuna search space written in YAML (``hydra.sweeper.params``), checked before any trial runs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from easyrec.errors import ConfigError

KINDS = ("float", "int", "categorical")
PREFIX = "hydra.sweeper.params"


@dataclass(frozen=True)
class Param:
    """One searched key: a float or int range (``low``..``high``, ``log`` scale or a ``step``) or ``choices``."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: Any) -> Any:
        """The value ``trial`` (an ``optuna.Trial``) samples for this key."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def corners(self) -> list[Any]:
        """The values that bound this key's range: both ends, or every choice."""
        if self.type == "categorical":
            return list(self.choices)
        return [int(self.low), int(self.high)] if self.type == "int" else [self.low, self.high]


class SearchSpace:
    """``{"optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}, ...}``, read and checked.

    A key is a dotted config key (``optimizer.lr``) or a config group (``optimizer``, with ``choices`` among its
    options); nested mappings are read as dotted keys.
    """

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = [_read_param(key, spec) for key, spec in _leaves(params)]
        if not self.params:
            raise ConfigError(f"{PREFIX}: empty; give at least one key to search, e.g. optimizer.lr")

    def overrides(self, trial: Any) -> list[str]:
        """The command-line overrides of ``trial``'s sampled values: ``["optimizer.lr=0.0031", ...]``."""
        return [f"{p.key}={_override_value(p.suggest(trial))}" for p in self.params]

    def corner_overrides(self) -> list[list[str]]:
        """A few override lists that together use every end of every range and every choice (to check they
        compose before any trial runs)."""
        corners = [p.corners() for p in self.params]
        return [
            [
                f"{p.key}={_override_value(values[min(i, len(values) - 1)])}"
                for p, values in zip(self.params, corners, strict=True)
            ]
            for i in range(max(map(len, corners)))
        ]

    def to_json(self) -> str:
        """The space as sorted JSON: what a stored study is compared with."""
        return json.dumps([asdict(p) for p in self.params], sort_keys=True)

    def keys(self) -> list[str]:
        return [p.key for p in self.params]


def _leaves(node: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    leaves = []
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and "type" not in value:
            leaves.extend(_leaves(value, name))
        else:
            leaves.append((name, value))
    return leaves


def _read_param(key: str, spec: Any) -> Param:
    where = f"{PREFIX}.{key}"
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{where}={spec!r}: give a mapping, e.g. {{type: float, low: 1e-4, high: 1e-2, log: true}} "
            "or {type: categorical, choices: [adam, adagrad]}"
        )
    kind = spec.get("type")
    if kind not in KINDS:
        raise ConfigError(f"{where}.type={kind}: must be one of: {', '.join(KINDS)}")
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]} for type {kind}; the keys are: {', '.join(sorted(allowed))}"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list | tuple) or not choices:
            raise ConfigError(f"{where}.choices: give a non-empty list")
        return Param(key, kind, choices=tuple(choices))
    low, high = spec.get("low"), spec.get("high")
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}.{name}={value!r}: must be a number")
    if kind == "int" and not all(float(v).is_integer() for v in (low, high)):
        raise ConfigError(f"{where}: low={low} and high={high} must be integers for type int")
    if low > high:
        raise ConfigError(f"{where}: low={low} > high={high}")
    log, step = bool(spec.get("log", False)), spec.get("step")
    if log and low <= 0:
        raise ConfigError(f"{where}: low={low} must be > 0 with log: true")
    if step is not None and (log or isinstance(step, bool) or not isinstance(step, int | float) or step <= 0):
        raise ConfigError(f"{where}.step={step!r}: must be a number > 0, and without log: true")
    return Param(key, kind, float(low), float(high), log, None if step is None else float(step))


def _override_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back: strings quoted when they would not parse as words."""
    if isinstance(value, str):
        return value if value.replace("_", "").replace("-", "").isalnum() else json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value) if isinstance(value, list | tuple | bool) or value is None else str(value)
