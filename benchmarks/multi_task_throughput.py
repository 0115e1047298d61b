"""Train-loop throughput of DeepFM, MMoE and PLE on the multi-task synthetic data, side by side in one run.

Each model trains with ``easyrec train experiment=multi_task model=<model>`` (click and conversion labels, the
multi-task loss; DeepFM with one logit per task) on ``--rows`` synthetic rows for one epoch, ``logger=none``, one
process at a time, the models interleaved ``--repeat`` times. It prints, per model, the median
``train/loop_samples_per_s`` (the training loop without evaluation, from the run's ``metrics.json``) and its ratio to
DeepFM's. With ``--before DIR`` (a checkout of another commit, e.g. ``git worktree add ../before main``) the models
of ``--before-models`` also run from that checkout's sources (``PYTHONPATH=DIR``), in the same rounds, as
``<model>@before``: a refactor's speed-up measured beside its baseline on the same busy or quiet machine.

Run from the repository root (about 4 minutes on 2 quiet CPU cores)::

    python benchmarks/multi_task_throughput.py
    python benchmarks/multi_task_throughput.py --rows 200000 --repeat 3 --before ../before
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def samples_per_s(model: str, rows: int, threads: int, source: Path | None) -> float:
    """One ``easyrec train`` of ``model`` (from ``source``'s sources if given): its ``train/loop_samples_per_s``."""
    with tempfile.TemporaryDirectory() as run_dir:
        command = [
            sys.executable,
            "-m",
            "easyrec",
            "train",
            "experiment=multi_task",
            f"model={model}",
            f"data.num_rows={rows}",
            "trainer.max_epochs=1",
            f"trainer.num_threads={threads}",
            "logger=none",
            f"hydra.run.dir={run_dir}",
        ]
        env = os.environ | ({"PYTHONPATH": str(source.resolve())} if source is not None else {})
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return float(json.loads((Path(run_dir) / "metrics.json").read_text())["train/loop_samples_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="deepfm,mmoe,ple", help="comma-separated; the first is the baseline")
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic rows (90%% train)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every model, interleaved")
    parser.add_argument("--threads", type=int, default=2, help="trainer.num_threads")
    parser.add_argument("--before", type=Path, default=None, help="a checkout to run --before-models from too")
    parser.add_argument("--before-models", default="ple", help="comma-separated models to run from --before")
    args = parser.parse_args()
    jobs = [(model, None) for model in args.models.split(",")]
    if args.before is not None:
        jobs += [(model, args.before) for model in args.before_models.split(",")]
    results: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for model, source in jobs:
            name = model if source is None else f"{model}@before"
            results.setdefault(name, []).append(samples_per_s(model, args.rows, args.threads, source))
            print(f"{name}: {results[name][-1]:,.0f} samples/s", file=sys.stderr, flush=True)
    baseline = statistics.median(results[jobs[0][0]])
    print(f"| model | train-loop samples/s (median of {args.repeat}) | vs {jobs[0][0]} |")
    print("|---|---|---|")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:,.0f} | {median / baseline:.2f}x |")


if __name__ == "__main__":
    main()
