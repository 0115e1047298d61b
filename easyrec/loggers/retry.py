"""Retry MLflow calls that an SQLite store refuses with "database is locked" (parallel jobs sharing one file)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Waits before each retry grow from 0.05 s to about 3 s: about 30 s in all before the error is raised.
ATTEMPTS, FIRST_WAIT, MAX_WAIT = 15, 0.05, 3.0


def is_locked(error: BaseException) -> bool:
    """Whether ``error`` (or an error it wraps) is SQLite's "database is locked" / "database table is locked"."""
    while error is not None:
        if "is locked" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def retry_locked(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, again after a growing, jittered wait while SQLite says the database is locked.

    A locked write is rolled back whole, so trying it again neither loses nor duplicates rows."""
    wait = FIRST_WAIT
    for _ in range(ATTEMPTS - 1):
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if not is_locked(error):
                raise
            log.debug(
                "SQLite store locked (%s): trying %s again in %.2f s", error, getattr(call, "__name__", call), wait
            )
        time.sleep(wait * (0.5 + random.random()))
        wait = min(wait * 2, MAX_WAIT)
    return call(*args, **kwargs)


class LockRetryingClient:
    """An ``MlflowClient`` whose every method retries with :func:`retry_locked`."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        if name == "_client":  # not set yet: being unpickled
            raise AttributeError(name)
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def retrying(*args: Any, **kwargs: Any) -> Any:
            return retry_locked(attribute, *args, **kwargs)

        return retrying
