"""What every early-stopping rule offers the trainer."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Literal

from easyrec.errors import ConfigError


class EarlyStopping:
    """Decides whether training should stop, and says why.

    The trainer calls :meth:`check_metrics` once with the names its evaluation returns, :meth:`after_step`
    after every optimizer step and :meth:`should_stop` after every evaluation; once either returns True it
    logs :attr:`reason` and ends the run. Rules know nothing of the trainer and work from plain Python. State
    that must survive a resume goes in :meth:`state_dict`, as plain Python types (checkpoints are read with
    ``torch.load(weights_only=True)``), so that a resumed run stops where an uninterrupted one would.
    """

    #: A short name for logs and for :class:`~easyrec.early_stopping.AnyOf`'s reasons: ``"patience"``, ...
    name: str = "early_stopping"
    #: Why training stopped (one sentence), once :meth:`should_stop` or :meth:`after_step` returned True.
    reason: str | None = None

    def check_metrics(self, names: Collection[str]) -> None:
        """Raise a :class:`~easyrec.errors.ConfigError` if the rule needs a metric not among ``names``."""

    def should_stop(self, metrics: Mapping[str, float], step: int) -> bool:
        """Called with the eval metrics (``{"eval/auc": ...}``) of the evaluation at ``step``."""
        return False

    def after_step(self, step: int, train: Mapping[str, float] | None) -> bool:
        """Called after every optimizer step, so it must be cheap.

        Args:
            step: optimizer steps done so far (1 after the first).
            train: on logging steps the logging window's metrics (``{"train/loss": ..., "train/grad_norm": ...}``),
                otherwise None.
        """
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def require_metric(key: str, metric: str, names: Collection[str], kind: str = "metric") -> None:
    """Refuse ``early_stopping.<key>=<metric>`` when ``metric`` is not among ``names``, listing those that are."""
    if metric not in names:
        raise ConfigError(f"early_stopping.{key}={metric}: no such {kind}; the {kind}s are: {', '.join(sorted(names))}")


Mode = Literal["max", "min"]
