"""The ``easyrec`` command: dispatches ``easyrec <command> [args]`` to the command's app: a Hydra app
(``train``) or an argparse front-end (``evaluate``, ``predict``, ``export``: their config comes from a checkpoint;
``compare``, ``sync``: MLflow runs; ``generate``: a synthetic data set; ``study-server``: an Optuna study for a
search on a cluster).
Each app reads its arguments from ``sys.argv``.

User errors (a bad override, an unknown option, an impossible value, unreadable data) end with one line
on stderr and a non-zero exit code, never a traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence

from easyrec.errors import Interrupted

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module:function of the app, one-line description)
    "train": (
        "easyrec.run:entry",
        "train a model and log the run to MLflow (Hydra app: see `easyrec train --help`)",
    ),
    "evaluate": (
        "easyrec.commands.evaluate:main",
        "evaluate a checkpoint on a data set: a table, a JSON file and the run's MLflow metrics",
    ),
    "predict": (
        "easyrec.commands.predict:main",
        "predict a CSV/Parquet file with a checkpoint, in batches, into a file of predictions",
    ),
    "export": (
        "easyrec.commands.export:main",
        "export a checkpoint as TorchScript and an MLflow pyfunc model that take raw feature values",
    ),
    "generate": (
        "easyrec.commands.generate:main",
        "write a synthetic Criteo-like data set of any size as Parquet/CSV shards, with the true click probabilities",
    ),
    "compare": (
        "easyrec.commands.compare:main",
        "compare runs (a sweep's children, an experiment) in a table of differing params and metrics; --plot",
    ),
    "study-server": (
        "easyrec.commands.study_server:main",
        "serve an Optuna study database to the trials of a search on a cluster (hydra.sweeper.storage=grpc://...)",
    ),
    "sync": (
        "easyrec.commands.sync:main",
        "send a run's tracking records that MLflow did not take while it ran (tracking-pending.jsonl) to it now",
    ),
}

USAGE = """usage: easyrec <command> [args ...]

Train CTR and ranking models, configured by Hydra and tracked in MLflow; evaluate and predict with their
checkpoints, and export them for serving.

commands:
{commands}

`easyrec <command> --help` shows a command's options (for train: its config groups)."""


def _print_usage(stream=sys.stdout) -> None:
    width = max(map(len, COMMANDS))
    lines = "\n".join(f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items())
    print(USAGE.format(commands=lines), file=stream)


def _load(target: str) -> Callable[[], object]:
    module_name, func_name = target.split(":")
    module = __import__(module_name, fromlist=[func_name])
    return getattr(module, func_name)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``easyrec`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        _print_usage()
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"easyrec: unknown command '{command}'; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    app = _load(COMMANDS[command][0])
    # Hydra and argparse read their arguments from sys.argv.
    sys.argv = [f"easyrec-{command}", *rest]
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    # Let exceptions reach us, so we can report user errors as one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    # a log file on a full disk must not print a traceback per record; what fails to be written fails as one line
    raise_exceptions, logging.raiseExceptions = logging.raiseExceptions, False
    try:
        app()
    except Interrupted as error:  # SIGTERM or SIGINT, stopped with a checkpoint
        print(f"easyrec: interrupted by {error.name}", file=sys.stderr)
        sys.exit(128 + error.signal_number)
    except KeyboardInterrupt:
        print("easyrec: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        from easyrec.user_errors import describe, exit_with

        message = None if full_error else describe(error)
        if message is None:
            raise
        exit_with(command, error, message)
    finally:
        logging.raiseExceptions = raise_exceptions
