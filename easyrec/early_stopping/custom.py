"""Stop when a function of your own says so."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from easyrec.early_stopping.base import EarlyStopping
from easyrec.errors import ConfigError

History = dict[int, dict[str, float]]


class CustomStop(EarlyStopping):
    """After each evaluation, call ``fn(history, **params)`` and stop when it returns True.

    EasyRec's ``export_config.early_stop_func``. ``history`` holds every evaluation so far,
    ``{step: {metric: value}}`` ordered by step (a copy: changing it changes nothing). ``fn`` returns a bool,
    or ``(bool, reason)`` to say why in the run's stop reason. The history is part of :meth:`state_dict`, so
    a resumed run passes ``fn`` the same history as an uninterrupted one.

    Args:
        fn: a callable, or its dotted path (``"my_package.stops.auc_flat"``).
        params: keyword arguments for ``fn`` after ``history``.

    Example::

        rule = CustomStop("easyrec.early_stopping.examples.metric_above", {"metric": "eval/auc", "threshold": 0.8})
        rule.should_stop({"eval/auc": 0.81}, step=100)  # True
    """

    name = "custom"
    #: Parameters naming code (a dotted path): a config read from a file may name only trusted code there.
    code_parameters = ("fn",)

    def __init__(self, fn: str | Callable[..., Any], params: Mapping[str, Any] | None = None):
        self.fn = resolve(fn) if isinstance(fn, str) else fn
        if not callable(self.fn):
            raise ConfigError(f"early_stopping.fn={fn!r}: must be a callable or the dotted path of one")
        if params is not None and not isinstance(params, Mapping):
            raise ConfigError(f"early_stopping.params={params!r}: must be a mapping of keyword arguments for fn")
        self.params: dict[str, Any] = plain(params or {})
        self.label = fn if isinstance(fn, str) else getattr(fn, "__qualname__", repr(fn))
        try:
            signature = inspect.signature(self.fn)
        except (TypeError, ValueError):  # some builtins have none; the first call will tell
            signature = None
        if signature is not None:
            try:
                signature.bind({}, **self.params)
            except TypeError as error:
                raise ConfigError(
                    f"early_stopping.params={self.params}: {self.label}{signature} cannot take "
                    f"(history, **params): {error}"
                ) from None
        self.history: History = {}

    def should_stop(self, metrics: Mapping[str, float], step: int) -> bool:
        self.history[step] = {name: float(value) for name, value in metrics.items()}
        history = {s: dict(self.history[s]) for s in sorted(self.history)}
        result = self.fn(history, **self.params)
        stop, why = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
        if type(stop).__name__ not in ("bool", "bool_"):  # numpy's bools too
            raise ConfigError(
                f"early_stopping.fn={self.label}: returned {result!r}; it must return a bool or (bool, reason)"
            )
        if stop:
            self.reason = str(why) if why else f"{self.label}(history, **{self.params}) returned True at step {step}"
        return bool(stop)

    def state_dict(self) -> dict[str, Any]:
        return {"history": {step: dict(metrics) for step, metrics in self.history.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history = {int(step): dict(metrics) for step, metrics in sorted(state["history"].items())}


def resolve(path: str) -> Callable[..., Any]:
    """The object a dotted path names (``package.module.function`` or ``package.module.Class.method``)."""
    parts = path.split(".")
    module, depth = None, len(parts) - 1
    while depth > 0 and module is None:
        name = ".".join(parts[:depth])
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name is None or not (name == error.name or name.startswith(error.name + ".")):
                raise ConfigError(f"early_stopping.fn={path}: importing {name} failed: {error}") from None
            depth -= 1
        except Exception as error:  # the user's module is broken: say so in one line
            raise ConfigError(
                f"early_stopping.fn={path}: importing {name} failed: {type(error).__name__}: {error}"
            ) from None
    if module is None:
        raise ConfigError(f"early_stopping.fn={path}: cannot import it; give the dotted path of a function")
    found: Any = module
    for i in range(depth, len(parts)):
        if not hasattr(found, parts[i]):
            raise ConfigError(f"early_stopping.fn={path}: {'.'.join(parts[:i])} has no attribute {parts[i]}")
        found = getattr(found, parts[i])
    return found


def plain(value: Any) -> Any:
    """Mappings and sequences (an OmegaConf node too) as dicts and lists, so that ``fn`` gets plain Python."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(item) for item in value]
    return value
