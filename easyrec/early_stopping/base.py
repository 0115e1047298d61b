"""What every early-stopping rule offers the trainer."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any


class EarlyStopping:
    """Decides after each evaluation whether training should stop, and says why.

    Subclasses override :meth:`should_stop`; state that must survive a resume goes in ``state_dict``.
    """

    #: Why training stopped, once :meth:`should_stop` has returned True.
    reason: str | None = None

    def check_metrics(self, names: Collection[str]) -> None:
        """Raise a :class:`~easyrec.errors.ConfigError` if the rule needs a metric not among ``names``."""

    def should_stop(self, metrics: Mapping[str, float], step: int) -> bool:
        """Called with the eval metrics (``{"eval/auc": ...}``) of the evaluation at ``step``."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
