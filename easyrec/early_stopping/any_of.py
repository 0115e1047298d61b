"""Several rules at once: stop when any of them says so."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from easyrec.early_stopping.base import EarlyStopping
from easyrec.errors import ConfigError


class AnyOf(EarlyStopping):
    """Stop as soon as one of ``rules`` stops; the reason names that rule: ``"stop_file: the stop file ..."``.

    Every rule sees every step and evaluation (also after another one stopped, so that each state stays
    whole). Errors a rule raises while running name its key: ``early_stopping.rules.<label>.monitor=...``.

    Args:
        rules: a dict ``{label: rule}``, or a list of rules, labelled by their :attr:`name`
            (``patience``, ``patience_2``, ... when a name repeats).

    Example::

        rule = AnyOf({"patience": StopOnPlateau(patience=3), "deadline": StopAtDeadline(after="2h")})
    """

    name = "any_of"

    def __init__(self, rules: Mapping[str, EarlyStopping] | Sequence[EarlyStopping]):
        if isinstance(rules, Mapping):
            labelled = [(str(label), rule) for label, rule in rules.items()]
        elif isinstance(rules, Sequence) and not isinstance(rules, str):
            labelled, seen = [], {}
            for rule in rules:
                name = getattr(rule, "name", type(rule).__name__)
                seen[name] = seen.get(name, 0) + 1
                labelled.append((name if seen[name] == 1 else f"{name}_{seen[name]}", rule))
        else:
            raise ConfigError(f"early_stopping.rules={rules!r}: must be a list or a dict of early-stopping rules")
        if not labelled:
            raise ConfigError("early_stopping.rules: empty; give at least one rule")
        for label, rule in labelled:
            if not isinstance(rule, EarlyStopping):
                raise ConfigError(
                    f"early_stopping.rules.{label}={rule!r}: not an early-stopping rule (give it a _target_ such as "
                    "easyrec.early_stopping.StopOnPlateau)"
                )
        self.rules: dict[str, EarlyStopping] = dict(labelled)
        #: The label of the rule that stopped training.
        self.stopped_by: str | None = None

    @contextlib.contextmanager
    def _keys_of(self, label: str) -> Iterator[None]:
        """Make a rule's ``early_stopping.<key>`` errors name ``early_stopping.rules.<label>.<key>``."""
        try:
            yield
        except ConfigError as error:
            message = str(error)
            if message.startswith("early_stopping."):
                message = f"early_stopping.rules.{label}." + message.removeprefix("early_stopping.")
            raise ConfigError(message) from None

    def _first(self, stops: dict[str, bool]) -> bool:
        for label, stop in stops.items():
            if stop:
                self.stopped_by = label
                self.reason = f"{label}: {self.rules[label].reason or 'stop'}"
                return True
        return False

    def check_metrics(self, names: Collection[str]) -> None:
        for label, rule in self.rules.items():
            with self._keys_of(label):
                rule.check_metrics(names)

    def should_stop(self, metrics: Mapping[str, float], step: int) -> bool:
        stops = {}
        for label, rule in self.rules.items():
            with self._keys_of(label):
                stops[label] = rule.should_stop(metrics, step)
        return self._first(stops)

    def after_step(self, step: int, train: Mapping[str, float] | None) -> bool:
        stops = {}
        for label, rule in self.rules.items():
            with self._keys_of(label):
                stops[label] = rule.after_step(step, train)
        return self._first(stops)

    def state_dict(self) -> dict[str, Any]:
        return {label: rule.state_dict() for label, rule in self.rules.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore each rule found in ``state``; a rule absent from it (added since) starts afresh."""
        for label, rule in self.rules.items():
            if label in state:
                rule.load_state_dict(state[label])
