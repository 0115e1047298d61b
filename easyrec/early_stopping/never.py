"""No early stopping."""

from __future__ import annotations

from collections.abc import Mapping

from easyrec.early_stopping.base import EarlyStopping


class NeverStop(EarlyStopping):
    """Train until the trainer's epoch or step limit."""

    def should_stop(self, metrics: Mapping[str, float], step: int) -> bool:
        return False
