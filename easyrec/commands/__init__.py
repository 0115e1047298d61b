"""The commands that use a trained run's checkpoint: ``easyrec evaluate``, ``easyrec predict``, ``easyrec export``.

They are argparse front-ends, not Hydra apps: their config is the one inside the checkpoint (changed with
``key=value`` overrides). Only the standard library is imported here, so ``--help`` answers fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import BinaryIO, NoReturn

from easyrec.errors import OutputError


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, ``easyrec <command>: error: ...``, exit code 2; its help
    shows ``description`` and ``examples`` as written."""

    def __init__(self, prog: str, description: str, examples: str) -> None:
        super().__init__(
            prog=prog, description=description, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter
        )

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def checkpoint_parser(prog: str, description: str, examples: str, overrides_example: str) -> CommandParser:
    """The arguments every checkpoint command takes: ``PATH``, ``KEY=VALUE`` overrides, ``--checkpoint`` and
    ``--overwrite``; the command adds its own."""
    parser = CommandParser(prog, description, examples)
    parser.add_argument("path", metavar="PATH", help="a checkpoint file (.pt) or a run directory")
    parser.add_argument(
        "overrides",
        metavar="KEY=VALUE",
        nargs="*",
        default=[],
        help=f"changes to the run's config, e.g. {overrides_example}",
    )
    parser.add_argument(
        "--checkpoint",
        choices=["best", "latest"],
        default="best",
        help="which checkpoint of a run directory: best.pt (default; the latest if there is none) or the latest",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--trust-target",
        action="append",
        default=[],
        metavar="NAME",
        help="a module or callable the checkpoint's config may build besides easyrec's own components (your own "
        "model, say: --trust-target my_models); repeatable; also EASYREC_TRUSTED_TARGETS=NAME,NAME",
    )
    return parser


def refuse_existing(path: Path, overwrite: bool, kind: str = "file") -> None:
    """OutputError when ``path`` exists and ``overwrite`` is false, or when it is something ``--overwrite`` may not
    replace: a symbolic link (writing through it would change the file it points to), or anything but a regular
    file (``kind="file"``) or a directory (``kind="directory"``): a device, a pipe, a directory for a file."""
    if path.is_symlink():
        raise OutputError(f"{path}: is a symbolic link; easyrec does not write through links, give the real path")
    if not path.exists():
        return
    if not (path.is_file() if kind == "file" else path.is_dir()):
        raise OutputError(f"{path}: already exists and is not a {'regular file' if kind == 'file' else kind}")
    if not overwrite:
        raise OutputError(f"{path}: already exists; pass --overwrite to replace it")


def open_partial(path: Path) -> tuple[Path, BinaryIO]:
    """``<path>.partial`` and that file open for writing, new and empty: created by this call (an old one, or a link
    planted under that name, is removed first, never written through)."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return partial, os.fdopen(os.open(partial, flags, 0o644), "wb")


def free_name(path: Path) -> Path:
    """``path``, or the first of ``<stem>-2<suffix>``, ``<stem>-3<suffix>``, ... that does not exist."""
    number = 2
    found = path
    while found.exists():
        found = path.with_name(f"{path.stem}-{number}{path.suffix}")
        number += 1
    return found
