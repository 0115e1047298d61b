"""No early stopping."""

from __future__ import annotations

from easyrec.early_stopping.base import EarlyStopping


class NeverStop(EarlyStopping):
    """Train until the trainer's epoch or step limit."""

    name = "none"
