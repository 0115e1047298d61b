"""Stop when a file appears: ``touch <run dir>/STOP`` ends a run cleanly."""

from __future__ import annotations

import os
from collections.abc import Mapping

from easyrec.config.arguments import PositiveInt, checked
from easyrec.early_stopping.base import EarlyStopping


class StopOnFile(EarlyStopping):
    """Stop once the file ``path`` exists; EasyRec's ``OSS_STOP_SIGNAL``.

    The check is one ``os.path.exists`` every ``every_n_steps`` optimizer steps. The file is left where it
    is: a run resumed with the same ``path`` stops at its first check until you delete it.

    Args:
        path: the file to watch; ``easyrec train early_stopping=stop_file`` watches ``STOP`` in the run's
            output directory.
        every_n_steps: optimizer steps between checks.

    Example::

        rule = StopOnFile("/tmp/run/STOP", every_n_steps=1)
        rule.after_step(1, None)  # False until the file exists
    """

    name = "stop_file"

    @checked
    def __init__(self, path: str | os.PathLike, every_n_steps: PositiveInt = 10):
        if not isinstance(path, str | os.PathLike) or not str(path):
            raise ValueError(f"path={path!r}: must be a file path")
        self.path, self.every_n_steps = os.fspath(path), every_n_steps

    def after_step(self, step: int, train: Mapping[str, float] | None) -> bool:
        if step % self.every_n_steps or not os.path.exists(self.path):
            return False
        self.reason = f"the stop file {self.path} exists (seen at step {step})"
        return True
