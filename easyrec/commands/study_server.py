"""``easyrec study-server``: serve an Optuna study database to the trials of a search on a cluster (Optuna's gRPC
storage proxy), so that every node reaches the study at ``grpc://HOST:PORT``."""

from __future__ import annotations

import socket
import warnings
from collections.abc import Sequence

from easyrec.commands import CommandParser
from easyrec.errors import ConfigError

DESCRIPTION = """\
Serve the Optuna studies in STORAGE (a database URL; default sqlite:///optuna.db, a file in this directory) on
HOST:PORT with Optuna's gRPC storage proxy, until Ctrl-C. A search whose trials run on other machines (hydra/launcher=
ray with a cluster) reports to its study from every node when it prunes trials: give it this server,
hydra.sweeper.storage=grpc://HOST:PORT. Only this process opens the database, so an SQLite file works."""

EXAMPLES = """examples:
  easyrec study-server --host 0.0.0.0 --port 13000
  easyrec train hparams_search=optuna hydra/launcher=ray hydra.launcher.ray.init.address=auto \\
    hydra.sweeper.storage=grpc://HEAD:13000 hydra.sweeper.n_jobs=8 logger.tracking_uri=http://HEAD:5000"""


def parser() -> CommandParser:
    parser = CommandParser("easyrec study-server", DESCRIPTION, EXAMPLES)
    parser.add_argument(
        "--storage", default="sqlite:///optuna.db", help="the studies' database URL (default: %(default)s)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on; 0.0.0.0 for every node (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=13000, help="the port to listen on (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """The ``easyrec study-server`` command (arguments from ``sys.argv`` when ``argv`` is None); runs until Ctrl-C."""
    args = parser().parse_args(argv)
    if not 0 < args.port < 65536:
        parser().error(f"argument --port: {args.port}: must be a TCP port, 1 to 65535")
    serve(args.storage, args.host, args.port)


def serve(storage: str, host: str, port: int) -> None:
    """Run Optuna's gRPC storage proxy for the database ``storage`` on ``host:port`` until interrupted."""
    import optuna

    from easyrec.loggers.mlflow import absolute_uri

    url = absolute_uri(storage)
    try:
        database = optuna.storages.get_storage(url)
    except Exception as error:  # an unknown scheme, a missing driver, a file that is not a database
        raise ConfigError(f"--storage {storage}: {type(error).__name__}: {error}".splitlines()[0]) from None
    # gRPC listens with SO_REUSEPORT, so a second server on a taken port would share it: see if it is free first
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(f"--host {host} --port {port}: {error.strerror}") from None
    print(f"serving the Optuna studies in {url} at grpc://{host}:{port} (Ctrl-C to stop)", flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # Optuna >= 4.2 has it
        optuna.storages.run_grpc_proxy_server(database, host=host, port=port)
