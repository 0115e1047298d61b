"""The commands that use a trained run's checkpoint: ``easyrec evaluate``, ``easyrec predict``, ``easyrec export``.

They are argparse front-ends, not Hydra apps: their config is the one inside the checkpoint (changed with
``key=value`` overrides). Only the standard library is imported here, so ``--help`` answers fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from easyrec.errors import OutputError


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, ``easyrec <command>: error: ...``, exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def checkpoint_parser(prog: str, description: str, examples: str, overrides_example: str) -> CommandParser:
    """The arguments every checkpoint command takes: ``PATH``, ``KEY=VALUE`` overrides, ``--checkpoint`` and
    ``--overwrite``; the command adds its own."""
    parser = CommandParser(
        prog=prog, description=description, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    return parser


def refuse_existing(path: Path, overwrite: bool) -> None:
    """OutputError when ``path`` exists and ``overwrite`` is false."""
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists; pass --overwrite to replace it")


def free_name(path: Path) -> Path:
    """``path``, or the first of ``<stem>-2<suffix>``, ``<stem>-3<suffix>``, ... that does not exist."""
    number = 2
    found = path
    while found.exists():
        found = path.with_name(f"{path.stem}-{number}{path.suffix}")
        number += 1
    return found
