"""One-line descriptions of the errors a user can cause, from Hydra, OmegaConf and easyrec."""

from __future__ import annotations

import sys
from typing import NoReturn

from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from easyrec.errors import EasyrecError


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _omegaconf_message(error: OmegaConfBaseException) -> str:
    msg = _first_line(getattr(error, "msg", None) or str(error))
    key = getattr(error, "full_key", None)
    return f"{key}: {msg}" if key and key not in msg else msg


def _os_error(error: BaseException) -> OSError | None:
    """The OSError naming a file that ``error`` is or was raised from (Hydra wraps the one of its log file)."""
    for cause in (error, error.__cause__, error.__context__):
        if isinstance(cause, OSError) and cause.filename and cause.strerror:
            return cause
    return None


def describe(error: BaseException) -> str | None:
    """The one-line message for a user error, or None when ``error`` is a bug (show the traceback)."""
    if isinstance(error, EasyrecError):
        return _first_line(str(error))
    if (os_error := _os_error(error)) is not None:  # a read-only or full disk: the file and the system's cause
        return f"{os_error.filename}: {os_error.strerror}"
    if isinstance(error, MissingConfigException):
        missing = error.missing_cfg_file or ""
        if error.options is not None and "/" in missing:
            group, _, option = missing.rpartition("/")
            return f"unknown option '{option}' for '{group}'; choose one of: {', '.join(error.options)}"
        return _first_line(str(error))
    if isinstance(error, OverrideParseException):
        return _first_line(str(error))
    if isinstance(error, HydraException):
        cause = error.__cause__
        if isinstance(cause, EasyrecError):  # a constructor's own one-line refusal (distributed=model_parallel ...)
            return _first_line(str(cause))
        if isinstance(cause, ConfigKeyError | ConfigAttributeError) and cause.full_key:
            return f"{cause.full_key}: no such key (to add a new key, write +{cause.full_key}=...)"
        if isinstance(cause, OmegaConfBaseException):
            return _omegaconf_message(cause)
        return _first_line(str(error))
    if isinstance(error, OmegaConfBaseException):
        return _omegaconf_message(error)
    return None


def exit_with(command: str, error: BaseException, message: str) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with the error's code (2 for config errors, 1 for files
    that cannot be written or read)."""
    print(f"easyrec {command}: error: {message}", file=sys.stderr)
    sys.exit(getattr(error, "exit_code", 1 if _os_error(error) else 2))
