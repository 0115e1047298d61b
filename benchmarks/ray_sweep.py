"""The wall time of one 4-job sweep with each launcher, side by side in one run: Hydra's basic launcher (the jobs
one after another in the launching process), the joblib launcher (2 processes of this machine), and
``hydra/launcher=ray`` on a Ray cluster started here on loopback (``ray start --head``, 2 CPUs), besides a private
cluster that the sweep starts itself (``hydra.launcher.ray.init.address`` null).

Every sweep is ``easyrec train -m seed=1,2,3,4`` on ``--rows`` synthetic rows, one epoch, ``trainer.num_threads=1``,
tracked by one ``mlflow server`` that the script starts; the launchers are interleaved ``--repeat`` times and the
median wall time of each command (Python start and imports included) is printed with its ratio to the basic
launcher's. Needs the ray extra (``pip install '.[ray]'``). Run from the repository root (about 4 minutes on 2
cores)::

    python benchmarks/ray_sweep.py
    python benchmarks/ray_sweep.py --rows 200000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

RAY = Path(sys.executable).parent / "ray"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], log: Path, env: dict[str, str], ready) -> subprocess.Popen:
    """``command`` in a session of its own, in ``log``'s folder (where an mlflow server keeps its artifacts, not the
    checkout), waiting (2 minutes at most) until ``ready()``."""
    process = subprocess.Popen(
        command, cwd=log.parent, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    for _ in range(240):
        if ready():
            return process
        if process.poll() is not None:
            sys.exit(f"{command[0]} ended: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    sys.exit(f"{command[0]} did not start in 2 minutes: {log.read_text()[-2000:]}")


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1)
        return True
    except OSError:
        return False


def sweep(launcher: list[str], rows: int, tracking_uri: str, env: dict[str, str], cwd: Path) -> float:
    """The wall time of one ``easyrec train -m seed=1,2,3,4`` with ``launcher``'s overrides."""
    command = [sys.executable, "-m", "easyrec", "train", "-m", *launcher, "seed=1,2,3,4", f"data.num_rows={rows}"]
    command += ["trainer.max_epochs=1", "trainer.num_threads=1", "trainer.progress_bar=false"]
    command += [f"logger.tracking_uri={tracking_uri}", f"hydra.sweep.dir={cwd}/sweep-{time.monotonic_ns()}"]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(launcher)}: exit {done.returncode}: {done.stderr[-2000:]}")
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="synthetic rows per job (90%% train)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every launcher, interleaved")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ray-bench-", dir="/tmp"))  # short: Ray's sockets live under it
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port, tracker_port = free_port(), free_port()
    head_log = work / "head.log"
    head = start(
        [str(RAY), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2"]
        + ["--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={work}"],
        head_log,
        env,
        lambda: "block forever" in head_log.read_text(),
    )
    url = f"http://127.0.0.1:{tracker_port}"
    server = start(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(tracker_port)]
        + ["--workers", "1", "--backend-store-uri", f"sqlite:///{work}/mlflow.db"],
        work / "mlflow.log",
        env,
        lambda: answers(f"{url}/health"),
    )
    launchers = {
        "basic": [],
        "joblib, 2 processes": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        "ray, the cluster": ["hydra/launcher=ray", f"hydra.launcher.ray.init.address=127.0.0.1:{port}"],
        "ray, a private cluster": ["hydra/launcher=ray"],
    }
    times: dict[str, list[float]] = {name: [] for name in launchers}
    try:
        for _ in range(args.repeat):
            for name, overrides in launchers.items():
                times[name].append(sweep(overrides, args.rows, url, env, work))
                print(f"{name}: {times[name][-1]:.1f} s", file=sys.stderr, flush=True)
    finally:
        for process in (server, head):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(work, ignore_errors=True)
    basic = statistics.median(times["basic"])
    print(f"4-job sweep, {args.rows} rows per job, 1 epoch, 1 thread per job, median of {args.repeat}:")
    print(f"{'launcher':<24} {'seconds':>8} {'vs basic':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<24} {median:>8.1f} {median / basic:>8.2f}x")


if __name__ == "__main__":
    main()
