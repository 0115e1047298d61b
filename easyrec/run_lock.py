"""One run per run directory: an advisory lock (``flock``) on ``<run dir>/.easyrec.lock``, held for the run's life.

The lock belongs to the process that owns the run directory (``easyrec train``, or the launcher of a job's DDP
workers): the workers of one job share it, two jobs never do. The operating system releases it when that process
ends, however it ends (a crash, SIGKILL), so a stale lock never blocks a resume. The file is left in place: removing
it would let a process that opened it just before lock a file no one else sees.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from easyrec.errors import OutputError

LOCK_FILE = ".easyrec.lock"


@contextmanager
def hold_run_directory(directory: Path) -> Iterator[None]:
    """Lock ``directory`` (made if missing) while the block runs: OutputError naming it, and the pid holding it,
    when another process holds it; OutputError naming the cause when it cannot be written (read-only, full)."""
    path = directory / LOCK_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise OutputError.cannot_write(path, error) from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise OutputError(
                f"{directory}: in use by another easyrec run{by}; wait for it to end, or give this run a directory "
                "of its own (hydra.run.dir=...)"
            ) from None
        try:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        except OSError as error:
            raise OutputError.cannot_write(path, error) from None
        try:
            yield
        finally:
            os.ftruncate(descriptor, 0)  # no pid once the run is over
    finally:
        os.close(descriptor)  # releases the lock
