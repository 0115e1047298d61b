"""What ``trainer.train_metrics=[auc]`` costs the training loop, side by side with a run without it, in one process.

Each repeat trains the default model (DeepFM, batch 1024, ``optimizer=adam``) on the synthetic data for
``--steps`` steps with ``easyrec.run.train`` (the code path of ``easyrec train``; evaluation only at the end),
once without and once with ``trainer.train_metrics=[auc]`` (which of the two goes first alternates between
repeats, so that a slow phase of a shared machine hits both alike), with the default
``trainer.log_every_n_steps=50``: the AUC is computed over the 51,200 rows of each logging window. It reads
``train/loop_samples_per_s`` (rows per second of the training loop, evaluation excluded; logging and the train
metrics included) from each run's ``metrics.json`` and prints every pair, the median of the per-pair ratios
(with / without) and the ratio of the medians. On a loaded machine the two runs of a pair can differ by more than
the cost itself, so it also times, in the runs with the metrics, the metrics' own work (``TrainingMetrics.add`` in
the loop and ``close`` at each log) and prints its share of the loop's time: the cost without the noise of two
runs. It exits with status 1 if the median ratio is below ``1 - MAX_COST``.

Run from the repository root (about 3 minutes on 2 idle CPU cores)::

    python benchmarks/train_metrics.py
    python benchmarks/train_metrics.py --repeats 7 --steps 300 trainer.num_threads=2   # extra args: overrides
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from easyrec.metrics import TrainingMetrics
from easyrec.run import train

#: The most the running training metrics may take from the loop's samples/s (issue 20: under 3%).
MAX_COST = 0.03
WITH = "trainer.train_metrics=[auc]"


class Timed:
    """Seconds spent in :class:`TrainingMetrics`'s ``add`` and ``close`` while it is installed (``with``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.originals = {name: getattr(TrainingMetrics, name) for name in ("add", "close")}

    def __enter__(self) -> Timed:
        for name, method in self.originals.items():
            setattr(TrainingMetrics, name, self._timed(method))
        return self

    def __exit__(self, *_: object) -> None:
        for name, method in self.originals.items():
            setattr(TrainingMetrics, name, method)

    def _timed(self, method):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def run(overrides: list[str], directory: Path) -> tuple[float, float]:
    """``(train/loop_samples_per_s, share of the loop's seconds spent in TrainingMetrics)`` of one ``easyrec
    train`` run with ``overrides`` in ``directory``."""
    with initialize_config_module(config_module="easyrec.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with contextlib.redirect_stdout(io.StringIO()), Timed() as timed:  # stdout: the run's table of final metrics
        train(cfg, directory)
    metrics = json.loads((directory / "metrics.json").read_text())
    loop_seconds = metrics["train/seconds"] - metrics["train/eval_seconds"]
    return float(metrics["train/loop_samples_per_s"]), timed.seconds / loop_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="pairs of runs (default 5)")
    parser.add_argument("--steps", type=int, default=150, help="training steps per run (default 150)")
    parser.add_argument("--rows", type=int, default=100_000, help="synthetic rows, train + eval (default 100,000)")
    parser.add_argument("overrides", nargs="*", help="easyrec train overrides for every run")
    args = parser.parse_args()
    logging.getLogger("easyrec").setLevel(logging.WARNING)
    base = [
        "logger=none",
        "trainer.progress_bar=false",
        "trainer.max_epochs=0",
        f"trainer.max_steps={args.steps}",
        f"trainer.eval_every_n_steps={10 * args.steps}",  # only the final evaluation (outside the loop's time)
        f"data.num_rows={args.rows}",
        *args.overrides,
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{args.repeats} pairs of {args.steps}-step runs: {' '.join(base)}")
    pairs: list[tuple[float, float]] = []
    shares: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = (False, True) if repeat % 2 == 0 else (True, False)
            measured = {}
            for with_metrics in order:
                directory = Path(tmp) / f"{repeat}-{int(with_metrics)}"
                measured[with_metrics], share = run(base + ([WITH] if with_metrics else []), directory)
                if with_metrics:
                    shares.append(share)
            pairs.append((measured[False], measured[True]))
            print(
                f"repeat {repeat + 1}: without {measured[False]:,.0f} samples/s, with {measured[True]:,.0f} "
                f"samples/s, ratio {measured[True] / measured[False]:.4f}; train metrics' share of the loop "
                f"{shares[-1]:.3%}",
                flush=True,
            )
    ratios = [with_ / without for without, with_ in pairs]
    median_ratio = statistics.median(ratios)
    medians = statistics.median(w for _, w in pairs) / statistics.median(w for w, _ in pairs)
    print(
        f"train/loop_samples_per_s with / without {WITH}: median of the pairs' ratios {median_ratio:.4f} "
        f"(min {min(ratios):.4f}, max {max(ratios):.4f}); ratio of the medians {medians:.4f}; "
        f"time in the train metrics: median {statistics.median(shares):.3%} of the loop (max {max(shares):.3%})"
    )
    ok = median_ratio >= 1 - MAX_COST
    print(f"{'PASS' if ok else 'FAIL'}: the cost must stay under {MAX_COST:.0%}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
