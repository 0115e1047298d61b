"""``easyrec study-server``: what it refuses before serving (its serving is tested by the Optuna search on a Ray
cluster, tests/sweeps/test_ray_launcher.py)."""

import socket

import pytest

from easyrec.commands.study_server import serve
from easyrec.errors import ConfigError


def test_a_storage_that_is_not_a_database_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^--storage nosuch://x: NoSuchModuleError: "):
        serve("nosuch://x", "127.0.0.1", 13000)


def test_a_port_taken_by_another_server_is_refused_rather_than_shared(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^--host 127.0.0.1 --port {port}: Address already in use$"):
            serve(f"sqlite:///{tmp_path}/optuna.db", "127.0.0.1", port)
